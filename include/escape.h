/* The one escaping function for bytes from a server or a user (role names,
 * application names, libpq messages, configuration names, keys, values and
 * paths, command-line arguments) that reach a terminal line, a journal
 * MESSAGE, JSON or the YAML of --dump. One decision says what is unsafe;
 * each format only chooses how to write it. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The one UTF-8 decoder: the length of the valid UTF-8 sequence at s (n
 * bytes available) with its code point in *cp, or 0 when there is none
 * (truncated, overlong, a surrogate, above U+10FFFF). */
size_t utf8_decode(const char *s, size_t n, uint32_t *cp);

/* What is unsafe, in every format:
 *   - a control character: C0 (tab and newline included), DEL, C1
 *     (U+0080..U+009F, two bytes in UTF-8);
 *   - U+2028 and U+2029 (line and paragraph separators) and the
 *     bidirectional controls (Unicode's Bidi_Control: U+061C, U+200E,
 *     U+200F, U+202A..U+202E, U+2066..U+2069), which reorder or break what a
 *     reader sees;
 *   - each byte that is not part of a valid UTF-8 sequence (overlong forms,
 *     surrogates, code points above U+10FFFF, truncated sequences).
 * Everything else (é, 日本) is kept as it is. */
enum escape_format {
        /* A terminal line, a journal MESSAGE, a diagnostic: a backslash
         * becomes "\\"; each byte of a control and each invalid byte
         * "\xNN" (\xNN always stands for one byte of the original); the
         * separators and bidi controls "\uNNNN". */
        ESCAPE_TEXT,
        /* The inside of a JSON string that decodes to the text itself: '"'
         * and '\' quoted; controls, separators and bidi controls as JSON
         * "\uNNNN" escapes; a byte that is not UTF-8 as the text \xNN (JSON
         * "\\xNN"), and so a backslash followed by x and two hex digits in
         * the original as the text \x5c: in the decoded string, \x and two
         * hex digits always stand for one byte, any other character for
         * itself. */
        ESCAPE_JSON,
        /* The inside of a YAML double-quoted scalar that loads back to the
         * text: '"' and '\' quoted; controls as "\xNN" of their code point,
         * the separators, bidi controls and what YAML does not take
         * unescaped (U+FEFF, U+FFFE, U+FFFF) as "\uNNNN". */
        ESCAPE_YAML,
};

/* The one escaping function: a newly allocated copy of s[0..n) in format f,
 * one line of valid UTF-8 without a control character. */
char *escape_format(const char *s, size_t n, enum escape_format f);

/* ESCAPE_TEXT: what every line meant to be read uses. */
char *escape_bytes(const char *s, size_t n);
char *escape_string(const char *s);
/* s as a whole JSON string, quotes included (ESCAPE_JSON). */
char *escape_json(const char *s);
/* s as a whole YAML double-quoted scalar, quotes included (ESCAPE_YAML). */
char *escape_yaml(const char *s);

/* libpq's messages span lines ("Connection refused\n\tIs the server
 * running..."): join them in place into one line, each line break with the
 * blanks after it becoming a single space, trailing line breaks removed. Done
 * before escaping. */
void join_lines(char *s);
