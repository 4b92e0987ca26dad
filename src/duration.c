#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "duration.h"
#include "macro.h"

static const struct {
        const char *name;
        int64_t ms;
} units[] = {
        /* longest first where one is a prefix of another */
        { "ms",  1 },
        { "min", 60 * 1000 },
        { "s",   1000 },
        { "m",   60 * 1000 },
        { "h",   3600 * 1000 },
        { "d",   24 * 3600 * 1000 },
};

/* Words people write that we do not accept, with the unit they meant. */
static const char *const spelled_out[] = {
        "sec", "secs", "second", "seconds", "mins", "minute", "minutes",
        "hr", "hrs", "hour", "hours", "day", "days", "msec", "msecs", "millisecond",
        "milliseconds", "us", "usec", "w", "week", "weeks",
};

/* Spaces inside ("5 minutes", "1h 30m") or after a duration. */
static int space_error(const char *p, const char **ret_error) {
        while (isspace((unsigned char) *p))
                p++;
        *ret_error = *p ? "no spaces in durations: write \"5m\" or \"1h30m\"" : "trailing space in duration";
        return -EINVAL;
}

int duration_parse(const char *s, int64_t *ret_ms, const char **ret_error) {
        int64_t total = 0;
        const char *p = s, *first;

        if (!s || !*s) {
                *ret_error = "empty duration; write a number with a unit, e.g. \"30s\"";
                return -EINVAL;
        }
        if (*p == '-') {
                *ret_error = "durations cannot be negative";
                return -EINVAL;
        }
        if (*p == '+' && !*++p) {
                *ret_error = "\"+\" alone is not a duration; write a number with a unit, e.g. \"30s\"";
                return -EINVAL;
        }
        first = p;

        while (*p) {
                int64_t n = 0;
                const char *digits = p;
                size_t unit_len = 0;
                size_t i;

                if (isspace((unsigned char) *p))
                        return space_error(p, ret_error);
                while (isdigit((unsigned char) *p)) {
                        if (n > (INT64_MAX - 9) / 10) {
                                *ret_error = "duration is too large (at most 3650d)";
                                return -EINVAL;
                        }
                        n = n * 10 + (*p - '0');
                        p++;
                }
                if (p == digits) {
                        *ret_error = "expected a number in duration, e.g. \"30s\" or \"1h30m\"";
                        return -EINVAL;
                }
                if (*p == '.') {
                        *ret_error = "fractions are not accepted in durations; use a smaller unit (\"1500ms\", \"90s\")";
                        return -EINVAL;
                }
                if (*p == '\0') {
                        *ret_error = digits == first ?
                                "a duration needs a unit (ms, s, m, h, d), e.g. \"30s\"" :
                                "the last number in the duration has no unit (ms, s, m, h, d)";
                        return -EINVAL;
                }
                if (isspace((unsigned char) *p))
                        return space_error(p, ret_error);
                while (isalpha((unsigned char) p[unit_len]))
                        unit_len++;
                for (i = 0; i < ELEMENTSOF(units); i++)
                        if (strlen(units[i].name) == unit_len && strncmp(p, units[i].name, unit_len) == 0)
                                break;
                if (i == ELEMENTSOF(units)) {
                        *ret_error = "unknown unit in duration; use ms, s, m (or min), h or d";
                        for (size_t k = 0; k < ELEMENTSOF(spelled_out); k++)
                                if (strlen(spelled_out[k]) == unit_len &&
                                    strncasecmp(p, spelled_out[k], unit_len) == 0)
                                        *ret_error = "spelled-out units are not accepted; use ms, s, m (or min), h or d, e.g. \"5m\"";
                        return -EINVAL;
                }
                if (n > DURATION_MAX_MS / units[i].ms || total > DURATION_MAX_MS - n * units[i].ms) {
                        *ret_error = "duration is too large (at most 3650d)";
                        return -EINVAL;
                }
                total += n * units[i].ms;
                p += unit_len;
        }

        *ret_ms = total;
        return 0;
}

char *duration_format(int64_t ms, char *buf, size_t len) {
        static const struct {
                const char *suffix;
                int64_t ms;
        } parts[] = {
                { "d", 24 * 3600 * 1000 },
                { "h", 3600 * 1000 },
                { "m", 60 * 1000 },
        };
        size_t off = 0;

        if (len == 0)
                return buf;
        buf[0] = '\0';
        if (ms < 0) {
                snprintf(buf, len, "-");
                off = 1;
                ms = ms == INT64_MIN ? INT64_MAX : -ms;
        }
        if (ms < 1000) {
                snprintf(buf + off, len - off, "%" PRId64 "ms", ms);
                return buf;
        }
        if (ms < 60 * 1000) {
                /* Below a minute the fraction is worth showing: "2.5s", "12.34s". */
                int64_t frac = ms % 1000;
                if (frac == 0)
                        snprintf(buf + off, len - off, "%" PRId64 "s", ms / 1000);
                else {
                        int digits = frac % 100 == 0 ? 1 : frac % 10 == 0 ? 2 : 3;
                        int64_t shown = digits == 1 ? frac / 100 : digits == 2 ? frac / 10 : frac;
                        snprintf(buf + off, len - off, "%" PRId64 ".%0*" PRId64 "s", ms / 1000, digits, shown);
                }
                return buf;
        }
        for (size_t i = 0; i < ELEMENTSOF(parts) && off < len; i++) {
                if (ms >= parts[i].ms) {
                        int r = snprintf(buf + off, len - off, "%" PRId64 "%s", ms / parts[i].ms, parts[i].suffix);
                        if (r < 0)
                                return buf;
                        off += (size_t) r;
                        ms %= parts[i].ms;
                }
        }
        if (ms >= 1000 && off < len)
                snprintf(buf + off, len - off, "%" PRId64 "s", ms / 1000);
        return buf;
}
