/* The one escaping function for bytes from a server or a user (role names,
 * application names, libpq messages, configuration names) that reach a
 * terminal line, a journal MESSAGE or, later, JSON. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The one UTF-8 decoder: the length of the valid UTF-8 sequence at s (n
 * bytes available) with its code point in *cp, or 0 when there is none
 * (truncated, overlong, a surrogate, above U+10FFFF). */
size_t utf8_decode(const char *s, size_t n, uint32_t *cp);

/* A newly allocated copy of s[0..n) that is one printable line:
 *   - valid printable UTF-8 is kept as it is (é, 日本);
 *   - a backslash becomes "\\", so every escape below is unambiguous;
 *   - each byte of a C0 control (tab and newline included), DEL, a C1
 *     control (U+0080..U+009F, two bytes in UTF-8) and each byte that is not
 *     part of a valid UTF-8 sequence (overlong forms, surrogates, code points
 *     above U+10FFFF, truncated sequences) becomes "\xNN": \xNN always stands
 *     for one byte of the original;
 *   - U+2028 and U+2029 (line and paragraph separators) become "\u2028" and
 *     "\u2029". */
char *escape_bytes(const char *s, size_t n);
char *escape_string(const char *s);

/* libpq's messages span lines ("Connection refused\n\tIs the server
 * running..."): join them in place into one line, each line break with the
 * blanks after it becoming a single space, trailing line breaks removed. Done
 * before escaping. */
void join_lines(char *s);
