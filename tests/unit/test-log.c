/* How a decision line compares elapsed time with the limit: the line must be
 * true, and limits are reached at >=. */
#include "log.h"
#include "unit.h"

static void check(int64_t elapsed_ms, int64_t limit_ms, const char *want_elapsed, const char *want_op) {
        char elapsed[DURATION_FORMAT_MAX];
        const char *op = log_limit_comparison(elapsed_ms, limit_ms, elapsed);
        char what[64];

        snprintf(what, sizeof(what), "%" PRId64 "ms vs %" PRId64 "ms", elapsed_ms, limit_ms);
        CHECK_STR(op, want_op, what);
        const char *shown = elapsed;
        CHECK_STR(shown, want_elapsed, what);
}

int main(void) {
        /* equal: "4s > 4s" would be false */
        check(4000, 4000, "4s", ">=");
        check(1800000, 1800000, "30m", ">=");
        check(500, 500, "500ms", ">=");
        /* longer, and the usual format already shows it */
        check(4001, 4000, "4.001s", ">");
        check(4500, 4000, "4.5s", ">");
        check(1872000, 1800000, "31m12s", ">");
        check(1860000, 1800000, "31m", ">");
        /* longer, but the usual format (no milliseconds above a minute) would print it equal */
        check(1800400, 1800000, "30m400ms", ">");
        check(1800999, 1800000, "30m999ms", ">");
        check(3600001, 3600000, "1h1ms", ">");
        check(60500, 60000, "1m500ms", ">");
        /* shorter never happens for a decision; if it did, the line says so */
        check(3999, 4000, "3.999s", "<");
        return unit_finish("test-log");
}
