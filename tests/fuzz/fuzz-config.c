/* libFuzzer entry point for the configuration parser. Besides "no crash, no
 * leak", a file that loads must dump to text that loads to the same dump.
 *
 *   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
 *   ninja -C build-fuzz tests/fuzz-config
 *   mkdir -p /tmp/fuzz-work && build-fuzz/tests/fuzz-config -max_len=4096 \
 *           -dict=tests/fuzz/config.dict -max_total_time=600 /tmp/fuzz-work tests/fuzz/corpus
 *
 * Add every crash reproducer to tests/fuzz/corpus: plain test runs replay it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *dump_text(const struct config *c, size_t *len) {
        char *text = NULL;
        FILE *f = open_memstream(&text, len);

        if (!f)
                abort();
        config_dump(c, f);
        fclose(f);
        return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct diagnostics d = {};
        struct config *c = NULL, *again = NULL;
        char *first, *second;
        size_t first_len, second_len;

        if (size > 64 * 1024)
                return 0;
        if (config_load_buffer("fuzz.yaml", (const char *) data, size, &c, &d) < 0) {
                if (c || d.n_errors == 0)
                        abort();  /* a failed load returns nothing and says why */
                diagnostics_clear(&d);
                return 0;
        }
        diagnostics_clear(&d);
        first = dump_text(c, &first_len);
        if (config_load_buffer("dump.yaml", first, first_len, &again, &d) < 0) {
                for (size_t i = 0; i < d.n_lines; i++)
                        fprintf(stderr, "%s\n", d.lines[i]);
                fprintf(stderr, "--- dump that does not load:\n%s", first);
                abort();
        }
        second = dump_text(again, &second_len);
        if (first_len != second_len || memcmp(first, second, first_len) != 0) {
                fprintf(stderr, "--- first dump:\n%s--- second dump:\n%s", first, second);
                abort();
        }
        free(first);
        free(second);
        diagnostics_clear(&d);
        config_free(c);
        config_free(again);
        return 0;
}
