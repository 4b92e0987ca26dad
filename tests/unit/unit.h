/* A very small test framework: checks that count failures and say where. */
#pragma once

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "config.h"

static int unit_checks, unit_failures;

#define CHECK_AT(cond, file, line, ...)                                         \
        do {                                                                    \
                unit_checks++;                                                  \
                if (!(cond)) {                                                  \
                        unit_failures++;                                        \
                        fprintf(stderr, "%s:%d: check failed: ", file, line);  \
                        fprintf(stderr, __VA_ARGS__);                           \
                        fputc('\n', stderr);                                    \
                }                                                               \
        } while (0)

#define CHECK(cond) CHECK_AT(cond, __FILE__, __LINE__, "%s", #cond)

#define CHECK_INT(got, want, what)                                                               \
        CHECK_AT((int64_t) (got) == (int64_t) (want), __FILE__, __LINE__, "%s: got %" PRId64 ", want %" PRId64, \
                 what, (int64_t) (got), (int64_t) (want))

#define CHECK_STR(got, want, what)                                                                 \
        CHECK_AT((got) && strcmp((got), (want)) == 0, __FILE__, __LINE__, "%s: got \"%s\", want \"%s\"", \
                 what, (got) ? (got) : "(null)", (want))

static inline int unit_finish(const char *name) {
        printf("%s: %d checks, %d failed\n", name, unit_checks, unit_failures);
        return unit_failures ? 1 : 0;
}

/* A configuration from YAML text, or NULL after a failed check that shows
 * the diagnostics. */
static inline struct config *unit_config(const char *name, const char *yaml) {
        struct diagnostics diag = {};
        struct config *c = NULL;
        int r = config_load_buffer(name, yaml, strlen(yaml), &c, &diag);

        for (size_t i = 0; i < diag.n_lines; i++)
                if (r < 0)
                        fprintf(stderr, "%s\n", diag.lines[i]);
        diagnostics_clear(&diag);
        CHECK_AT(r == 0 && c, __FILE__, __LINE__, "config did not load:\n%s", yaml);
        return c;
}
