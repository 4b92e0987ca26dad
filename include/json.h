/* A small strict JSON reader (RFC 8259) into a DOM, for captures: no
 * recursion, at most JSON_MAX_DEPTH nested arrays and objects, time linear
 * in the input (objects' duplicate keys found by sorting), memory a small
 * multiple of it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 16
/* Values read at most, keys counted: a capture of 100000 sessions holds
 * about 4.2 million. */
#define JSON_MAX_VALUES (8 * 1024 * 1024)

enum json_type {
        JSON_NULL,
        JSON_FALSE,
        JSON_TRUE,
        JSON_NUMBER,
        JSON_STRING,
        JSON_ARRAY,
        JSON_OBJECT,
};

struct json_value {
        enum json_type type;
        unsigned line, column;          /* 1-based; the column counts bytes */
        size_t n;                       /* string, number: bytes of text; array: values; object: members */
        union {
                /* string: decoded (escapes to UTF-8; bytes >= 0x80 as they
                 * came, not checked), NUL-terminated, never a NUL inside;
                 * number: as written */
                const char *text;
                /* array: n values; object: 2n, each key (a string) before
                 * its value, in the file's order, no key twice; NULL when n is 0 */
                struct json_value *items;
                size_t first;           /* the parser's own, while the values still move */
        };
};

struct json_doc {
        const struct json_value *root;
        struct json_value *values;
        char *strings;
};

struct json_error {
        unsigned line, column;
        char *message;                  /* escaped: printable as is */
};

/* Parse len bytes at buf (less than 4 GiB; no NUL needed; a UTF-8 BOM
 * first is skipped). 0; or -EINVAL and *error set (free error->message). */
int json_parse(const char *buf, size_t len, struct json_doc *ret, struct json_error *error);
void json_doc_free(struct json_doc *d);

/* A number written as an integer (no fraction, no exponent) that fits int64_t. */
bool json_int64(const struct json_value *v, int64_t *ret);
/* What an error says it found: null, true, 12.5, "text" (escaped, cut after
 * 32 bytes), an array, an object. Newly allocated. */
char *json_describe(const struct json_value *v);
