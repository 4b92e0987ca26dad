/* Strict JSON into a DOM without recursion. A value is pushed on a pending
 * stack when it ends; when an array or object closes, its children (the top
 * of that stack) move to the final array in one block, so each value moves
 * once and every container's children are contiguous. Strings and numbers
 * are copied into one arena of len + 1 bytes, which is enough: no escape
 * grows when decoded, a string drops its two quotes, and a number is
 * followed by a byte or is the last of the input. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "json.h"
#include "macro.h"

struct parser {
        const char *p, *end, *line_start;
        unsigned line;
        char *arena;
        size_t arena_used;
        struct json_value *pending, *values;
        size_t n_pending, n_values, cap_pending, cap_values;
        const struct json_value **keys;         /* scratch: an object's keys, sorted */
        size_t cap_keys;
        struct json_error *error;
};

static int fail_at(struct parser *p, const char *at, const char *fmt, ...) _printf_(3, 4);
static int fail_at(struct parser *p, const char *at, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        *p->error = (struct json_error) {
                .line = p->line,
                .column = (unsigned) (at - p->line_start) + 1,
                .message = xvasprintf(fmt, ap),
        };
        va_end(ap);
        return -EINVAL;
}

/* array with room for need elements of size bytes, its *cap doubled */
static void *grow(void *array, size_t *cap, size_t need, size_t size) {
        if (need <= *cap)
                return array;
        *cap = need > 2 * *cap ? need : 2 * *cap;
        return xreallocarray(array, *cap, size);
}

static bool is_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Up to max bytes of s (fewer rather than half a UTF-8 character), escaped,
 * in quotes when quoted, "..." after when cut. */
static char *excerpt(const char *s, size_t n, size_t max, bool quoted) {
        _cleanup_free_ char *e = NULL;
        size_t cut = n;

        if (n > max)
                for (cut = max; cut > max - 3 && ((unsigned char) s[cut] & 0xc0) == 0x80; cut--)
                        ;
        e = escape_bytes(s, cut);
        return xasprintf("%s%s%s%s", quoted ? "\"" : "", e, quoted ? "\"" : "", cut < n ? "..." : "");
}

/* "expected X, found Y": Y is the token at at (up to whitespace or a
 * structural character), or the end of the input. */
static int fail_found(struct parser *p, const char *at, const char *expected) {
        _cleanup_free_ char *found = NULL;
        const char *q = at;

        if (at == p->end)
                return fail_at(p, at, "expected %s, found the end of the input", expected);
        if (*at == '"')         /* a string: shown as it is written, quotes and all */
                for (q++; q < p->end && q - at < 32 && *q != '"'; q++)
                        ;
        else
                while (++q < p->end && q - at < 32 && !is_space(*q) && !strchr(",:[]{}\"", *q))
                        ;
        q += *at == '"' && q < p->end && *q == '"';
        found = excerpt(at, (size_t) (q - at), 24, *at != '"');
        return fail_at(p, at, "expected %s, found %s", expected, found);
}

static void skip_space(struct parser *p) {
        for (; p->p < p->end && is_space(*p->p); p->p++)
                if (*p->p == '\n') {
                        p->line++;
                        p->line_start = p->p + 1;
                }
}

static int peek(const struct parser *p) {
        return p->p < p->end ? (unsigned char) *p->p : -1;
}

static struct json_value *push(struct parser *p, enum json_type type) {
        p->pending = grow(p->pending, &p->cap_pending, p->n_pending + 1, sizeof(*p->pending));
        p->pending[p->n_pending] = (struct json_value) {
                .type = type,
                .line = p->line,
                .column = (unsigned) (p->p - p->line_start) + 1,
        };
        return &p->pending[p->n_pending++];
}

static bool hex4(const struct parser *p, const char *s, unsigned *ret) {
        char buf[5] = "";

        if (p->end - s < 4 || strspn(memcpy(buf, s, 4), "0123456789abcdefABCDEF") < 4)
                return false;
        *ret = (unsigned) strtoul(buf, NULL, 16);
        return true;
}

