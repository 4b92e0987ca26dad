/* The one escaping function: what passes, what becomes \xNN or \uNNNN. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "macro.h"
#include "unit.h"

struct esc_case {
        const char *in;
        size_t len;  /* 0: strlen(in) */
        const char *want;
};

static void check_escape(const struct esc_case *c, int line) {
        size_t len = c->len ? c->len : strlen(c->in);
        char *got = escape_bytes(c->in, len);
        CHECK_AT(strcmp(got, c->want) == 0, __FILE__, line, "escape case %d: got \"%s\", want \"%s\"",
                 line, got, c->want);
        free(got);
}

#define ESC(in, want) { in, 0, want }
#define ESCN(in, n, want) { in, n, want }

static const struct esc_case cases[] = {
        /* printable ASCII and valid UTF-8 pass through */
        ESC("plain role_name-1", "plain role_name-1"),
        ESC("caf\xc3\xa9", "caf\xc3\xa9"),                         /* é */
        ESC("\xe6\x97\xa5\xe6\x9c\xac", "\xe6\x97\xa5\xe6\x9c\xac"), /* 日本 */
        ESC("\xc2\xa0nbsp", "\xc2\xa0nbsp"),                       /* U+00A0: first after C1 */
        ESC("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"),               /* U+1F600, 4 bytes */
        ESC("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"),               /* U+10FFFF, the last */
        ESC("\xef\xbf\xbd", "\xef\xbf\xbd"),                       /* U+FFFD itself is valid */
        ESC("\xe2\x80\xa7", "\xe2\x80\xa7"),                       /* U+2027, next to the separators */
        ESC("\xe2\x80\xab", "\\u202b"),                              /* U+202B RLE: see the bidi cases */
        ESC("\xe2\x80\xaf", "\xe2\x80\xaf"),                       /* U+202F, next to the embeddings */
        ESC("\xe2\x81\xa5", "\xe2\x81\xa5"),                       /* U+2065, before the isolates */
        ESC("\xe2\x81\xaa", "\xe2\x81\xaa"),                       /* U+206A, after them */
        ESC("\xd8\x9b", "\xd8\x9b"),                               /* U+061B, before ALM */
        /* the backslash itself, so escapes cannot be forged */
        ESC("a\\b", "a\\\\b"),
        ESC("\\x0a", "\\\\x0a"),
        /* C0 controls, tab and newline included, and DEL */
        ESC("a\tb", "a\\x09b"),
        ESC("a\nb", "a\\x0ab"),
        ESC("a\rb", "a\\x0db"),
        ESC("\x1b[31mred", "\\x1b[31mred"),
        ESC("\x01", "\\x01"),
        ESC("\x1f", "\\x1f"),
        ESC("\x7f", "\\x7f"),
        ESC("~\x7f~", "~\\x7f~"),
        /* C1 controls: U+0080..U+009F, each byte shown */
        ESC("\xc2\x80", "\\xc2\\x80"),
        ESC("\xc2\x85", "\\xc2\\x85"),  /* NEL */
        ESC("\xc2\x9b" "31m", "\\xc2\\x9b" "31m"),  /* CSI */
        ESC("\xc2\x9f", "\\xc2\\x9f"),
        /* line and paragraph separators */
        ESC("a\xe2\x80\xa8" "b", "a\\u2028b"),
        ESC("a\xe2\x80\xa9" "b", "a\\u2029b"),
        /* bidirectional controls (Unicode's Bidi_Control), which reorder what a reader sees */
        ESC("a\xe2\x80\xae" "txt.exe", "a\\u202etxt.exe"),   /* U+202E RLO */
        ESC("\xe2\x80\xaa\xe2\x80\xac", "\\u202a\\u202c"),    /* LRE, PDF */
        ESC("\xe2\x81\xa6x\xe2\x81\xa9", "\\u2066x\\u2069"),  /* LRI, PDI */
        ESC("\xe2\x80\x8e\xe2\x80\x8f", "\\u200e\\u200f"),    /* LRM, RLM */
        ESC("\xd8\x9c", "\\u061c"),                        /* ALM */
        /* invalid UTF-8: every byte that is not part of a valid sequence */
        ESC("\x80", "\\x80"),                           /* lone continuation */
        ESC("\xbf", "\\xbf"),
        ESC("\xc0\xaf", "\\xc0\\xaf"),                  /* overlong '/' */
        ESC("\xc1\xbf", "\\xc1\\xbf"),                  /* overlong */
        ESC("\xe0\x80\xaf", "\\xe0\\x80\\xaf"),         /* overlong, 3 bytes */
        ESC("\xe0\x9f\xbf", "\\xe0\\x9f\\xbf"),         /* overlong U+07FF */
        ESC("\xf0\x80\x80\xaf", "\\xf0\\x80\\x80\\xaf"), /* overlong, 4 bytes */
        ESC("\xf0\x8f\xbf\xbf", "\\xf0\\x8f\\xbf\\xbf"), /* overlong U+FFFF */
        ESC("\xed\xa0\x80", "\\xed\\xa0\\x80"),         /* surrogate U+D800 */
        ESC("\xed\xbf\xbf", "\\xed\\xbf\\xbf"),         /* surrogate U+DFFF */
        ESC("\xed\x9f\xbf", "\xed\x9f\xbf"),            /* U+D7FF is valid */
        ESC("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80"), /* above U+10FFFF */
        ESC("\xf5\x80\x80\x80", "\\xf5\\x80\\x80\\x80"),
        ESC("\xf8", "\\xf8"),
        ESC("\xfe", "\\xfe"),
        ESC("\xff", "\\xff"),
        ESC("a\xffz", "a\\xffz"),
        /* truncated sequences: the lead byte and what follows each on its own */
        ESC("\xc3", "\\xc3"),
        ESC("\xc3z", "\\xc3z"),
        ESC("\xe6\x97", "\\xe6\\x97"),
        ESC("\xe6\x97z", "\\xe6\\x97z"),
        ESC("\xf0\x9f\x98", "\\xf0\\x9f\\x98"),
        ESC("\xf0\x9f\x98" "caf\xc3\xa9", "\\xf0\\x9f\\x98" "caf\xc3\xa9"),  /* valid text after it survives */
        ESC("\xe2\x80", "\\xe2\\x80"),                  /* U+2028 cut short */
        ESC("\xc2", "\\xc2"),                           /* C1 lead alone */
        /* a NUL inside the bytes (only via escape_bytes) */
        ESCN("a\0b", 3, "a\\x00b"),
        ESC("", ""),
};

