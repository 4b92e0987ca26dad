/* The matching primitives of session filters (filter.h): fnmatch globs for
 * names, CIDR blocks and "local" for client addresses. Pure: no I/O, no
 * allocation while matching. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An IP block. IPv4 is stored as its v4-mapped IPv6 form (::ffff:a.b.c.d,
 * prefix + 96), so 10.0.0.0/8 and ::ffff:10.0.0.0/104 are the same block and
 * an IPv4 client matches either spelling. Consequence: ::/0 matches every TCP
 * client, 0.0.0.0/0 every IPv4 client. */
struct netmask {
        uint8_t addr[16];
        unsigned prefix;            /* 0..128 */
};

/* fnmatch(3) globs, flags 0: case-sensitive, '*' and '?' match any byte,
 * '\' escapes. An empty pattern matches only the empty string (an unset
 * application_name). */
struct name_list {
        char **patterns;
        size_t n;
        bool given;                 /* the key was written; an empty given list matches nothing */
        /* Built by name_list_compile(): patterns without glob characters in a
         * hash table (slot -> pattern index + 1, 0 empty), the others in
         * globs, so matching costs one lookup plus the globs, however many
         * names are listed. Without it, every pattern is tried. */
        uint32_t *slots;
        size_t n_slots;             /* a power of two, or 0 */
        uint32_t *globs;
        size_t n_globs;
};

struct addr_list {
        struct netmask *masks;
        size_t n;
        bool local;                 /* "local": Unix-socket sessions */
        bool given;
};

/* Parse an IP address ("10.0.0.1", "::1", "::ffff:10.0.0.1") into its
 * 16-byte form (IPv4 v4-mapped). Returns 0 or -EINVAL. */
int ip_parse(const char *s, uint8_t ret[16]);

/* Parse "10.0.0.0/8", "fe80::/10", or a single address (a /32 or /128 block).
 * Host bits right of the prefix are an error, as for PostgreSQL's cidr type.
 * Returns 0, or -EINVAL and a static explanation in *ret_error. */
int netmask_parse(const char *s, struct netmask *ret, const char **ret_error);

bool netmask_contains(const struct netmask *m, const uint8_t addr[16]);

/* Canonical text of a block ("10.0.0.0/8", "::1/128"); buf of NETMASK_FORMAT_MAX. */
char *netmask_format(const struct netmask *m, char *buf, size_t len);
#define NETMASK_FORMAT_MAX 64

/* Is pattern a well-formed glob (balanced brackets, known [:classes:], no
 * trailing backslash)? fnmatch itself would silently read such patterns
 * literally. Returns 0, or -EINVAL and a static explanation in *ret_error. */
int glob_check(const char *pattern, const char **ret_error);

/* Index the list for matching; call once, after the last pattern is added. */
void name_list_compile(struct name_list *l);

/* Free what the list owns and zero it. */
void name_list_done(struct name_list *l);

/* Does s match any pattern of the list? */
bool name_list_matches(const struct name_list *l, const char *s);

/* Does client_addr ("local", a textual IP from PostgreSQL's host(), or ""
 * when unknown) fall in any entry? "" and unparsable text match nothing. */
bool addr_list_matches(const struct addr_list *l, const char *client_addr);