static char *put_utf8(char *o, unsigned cp) {
        static const unsigned char lead[] = { 0, 0, 0xc0, 0xe0, 0xf0 };
        size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;

        for (size_t i = n - 1; i > 0; i--, cp >>= 6)
                o[i] = (char) (0x80 | (cp & 0x3f));
        o[0] = (char) (lead[n] | cp);
        return o + n;
}

/* \uXXXX at p->p (the backslash), a surrogate pair as one: the code point. */
static int unicode_escape(struct parser *p, unsigned *ret) {
        const char *at = p->p;
        unsigned hi, lo;

        if (!hex4(p, at + 2, &hi))
                return fail_found(p, at + 2, "4 hex digits after \\u");
        p->p += 6;
        if (hi == 0)
                return fail_at(p, at, "a string holds U+0000: no PostgreSQL name or query can");
        if (hi >= 0xdc00 && hi <= 0xdfff)
                return fail_at(p, at, "lone surrogate \\u%04X: expected \\uD800 to \\uDBFF before it", hi);
        if (hi < 0xd800 || hi > 0xdbff) {
                *ret = hi;
                return 0;
        }
        if (p->end - p->p < 6 || p->p[0] != '\\' || p->p[1] != 'u' || !hex4(p, p->p + 2, &lo) ||
            lo < 0xdc00 || lo > 0xdfff)
                return fail_at(p, at, "lone surrogate \\u%04X: expected \\uDC00 to \\uDFFF after it", hi);
        p->p += 6;
        *ret = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
        return 0;
}

static int string(struct parser *p) {
        static const char simple[] = "\"\"\\\\//b\bf\fn\nr\rt\t";
        const char *start = p->p;
        struct json_value *v = push(p, JSON_STRING);
        char *out = p->arena + p->arena_used, *o = out;

        for (p->p++;;) {
                const char *at = p->p, *s;
                unsigned cp = 0;

                if (at == p->end)
                        return fail_at(p, start, "expected '\"' to end the string, found the end of the input");
                if ((unsigned char) *at < 0x20)
                        return fail_at(p, at, "expected a character or an escape in the string, "
                                       "found the control character 0x%02x", (unsigned char) *at);
                if (*at == '"')
                        break;
                if (*at != '\\') {
                        *o++ = *p->p++;
                        continue;
                }
                if (at + 1 < p->end && at[1] == 'u') {
                        int r = unicode_escape(p, &cp);
                        if (r < 0)
                                return r;
                        o = put_utf8(o, cp);
                        continue;
                }
                for (s = simple; at + 1 < p->end && *s && *s != at[1]; s += 2)
                        ;
                if (at + 1 == p->end || !*s)
                        return fail_found(p, at + 1, "an escape (one of \" \\ / b f n r t u) after \\");
                *o++ = s[1];
                p->p += 2;
        }
        p->p++;
        *o = '\0';
        v->text = out;
        v->n = (size_t) (o - out);
        p->arena_used += v->n + 1;
        return 0;
}

static bool digit(const struct parser *p, const char *q) {
        return q < p->end && *q >= '0' && *q <= '9';
}

static const char *skip_digits(const struct parser *p, const char *q) {
        while (digit(p, q))
                q++;
        return q;
}

static int number(struct parser *p) {
        const char *s = p->p, *q = s + (*s == '-');
        struct json_value *v;

        if (!digit(p, q))
                return fail_found(p, s, "a JSON value");
        if (*q == '0' && digit(p, q + 1))
                return fail_found(p, s, "a JSON number (no leading zero)");
        q = skip_digits(p, q);
        if (q < p->end && *q == '.' && !digit(p, ++q))
                return fail_found(p, s, "a JSON number (a digit after '.')");
        q = skip_digits(p, q);
        if (q < p->end && (*q == 'e' || *q == 'E')) {
                q++;
                q += q < p->end && (*q == '+' || *q == '-');
                if (!digit(p, q))
                        return fail_found(p, s, "a JSON number (a digit in the exponent)");
                q = skip_digits(p, q);
        }
        v = push(p, JSON_NUMBER);
        v->n = (size_t) (q - s);
        v->text = memcpy(p->arena + p->arena_used, s, v->n);
        p->arena[p->arena_used + v->n] = '\0';
        p->arena_used += v->n + 1;
        p->p = q;
        return 0;
}