static void test_every_c0_and_c1(void) {
        char in[3], want[16];
        for (int c = 0; c < 0x20; c++) {
                in[0] = (char) c;
                snprintf(want, sizeof(want), "\\x%02x", c);
                char *got = escape_bytes(in, 1);
                CHECK_STR(got, want, "C0");
                free(got);
        }
        for (int c = 0x80; c <= 0x9f; c++) {
                in[0] = (char) 0xc2;
                in[1] = (char) c;
                snprintf(want, sizeof(want), "\\xc2\\x%02x", c);
                char *got = escape_bytes(in, 2);
                CHECK_STR(got, want, "C1");
                free(got);
        }
        for (int c = 0xf5; c <= 0xff; c++) {
                in[0] = (char) c;
                snprintf(want, sizeof(want), "\\x%02x", c);
                char *got = escape_bytes(in, 1);
                CHECK_STR(got, want, "invalid lead byte");
                free(got);
        }
        /* every printable ASCII byte but the backslash is itself */
        for (int c = 0x20; c < 0x7f; c++) {
                if (c == '\\')
                        continue;
                in[0] = (char) c;
                in[1] = '\0';
                char *got = escape_bytes(in, 1);
                CHECK_STR(got, in, "printable ASCII");
                free(got);
        }
}

/* Every code point of Unicode's Bidi_Control property, and only those
 * around them, becomes \uNNNN. */
static void test_every_bidi_control(void) {
        for (uint32_t cp = 0x600; cp < 0x2100; cp++) {
                bool bidi = cp == 0x61c || cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
                            (cp >= 0x2066 && cp <= 0x2069);
                bool separator = cp == 0x2028 || cp == 0x2029;
                char in[4], want[8];
                size_t n;

                if (cp < 0x800) {
                        in[0] = (char) (0xc0 | cp >> 6);
                        in[1] = (char) (0x80 | (cp & 0x3f));
                        n = 2;
                } else {
                        in[0] = (char) (0xe0 | cp >> 12);
                        in[1] = (char) (0x80 | (cp >> 6 & 0x3f));
                        in[2] = (char) (0x80 | (cp & 0x3f));
                        n = 3;
                }
                in[n] = '\0';
                if (bidi || separator)
                        snprintf(want, sizeof(want), "\\u%04x", (unsigned) cp);
                else
                        memcpy(want, in, n + 1);
                char *got = escape_bytes(in, n);
                CHECK_AT(strcmp(got, want) == 0, __FILE__, __LINE__, "U+%04X: got \"%s\"", (unsigned) cp, got);
                free(got);
        }
}

/* A JSON string's value back to bytes, as pgsweeper(8) says to read it: JSON
 * escapes first, then \x and two hex digits is one byte. Returns the length,
 * or -1 when the JSON is not what escape_json() may write. */
