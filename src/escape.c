#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "escape.h"
#include "macro.h"

/* The ranges are those of RFC 3629's table: no overlong forms, no
 * surrogates, nothing above U+10FFFF. */
size_t utf8_decode(const char *p, size_t n, uint32_t *ret_cp) {
        const unsigned char *s = (const unsigned char *) p;
        unsigned char lo = 0x80, hi = 0xbf;
        size_t len;
        uint32_t cp;

        if (n == 0)
                return 0;
        if (s[0] < 0x80) {
                *ret_cp = s[0];
                return 1;
        }
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                len = 2;
        else if (s[0] >= 0xe0 && s[0] <= 0xef) {
                len = 3;
                if (s[0] == 0xe0)
                        lo = 0xa0;
                else if (s[0] == 0xed)
                        hi = 0x9f;
        } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
                len = 4;
                if (s[0] == 0xf0)
                        lo = 0x90;
                else if (s[0] == 0xf4)
                        hi = 0x8f;
        } else
                return 0;
        if (n < len || s[1] < lo || s[1] > hi)
                return 0;
        cp = s[0] & (0x7f >> len);
        for (size_t i = 1; i < len; i++) {
                if (s[i] < 0x80 || s[i] > 0xbf)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        *ret_cp = cp;
        return len;
}

/* Unicode's Bidi_Control property. */
static bool is_bidi_control(uint32_t cp) {
        return cp == 0x061c || cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
               (cp >= 0x2066 && cp <= 0x2069);
}

enum unit_kind {
        UNIT_KEEP,              /* printable UTF-8 */
        UNIT_CONTROL,           /* C0, DEL, C1 */
        UNIT_FORMAT,            /* U+2028, U+2029, a bidi control */
        UNIT_INVALID,           /* one byte that is not part of valid UTF-8 */
};

/* The one decision of what is unsafe: the kind of the unit at s (n > 0
 * bytes), its length, and its code point (the byte, for UNIT_INVALID). */
static size_t next_unit(const char *s, size_t n, uint32_t *cp, enum unit_kind *kind) {
        size_t len = utf8_decode(s, n, cp);

        if (len == 0) {
                *cp = (unsigned char) s[0];
                *kind = UNIT_INVALID;
                return 1;
        }
        if (*cp < 0x20 || (*cp >= 0x7f && *cp < 0xa0))
                *kind = UNIT_CONTROL;
        else if (*cp == 0x2028 || *cp == 0x2029 || is_bidi_control(*cp))
                *kind = UNIT_FORMAT;
        else
                *kind = UNIT_KEEP;
        return len;
}

static bool is_hex(char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static char *put(char *o, const char *text) {
        size_t len = strlen(text);
        memcpy(o, text, len);
        return o + len;
}

static char *put_hex(char *o, const char *prefix, unsigned char c) {
        static const char hex[] = "0123456789abcdef";

        o = put(o, prefix);
        *o++ = hex[c >> 4];
        *o++ = hex[c & 0xf];
        return o;
}

static char *put_u(char *o, uint32_t cp) {
        return put_hex(put_hex(o, "\\u", (unsigned char) (cp >> 8)), "", (unsigned char) cp);
}

char *escape_format(const char *s, size_t n, enum escape_format f) {
        /* The worst case is 6 bytes per byte (a C0 control as JSON \u00NN),
         * plus the quotes the wrappers add. */
        char *out = xmalloc(n * 6 + 3), *o = out;

        for (size_t i = 0; i < n;) {
                enum unit_kind kind;
                uint32_t cp;
                size_t len = next_unit(s + i, n - i, &cp, &kind);
                char c = s[i];

                switch (kind) {
                case UNIT_KEEP:
                        if (c == '\\' && f == ESCAPE_JSON && i + 3 < n && s[i + 1] == 'x' && is_hex(s[i + 2]) &&
                            is_hex(s[i + 3]))
                                o = put(o, "\\\\x5c");  /* would read as a byte */
                        else if (c == '\\' || (c == '"' && f != ESCAPE_TEXT)) {
                                *o++ = '\\';
                                *o++ = c;
                        } else if (f == ESCAPE_YAML && (cp == 0xfeff || cp == 0xfffe || cp == 0xffff))
                                o = put_u(o, cp);
                        else {
                                memcpy(o, s + i, len);
                                o += len;
                        }
                        break;
                case UNIT_CONTROL:
                        if (f == ESCAPE_JSON)
                                o = put_u(o, cp);
                        else if (f == ESCAPE_YAML)
                                o = put_hex(o, "\\x", (unsigned char) cp);
                        else
                                for (size_t j = 0; j < len; j++)
                                        o = put_hex(o, "\\x", (unsigned char) s[i + j]);
                        break;
                case UNIT_FORMAT:
                        o = put_u(o, cp);
                        break;
                case UNIT_INVALID:
                        o = put_hex(o, f == ESCAPE_JSON ? "\\\\x" : "\\x", (unsigned char) c);
                        break;
                }
                i += len;
        }
        *o = '\0';
        return out;
}

char *escape_bytes(const char *s, size_t n) {
        return escape_format(s, n, ESCAPE_TEXT);
}

char *escape_string(const char *s) {
        return escape_bytes(s, strlen(s));
}

static char *quoted(const char *s, enum escape_format f) {
        char *out = escape_format(s, strlen(s), f);
        size_t len = strlen(out);

        /* escape_format() leaves room for the quotes */
        memmove(out + 1, out, len);
        out[0] = '"';
        out[len + 1] = '"';
        out[len + 2] = '\0';
        return out;
}

char *escape_json(const char *s) {
        return quoted(s, ESCAPE_JSON);
}

char *escape_yaml(const char *s) {
        return quoted(s, ESCAPE_YAML);
}

void join_lines(char *s) {
        char *o = s;

        for (const char *i = s; *i;) {
                if (*i == '\r' && i[1] == '\n')
                        i++;
                if (*i != '\n') {
                        *o++ = *i++;
                        continue;
                }
                while (*i == '\n' || *i == '\r' || *i == '\t' || *i == ' ')
                        i++;
                if (*i && o > s)
                        *o++ = ' ';
        }
        *o = '\0';
}
