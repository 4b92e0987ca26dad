/* Checks on a libpq connection string, and its text for --dump. A conninfo
 * may hold a password anywhere (a keyword written where a value was meant, a
 * URI's user part, a quote that ends early), and libpq quotes fragments of
 * the string in its parse errors. So nothing of the string, nor libpq's
 * message, is ever shown: only what kind of problem it is and, for the
 * keyword/value form, the byte where it starts. */
#include <ctype.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#include "conninfo.h"
#include "macro.h"

bool conninfo_is_uri(const char *s) {
        return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0;
}

/* Is name (len bytes) a keyword libpq knows? */
static bool conninfo_keyword_known(const char *name, size_t len) {
        PQconninfoOption *all = PQconninfoParse("", NULL);
        bool found = len == 10 && strncmp(name, "requiressl", 10) == 0;  /* still accepted by libpq */

        for (PQconninfoOption *o = all; o && o->keyword && !found; o++)
                found = strlen(o->keyword) == len && strncmp(o->keyword, name, len) == 0;
        PQconninfoFree(all);
        return found;
}

/* Walk the keyword/value form the way libpq's conninfo_parse does; on the
 * first problem, its byte offset and a description free of user bytes. */
bool conninfo_find_problem(const char *s, size_t *ret_offset, const char **ret_what) {
        const char *c = s;

        while (*c) {
                const char *key, *key_end;

                if (isspace((unsigned char) *c)) {
                        c++;
                        continue;
                }
                key = c;
                while (*c && *c != '=' && !isspace((unsigned char) *c))
                        c++;
                key_end = c;
                while (isspace((unsigned char) *c))
                        c++;
                if (*c != '=') {
                        *ret_offset = (size_t) (key - s);
                        *ret_what = "a keyword without \"=\" after it";
                        return true;
                }
                c++;
                while (isspace((unsigned char) *c))
                        c++;
                if (*c == '\'') {
                        const char *open = c++;
                        for (;; c++) {
                                if (!*c) {
                                        *ret_offset = (size_t) (open - s);
                                        *ret_what = "a quoted value without its closing quote";
                                        return true;
                                }
                                if (*c == '\\' && c[1])
                                        c++;
                                else if (*c == '\'') {
                                        c++;
                                        break;
                                }
                        }
                } else
                        for (; *c && !isspace((unsigned char) *c); c++)
                                if (*c == '\\' && c[1])
                                        c++;
                if (!conninfo_keyword_known(key, (size_t) (key_end - key))) {
                        *ret_offset = (size_t) (key - s);
                        *ret_what = "an unknown keyword";
                        return true;
                }
        }
        return false;
}

/* libpq's English parse errors, told apart by their constant text only. */
const char *conninfo_uri_problem(const char *libpq_error) {
        static const struct {
                const char *libpq;
                const char *ours;
        } kinds[] = {
                { "IPv6 host address may not be empty", "an empty IPv6 address" },
                { "in IPv6 host address", "an IPv6 address without its closing \"]\"" },
                { "unexpected character", "an unexpected character after the host (expected \":\" or \"/\")" },
                { "extra key/value separator", "a query parameter with two \"=\"" },
                { "missing key/value separator", "a query parameter without \"=\"" },
                { "invalid URI query parameter", "an unknown query parameter" },
                { "invalid connection option", "an unknown query parameter" },
                { "invalid percent-encoded token", "an invalid %-escape" },
                { "forbidden value %00", "a %00 escape" },
                { "out of memory", "out of memory" },
        };

        for (size_t i = 0; libpq_error && i < ELEMENTSOF(kinds); i++)
                if (strstr(libpq_error, kinds[i].libpq))
                        return kinds[i].ours;
        return NULL;
}

/* libpq parses a URI whose password holds a raw "@" or "/" without complaint,
 * but into a host, port or database name made of pieces of the password,
 * which its connection errors (and the server's) would then quote. */
const char *conninfo_misparsed(const char *s, const PQconninfoOption *opts) {
        if (conninfo_is_uri(s)) {
                const char *rest = strstr(s, "://") + 3;
                size_t end = strcspn(rest, "?");
                const char *slash = memchr(rest, '/', end);

                if (slash && memchr(slash, '@', end - (size_t) (slash - rest)))
                        return "an \"@\" after a \"/\" (write \"/\" in a password as %2F, \"@\" as %40)";
        }
        for (const PQconninfoOption *o = opts; o->keyword; o++) {
                if (!o->val)
                        continue;
                if (strcmp(o->keyword, "port") == 0 && o->val[strspn(o->val, "0123456789, \t\n\r\f\v")])
                        return "the port is not a number";
                if (strcmp(o->keyword, "host") == 0 && conninfo_is_uri(s) && strchr(o->val, '@'))
                        return "the host contains \"@\" (write \"@\" in a password as %40)";
        }
        return NULL;
}

static void dump_quoted_chars(FILE *m, const char *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                fprintf(m, v[i] == '\'' || v[i] == '\\' ? "\\%c" : "%c", v[i]);
}

/* "options" passes settings to the server, and a setting can be a credential
 * ("-c app.token=..."): show each argument up to its "=", the value as ***. */
static void dump_server_options(FILE *m, const char *v) {
        while (*v) {
                size_t n = 0;
                const char *eq;

                while (v[n] && !isspace((unsigned char) v[n]))
                        n += v[n] == '\\' && v[n + 1] ? 2 : 1;
                eq = memchr(v, '=', n);
                if (eq) {
                        dump_quoted_chars(m, v, (size_t) (eq - v) + 1);
                        fputs("***", m);
                } else
                        dump_quoted_chars(m, v, n);
                v += n;
                for (; isspace((unsigned char) *v); v++)
                        fputc(' ', m);
        }
}

char *conninfo_redacted(const char *conninfo) {
        PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
        char *text = NULL;
        size_t len = 0;
        FILE *m;

        if (!opts || !(m = open_memstream(&text, &len))) {
                PQconninfoFree(opts);
                return NULL;
        }
        for (PQconninfoOption *o = opts; o->keyword; o++) {
                if (!o->val)
                        continue;
                fprintf(m, "%s%s='", ftell(m) ? " " : "", o->keyword);
                if (o->dispchar && strchr(o->dispchar, '*'))
                        fputs("***", m);
                else if (strcmp(o->keyword, "options") == 0)
                        dump_server_options(m, o->val);
                else
                        dump_quoted_chars(m, o->val, strlen(o->val));
                fputc('\'', m);
        }
        fclose(m);
        PQconninfoFree(opts);
        return text;
}