static int hexval(char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
               c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static long json_to_bytes(const char *j, unsigned char *out) {
        char text[4096];
        size_t t = 0, len = strlen(j);
        long n = 0;

        if (len < 2 || j[0] != '"' || j[len - 1] != '"')
                return -1;
        for (size_t i = 1; i + 1 < len;) {
                unsigned char c = (unsigned char) j[i];
                if (c < 0x20 || c == '"')
                        return -1;                       /* raw control or quote: not JSON */
                if (c != '\\') {
                        text[t++] = j[i++];
                        continue;
                }
                if (j[i + 1] == '"' || j[i + 1] == '\\') {
                        text[t++] = j[i + 1];
                        i += 2;
                } else if (j[i + 1] == 'u') {
                        unsigned cp = 0;
                        for (int k = 2; k < 6; k++) {
                                if (hexval(j[i + k]) < 0)
                                        return -1;
                                cp = cp << 4 | (unsigned) hexval(j[i + k]);
                        }
                        if (cp >= 0xd800 && cp <= 0xdfff)
                                return -1;
                        if (cp < 0x80)
                                text[t++] = (char) cp;
                        else if (cp < 0x800) {
                                text[t++] = (char) (0xc0 | cp >> 6);
                                text[t++] = (char) (0x80 | (cp & 0x3f));
                        } else {
                                text[t++] = (char) (0xe0 | cp >> 12);
                                text[t++] = (char) (0x80 | (cp >> 6 & 0x3f));
                                text[t++] = (char) (0x80 | (cp & 0x3f));
                        }
                        i += 6;
                } else
                        return -1;
        }
        for (size_t i = 0; i < t;) {
                if (text[i] == '\\' && i + 3 < t && text[i + 1] == 'x' &&
                    hexval(text[i + 2]) >= 0 && hexval(text[i + 3]) >= 0) {
                        out[n++] = (unsigned char) (hexval(text[i + 2]) << 4 | hexval(text[i + 3]));
                        i += 4;
                } else
                        out[n++] = (unsigned char) text[i++];
        }
        return n;
}

/* Random names made of the troublesome pieces: escape_json() always gives
 * JSON whose reading is the name's bytes, and the JSON text is valid UTF-8
 * with nothing unsafe in it (escape_bytes() leaves it as it is, backslashes
 * aside). */
static void test_json_reads_back(void) {
        static const char *const pieces[] = {
                "\\", "\\x", "x", "X", "4", "a", "f", "g", "4F", "\"", "'", "\n", "\t", "\x7f", "\xff", "\xc2", "\xc2\x9b",
                "\xe2\x80\xae", "\xe2\x80\xa8", "\xe2\x81\xa6", "\xe2\x80", "\xc3\xa9", "\xf0\x9f\x98\x80", "\xed\xa0\x80",
        };
        unsigned seed = 18;
        int bad = 0;

        for (int round = 0; round < 20000 && bad < 5; round++) {
                char in[128];
                unsigned char back[512];
                size_t n = 0;
                int parts = (int) ((seed = seed * 1103515245u + 12345u) >> 16) % 12;

                for (int k = 0; k < parts; k++) {
                        const char *p = pieces[((seed = seed * 1103515245u + 12345u) >> 16) % ELEMENTSOF(pieces)];
                        memcpy(in + n, p, strlen(p));
                        n += strlen(p);
                }
                in[n] = '\0';
                char *j = escape_json(in);
                long got = json_to_bytes(j, back);
                char *again = escape_string(j), doubled[1024], *d = doubled;
                for (const char *q = j; *q; q++) {
                        if (*q == '\\')
                                *d++ = '\\';
                        *d++ = *q;
                }
                *d = '\0';
                if (got != (long) n || memcmp(back, in, n) != 0 || strcmp(again, doubled) != 0) {
                        char *shown = escape_string(in);
                        CHECK_AT(false, __FILE__, __LINE__, "json of \"%s\" reads back wrong: %s", shown, again);
                        free(shown);
                        bad++;
                }
                free(again);
                free(j);
        }
}

static void check_join(const char *in, const char *want) {
        char *s = strdup(in);
        join_lines(s);
        CHECK_STR(s, want, in);
        free(s);
}

static void test_join_lines(void) {
        check_join("connection to server on socket \"/tmp/.s.PGSQL.5432\" failed: Connection refused\n"
                   "\tIs the server running locally and accepting connections on that socket?\n",
                   "connection to server on socket \"/tmp/.s.PGSQL.5432\" failed: Connection refused "
                   "Is the server running locally and accepting connections on that socket?");
        check_join("server closed the connection unexpectedly\n\tThis probably means the server terminated "
                   "abnormally\n\tbefore or while processing the request.\n",
                   "server closed the connection unexpectedly This probably means the server terminated "
                   "abnormally before or while processing the request.");
        check_join("one\ntwo\n\n", "one two");
        check_join("crlf\r\nnext\r\n", "crlf next");
        check_join("\nleading", "leading");
        check_join("no newline", "no newline");
        check_join("tab\tinside stays", "tab\tinside stays");
        check_join("", "");
}

int main(void) {
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                check_escape(&cases[i], (int) i);
        test_every_c0_and_c1();
        test_every_bidi_control();
        test_json_reads_back();
        test_join_lines();
        return unit_finish("test-escape");
}
