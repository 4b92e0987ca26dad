#include <errno.h>

#include "duration.h"
#include "unit.h"

static const struct {
        const char *in;
        int64_t ms;
} valid[] = {
        { "1ms", 1 },
        { "250ms", 250 },
        { "1s", 1000 },
        { "30s", 30000 },
        { "5m", 300000 },
        { "5min", 300000 },
        { "2h", 7200000 },
        { "1d", 86400000 },
        { "1h30m", 5400000 },
        { "1m30s", 90000 },
        { "1d2h3m4s5ms", 93784005 },
        { "90s", 90000 },
        { "0s", 0 },
        { "+5s", 5000 },
        { "3650d", INT64_C(3650) * 86400000 },
};

static const struct {
        const char *in;
        const char *error_part;
} invalid[] = {
        { "30", "needs a unit" },
        { "", "empty duration" },
        { "-1s", "negative" },
        { "5 minutes", "no spaces" },
        { "5minutes", "spelled-out" },
        { "5sec", "spelled-out" },
        { "10x", "unknown unit" },
        { "1h30", "last number" },
        { "1.5h", "fractions" },
        { "s", "expected a number" },
        { "1s ", "trailing space" },
        { "3651d", "too large" },
        { "+", "\"+\" alone is not a duration" },
        { "+30", "needs a unit" },
        { "+-1s", "expected a number" },
        { "99999999999999999999s", "too large" },
};

static const struct {
        int64_t ms;
        const char *out;
} formats[] = {
        { 0, "0ms" },
        { 850, "850ms" },
        { 1000, "1s" },
        { 1500, "1.5s" },
        { 2250, "2.25s" },
        { 5001, "5.001s" },
        { 59999, "59.999s" },
        { 60000, "1m" },
        { 1872000, "31m12s" },
        { 1872999, "31m12s" },
        { 3600000, "1h" },
        { 5400000, "1h30m" },
        { 93784005, "1d2h3m4s" },
        { -1500, "-1.5s" },
};

int main(void) {
        char buf[DURATION_FORMAT_MAX];

        for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
                const char *err = NULL;
                int64_t ms = -1;
                int r = duration_parse(valid[i].in, &ms, &err);
                CHECK_INT(r, 0, valid[i].in);
                CHECK_INT(ms, valid[i].ms, valid[i].in);
        }
        for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
                const char *err = NULL;
                int64_t ms = -1;
                int r = duration_parse(invalid[i].in, &ms, &err);
                CHECK_INT(r, -EINVAL, invalid[i].in);
                CHECK_AT(err && strstr(err, invalid[i].error_part), __FILE__, __LINE__,
                         "\"%.20s\": message \"%s\" lacks \"%s\"", invalid[i].in, err ? err : "(null)",
                         invalid[i].error_part);
                CHECK_INT(ms, -1, "output untouched on error");
        }
        {
                /* Many small parts that add up past the maximum. */
                char many[4001];
                const char *err = NULL;
                int64_t ms = -1;
                for (size_t i = 0; i < 2000; i++)
                        memcpy(many + 2 * i, "9d", 2);
                many[4000] = '\0';
                CHECK_INT(duration_parse(many, &ms, &err), -EINVAL, "sum past the maximum");
                CHECK(err && strstr(err, "too large"));
        }
        for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
                CHECK_STR(duration_format(formats[i].ms, buf, sizeof(buf)), formats[i].out, "format");

        /* Round trip: what we print for a whole-unit limit parses back to itself. */
        for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
                const char *err;
                int64_t back = -1;
                if (valid[i].ms % 1000)
                        continue;
                duration_format(valid[i].ms, buf, sizeof(buf));
                CHECK_INT(duration_parse(buf, &back, &err), 0, buf);
                CHECK_INT(back, valid[i].ms, buf);
        }
        return unit_finish("test-duration");
}