static int scalar(struct parser *p) {
        static const struct {
                const char *word;
                enum json_type type;
        } words[] = { { "null", JSON_NULL }, { "false", JSON_FALSE }, { "true", JSON_TRUE } };
        int c = peek(p);

        if (c == '"')
                return string(p);
        if (c == '-' || (c >= '0' && c <= '9'))
                return number(p);
        for (size_t i = 0; i < ELEMENTSOF(words); i++) {
                size_t n = strlen(words[i].word);
                if ((size_t) (p->end - p->p) >= n && memcmp(p->p, words[i].word, n) == 0) {
                        push(p, words[i].type);
                        p->p += n;
                        return 0;
                }
        }
        return fail_found(p, p->p, "a JSON value");
}

/* An object's key, its ':' and the space after: the value is due. */
static int key(struct parser *p) {
        int r;

        if (peek(p) != '"')
                return fail_found(p, p->p, "a string key");
        if ((r = string(p)) < 0)
                return r;
        skip_space(p);
        if (peek(p) != ':')
                return fail_found(p, p->p, "':' after the key");
        p->p++;
        return 0;
}

static int key_order(const void *a, const void *b) {
        const struct json_value *x = *(const struct json_value *const *) a, *y = *(const struct json_value *const *) b;
        int c = strcmp(x->text, y->text);

        return c ? c : (x > y) - (x < y);
}

/* Sorted by text, then by place: a key equal to the one before it is a
 * duplicate; the first in the file is reported. */
static int check_keys(struct parser *p, struct json_value *members, size_t n) {
        const struct json_value *dup = NULL;

        p->keys = grow(p->keys, &p->cap_keys, n, sizeof(*p->keys));
        for (size_t i = 0; i < n; i++)
                p->keys[i] = &members[2 * i];
        qsort(p->keys, n, sizeof(*p->keys), key_order);
        for (size_t i = 1; i < n; i++)
                if (strcmp(p->keys[i - 1]->text, p->keys[i]->text) == 0 && (!dup || p->keys[i] < dup))
                        dup = p->keys[i];
        if (!dup)
                return 0;
        _cleanup_free_ char *e = excerpt(dup->text, dup->n, 64, true);
        *p->error = (struct json_error) { dup->line, dup->column, xasprintf("duplicate key %s", e) };
        return -EINVAL;
}

/* The container at pending[at] closes: its children move to the values. */
static int close_container(struct parser *p, size_t at) {
        struct json_value *c = &p->pending[at];
        size_t n = p->n_pending - at - 1;

        p->values = grow(p->values, &p->cap_values, p->n_values + n, sizeof(*p->values));
        if (n > 0)      /* p->values may still be NULL */
                memcpy(p->values + p->n_values, c + 1, n * sizeof(*c));
        c->first = p->n_values;
        c->n = c->type == JSON_OBJECT ? n / 2 : n;
        p->n_values += n;
        p->n_pending = at + 1;
        return c->type == JSON_OBJECT && c->n > 1 ? check_keys(p, p->values + c->first, c->n) : 0;
}

