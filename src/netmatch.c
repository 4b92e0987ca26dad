#include <arpa/inet.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "netmatch.h"

static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static bool is_v4_mapped(const uint8_t addr[16]) {
        return memcmp(addr, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0;
}

int ip_parse(const char *s, uint8_t ret[16]) {
        struct in_addr a4;

        if (inet_pton(AF_INET, s, &a4) == 1) {
                memcpy(ret, v4_mapped_prefix, sizeof(v4_mapped_prefix));
                memcpy(ret + 12, &a4, 4);
                return 0;
        }
        if (inet_pton(AF_INET6, s, ret) == 1)
                return 0;
        return -EINVAL;
}

int netmask_parse(const char *s, struct netmask *ret, const char **ret_error) {
        char addr[INET6_ADDRSTRLEN + 1];
        const char *slash = strchr(s, '/');
        size_t alen = slash ? (size_t) (slash - s) : strlen(s);
        struct netmask m = {};
        bool v4;
        unsigned max;

        if (alen == 0 || alen >= sizeof(addr)) {
                *ret_error = "expected an IP address, a CIDR block such as 10.0.0.0/8, or local";
                return -EINVAL;
        }
        memcpy(addr, s, alen);
        addr[alen] = '\0';
        if (strchr(addr, '%')) {
                *ret_error = "IPv6 zone ids (\"%eth0\") are not supported";
                return -EINVAL;
        }
        v4 = strchr(addr, ':') == NULL;
        if (ip_parse(addr, m.addr) < 0) {
                *ret_error = v4 ? "not an IPv4 or IPv6 address (host names are not resolved; write local for "
                                  "Unix-socket sessions)" :
                                  "not a valid IPv6 address";
                return -EINVAL;
        }
        max = v4 ? 32 : 128;
        if (!slash)
                m.prefix = max;
        else {
                const char *d = slash + 1;
                unsigned n = 0;

                if (!*d) {
                        *ret_error = "missing prefix length after \"/\"";
                        return -EINVAL;
                }
                if (d[0] == '0' && d[1]) {
                        *ret_error = "the prefix length must not have leading zeros";
                        return -EINVAL;
                }
                for (; *d; d++) {
                        if (*d < '0' || *d > '9') {
                                *ret_error = "the prefix length must be a number, e.g. /24";
                                return -EINVAL;
                        }
                        n = n * 10 + (unsigned) (*d - '0');
                        if (n > 128)
                                break;
                }
                if (n > max) {
                        *ret_error = v4 ? "IPv4 prefix length must be 0 to 32" : "IPv6 prefix length must be 0 to 128";
                        return -EINVAL;
                }
                m.prefix = n;
        }
        if (v4)
                m.prefix += 96;
        for (unsigned bit = m.prefix; bit < 128; bit++)
                if (m.addr[bit / 8] & (0x80 >> (bit % 8))) {
                        *ret_error = "host bits are set right of the prefix length";
                        return -EINVAL;
                }
        *ret = m;
        return 0;
}

bool netmask_contains(const struct netmask *m, const uint8_t addr[16]) {
        unsigned full = m->prefix / 8, rest = m->prefix % 8;

        if (memcmp(m->addr, addr, full) != 0)
                return false;
        if (rest == 0)
                return true;
        return ((m->addr[full] ^ addr[full]) & (uint8_t) (0xff << (8 - rest))) == 0;
}

char *netmask_format(const struct netmask *m, char *buf, size_t len) {
        char a[INET6_ADDRSTRLEN];

        if (is_v4_mapped(m->addr) && m->prefix >= 96) {
                inet_ntop(AF_INET, m->addr + 12, a, sizeof(a));
                snprintf(buf, len, "%s/%u", a, m->prefix - 96);
        } else {
                inet_ntop(AF_INET6, m->addr, a, sizeof(a));
                snprintf(buf, len, "%s/%u", a, m->prefix);
        }
        return buf;
}

static bool is_class_name(const char *s, size_t n) {
        static const char *const classes[] = {
                "alnum", "alpha", "blank", "cntrl", "digit", "graph",
                "lower", "print", "punct", "space", "upper", "xdigit",
        };
        for (size_t i = 0; i < ELEMENTSOF(classes); i++)
                if (strlen(classes[i]) == n && strncmp(s, classes[i], n) == 0)
                        return true;
        return false;
}

/* Length of the bracket expression starting at p ('['), or 0 when it never closes. */
static size_t bracket_len(const char *p, const char **ret_error) {
        const char *q = p + 1;

        if (*q == '!' || *q == '^')
                q++;
        if (*q == ']')
                q++;
        for (; *q && *q != ']'; q++) {
                if (*q == '\\' && q[1])
                        q++;
                else if (*q == '[' && (q[1] == ':' || q[1] == '=' || q[1] == '.')) {
                        char kind = q[1];
                        const char *end = q + 2;
                        while (*end && !(end[0] == kind && end[1] == ']'))
                                end++;
                        if (!*end) {
                                *ret_error = "unterminated [: :], [= =] or [. .] inside a bracket expression";
                                return 0;
                        }
                        if (kind == ':' && !is_class_name(q + 2, (size_t) (end - q - 2))) {
                                *ret_error = "unknown character class; use [:alpha:], [:digit:], [:alnum:], "
                                             "[:upper:], [:lower:], [:space:], [:punct:] or [:xdigit:]";
                                return 0;
                        }
                        q = end + 1;
                }
        }
        if (!*q) {
                *ret_error = "unbalanced \"[\"; escape a literal bracket with a backslash";
                return 0;
        }
        return (size_t) (q - p) + 1;
}

int glob_check(const char *pattern, const char **ret_error) {
        for (const char *p = pattern; *p; p++) {
                if (*p == '\\') {
                        if (!p[1]) {
                                *ret_error = "the pattern ends with a lone backslash";
                                return -EINVAL;
                        }
                        p++;
                } else if (*p == '[') {
                        size_t n = bracket_len(p, ret_error);
                        if (n == 0)
                                return -EINVAL;
                        p += n - 1;
                }
        }
        return 0;
}

/* FNV-1a: names are short, and the table is built from the operator's list. */
static uint32_t name_hash(const char *s) {
        uint32_t h = 2166136261u;
        for (; *s; s++)
                h = (h ^ (unsigned char) *s) * 16777619u;
        return h;
}

void name_list_compile(struct name_list *l) {
        size_t n_exact = 0;

        free(l->slots);
        free(l->globs);
        l->slots = NULL;
        l->globs = xcalloc(l->n + 1, sizeof(*l->globs));
        l->n_globs = 0;
        for (size_t i = 0; i < l->n; i++)
                n_exact += !strpbrk(l->patterns[i], "*?[\\");
        for (l->n_slots = n_exact ? 4 : 0; l->n_slots && l->n_slots < 2 * n_exact;)
                l->n_slots *= 2;
        if (l->n_slots)
                l->slots = xcalloc(l->n_slots, sizeof(*l->slots));
        for (size_t i = 0; i < l->n; i++) {
                if (strpbrk(l->patterns[i], "*?[\\")) {
                        l->globs[l->n_globs++] = (uint32_t) i;
                        continue;
                }
                for (size_t k = name_hash(l->patterns[i]) & (l->n_slots - 1);; k = (k + 1) & (l->n_slots - 1))
                        if (!l->slots[k]) {
                                l->slots[k] = (uint32_t) i + 1;
                                break;
                        }
        }
}

static bool exact_match(const struct name_list *l, const char *s) {
        if (!l->n_slots)
                return false;
        for (size_t k = name_hash(s) & (l->n_slots - 1); l->slots[k]; k = (k + 1) & (l->n_slots - 1))
                if (strcmp(l->patterns[l->slots[k] - 1], s) == 0)
                        return true;
        return false;
}

bool name_list_matches(const struct name_list *l, const char *s) {
        if (!l->globs) {
                for (size_t i = 0; i < l->n; i++)
                        if (fnmatch(l->patterns[i], s, 0) == 0)
                                return true;
                return false;
        }
        if (exact_match(l, s))
                return true;
        for (size_t i = 0; i < l->n_globs; i++)
                if (fnmatch(l->patterns[l->globs[i]], s, 0) == 0)
                        return true;
        return false;
}

bool addr_list_matches(const struct addr_list *l, const char *client_addr) {
        uint8_t addr[16];

        if (!client_addr || !*client_addr)
                return false;
        if (strcmp(client_addr, "local") == 0)
                return l->local;
        if (l->n == 0 || ip_parse(client_addr, addr) < 0)
                return false;
        for (size_t i = 0; i < l->n; i++)
                if (netmask_contains(&l->masks[i], addr))
                        return true;
        return false;
}

void name_list_done(struct name_list *l) {
        for (size_t i = 0; i < l->n; i++)
                free(l->patterns[i]);
        free(l->patterns);
        free(l->slots);
        free(l->globs);
        *l = (struct name_list) {};
}
