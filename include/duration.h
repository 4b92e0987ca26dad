/* Durations as written in the configuration: "30s", "1h30m", "250ms". */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Largest accepted duration: 10 years, far beyond any sane limit and far from overflow. */
#define DURATION_MAX_MS (INT64_C(10) * 365 * 24 * 3600 * 1000)

/* Parse s into milliseconds. Returns 0, or -EINVAL and points *ret_error at a static
 * explanation. Zero ("0s") parses; callers that need a positive value check. */
int duration_parse(const char *s, int64_t *ret_ms, const char **ret_error);

/* Human form of ms: "850ms", "2.5s", "31m12s", "1d2h". Returns buf. */
char *duration_format(int64_t ms, char *buf, size_t len);

#define DURATION_FORMAT_MAX 32