static int parse(struct parser *p) {
        size_t stack[JSON_MAX_DEPTH], depth = 0;     /* open containers, by place in pending */
        int r;

        skip_space(p);
        if (p->p == p->end) {
                *p->error = (struct json_error) { 1, 1, xstrdup("empty: not a capture") };
                return -EINVAL;
        }
        for (;;) {
                int c;

                skip_space(p);          /* a value is due */
                /* Memory stays a bounded multiple of what a capture can
                 * need (each value is a struct json_value), whatever the
                 * file: "[0,0,0,...]" of 256 MiB is not read whole. */
                if (p->n_pending + p->n_values >= JSON_MAX_VALUES)
                        return fail_at(p, p->p, "more than %d values, more than any capture holds; stopped reading",
                                       JSON_MAX_VALUES);
                c = peek(p);
                if (c == '[' || c == '{') {
                        if (depth == JSON_MAX_DEPTH)
                                return fail_at(p, p->p, "arrays and objects nested more than %d deep; stopped reading",
                                               JSON_MAX_DEPTH);
                        stack[depth++] = p->n_pending;
                        push(p, c == '[' ? JSON_ARRAY : JSON_OBJECT);
                        p->p++;
                        skip_space(p);
                        if (peek(p) != (c == '[' ? ']' : '}')) {
                                if (c == '{' && (r = key(p)) < 0)
                                        return r;
                                continue;
                        }
                        p->p++;
                        if ((r = close_container(p, stack[--depth])) < 0)
                                return r;
                } else if ((r = scalar(p)) < 0)
                        return r;

                /* a value ended: then a ',', the end of its container, or of the input */
                for (;;) {
                        bool object;

                        skip_space(p);
                        if (depth == 0)
                                return p->p == p->end ? 0 : fail_found(p, p->p, "the end of the input after the value");
                        object = p->pending[stack[depth - 1]].type == JSON_OBJECT;
                        c = peek(p);
                        if (c == ',') {
                                p->p++;
                                skip_space(p);
                                if (object && (r = key(p)) < 0)
                                        return r;
                                break;
                        }
                        if (c != (object ? '}' : ']'))
                                return fail_found(p, p->p, object ? "',' or '}'" : "',' or ']'");
                        p->p++;
                        if ((r = close_container(p, stack[--depth])) < 0)
                                return r;
                }
        }
}

int json_parse(const char *buf, size_t len, struct json_doc *ret, struct json_error *error) {
        struct parser p = {
                .p = buf, .end = buf + len, .line_start = buf, .line = 1,
                .arena = xmalloc(len + 1), .error = error,
        };
        int r;

        *ret = (struct json_doc) {};
        *error = (struct json_error) {};
        if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
                p.p = p.line_start = buf + 3;
        r = parse(&p);
        free(p.keys);
        if (r < 0) {
                free(p.pending);
                free(p.values);
                free(p.arena);
                return r;
        }
        /* the root last; then every container's children by address */
        p.values = xreallocarray(p.values, p.n_values + 1, sizeof(*p.values));
        p.values[p.n_values++] = p.pending[0];
        free(p.pending);
        for (size_t i = 0; i < p.n_values; i++) {
                struct json_value *v = &p.values[i];
                if (v->type == JSON_ARRAY || v->type == JSON_OBJECT)
                        v->items = v->n ? p.values + v->first : NULL;
        }
        *ret = (struct json_doc) { .root = &p.values[p.n_values - 1], .values = p.values, .strings = p.arena };
        return 0;
}

void json_doc_free(struct json_doc *d) {
        free(d->values);
        free(d->strings);
        *d = (struct json_doc) {};
}

bool json_int64(const struct json_value *v, int64_t *ret) {
        char *end;
        long long x;

        if (v->type != JSON_NUMBER || strpbrk(v->text, ".eE"))
                return false;
        errno = 0;
        x = strtoll(v->text, &end, 10);
        if (errno || *end)
                return false;
        *ret = x;
        return true;
}

char *json_describe(const struct json_value *v) {
        static const char *const words[] = { [JSON_NULL] = "null", [JSON_FALSE] = "false", [JSON_TRUE] = "true" };

        if (v->type == JSON_NUMBER || v->type == JSON_STRING)
                return excerpt(v->text, v->n, 32, v->type == JSON_STRING);
        if (v->type == JSON_ARRAY || v->type == JSON_OBJECT)
                return xasprintf("an %s%s", v->n ? "" : "empty ", v->type == JSON_ARRAY ? "array" : "object");
        return xstrdup(words[v->type]);
}
