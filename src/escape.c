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

static char *put_hex(char *o, unsigned char c) {
        static const char hex[] = "0123456789abcdef";

        *o++ = '\\';
        *o++ = 'x';
        *o++ = hex[c >> 4];
        *o++ = hex[c & 0xf];
        return o;
}

char *escape_bytes(const char *s, size_t n) {
        const unsigned char *u = (const unsigned char *) s;
        /* the worst case, every byte as \xNN, is 4 bytes per byte */
        char *out = xmalloc(n * 4 + 1), *o = out;

        for (size_t i = 0; i < n;) {
                uint32_t cp;
                size_t len = utf8_decode(s + i, n - i, &cp);

                if (len == 0 || (len == 1 && (u[i] < 0x20 || u[i] == 0x7f)) || (len == 2 && u[i] == 0xc2 && u[i + 1] < 0xa0)) {
                        /* invalid, C0/DEL, or C1 (U+0080..U+009F is C2 80..C2 9F) */
                        size_t k = len ? len : 1;
                        for (size_t j = 0; j < k; j++)
                                o = put_hex(o, u[i + j]);
                        i += k;
                } else if (len == 1 && u[i] == '\\') {
                        *o++ = '\\';
                        *o++ = '\\';
                        i++;
                } else if (len == 3 && u[i] == 0xe2 && u[i + 1] == 0x80 && (u[i + 2] == 0xa8 || u[i + 2] == 0xa9)) {
                        memcpy(o, u[i + 2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
                        o += 6;
                        i += 3;
                } else {
                        memcpy(o, u + i, len);
                        o += len;
                        i += len;
                }
        }
        *o = '\0';
        return out;
}

char *escape_string(const char *s) {
        return escape_bytes(s, strlen(s));
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
