/* libpq connection strings, checked and shown without ever showing a
 * password: see src/conninfo.c. */
#pragma once

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

/* "postgresql://..." or "postgres://...". */
bool conninfo_is_uri(const char *s);

/* Walk the keyword/value form the way libpq's conninfo_parse does; on the
 * first problem, its byte offset and a description free of user bytes. */
bool conninfo_find_problem(const char *s, size_t *ret_offset, const char **ret_what);

/* What kind of URI problem libpq's parse error names, or NULL when it is not
 * one we know. */
const char *conninfo_uri_problem(const char *libpq_error);

/* A conninfo libpq parses (into opts) but not as written: what would go
 * wrong, or NULL. */
const char *conninfo_misparsed(const char *s, const PQconninfoOption *opts);

/* The options in libpq's order as keyword='value' text, secrets (dispchar
 * '*') and the values of server settings in "options" as ***. Returns a
 * string to free, or NULL when libpq cannot parse it. */
char *conninfo_redacted(const char *conninfo);
