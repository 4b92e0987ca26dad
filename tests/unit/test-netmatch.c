#include <errno.h>
#include <stdlib.h>

#include "macro.h"
#include "netmatch.h"
#include "policy.h"
#include "unit.h"

static const struct {
        const char *mask;
        const char *addr;
        bool match;
} contains[] = {
        /* /0 */
        { "0.0.0.0/0", "0.0.0.0", true },
        { "0.0.0.0/0", "255.255.255.255", true },
        { "0.0.0.0/0", "::ffff:1.2.3.4", true },
        { "0.0.0.0/0", "::1", false },
        { "0.0.0.0/0", "2001:db8::1", false },
        { "::/0", "::1", true },
        { "::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true },
        { "::/0", "10.1.2.3", true },
        /* /32 and single IPv4 hosts */
        { "10.1.2.3/32", "10.1.2.3", true },
        { "10.1.2.3/32", "10.1.2.4", false },
        { "10.1.2.3", "10.1.2.3", true },
        { "10.1.2.3", "10.1.2.2", false },
        { "10.1.2.3", "::ffff:10.1.2.3", true },
        { "255.255.255.255/32", "255.255.255.255", true },
        /* IPv4 blocks, boundaries */
        { "10.0.0.0/8", "10.0.0.0", true },
        { "10.0.0.0/8", "10.255.255.255", true },
        { "10.0.0.0/8", "11.0.0.0", false },
        { "10.0.0.0/8", "9.255.255.255", false },
        { "192.168.0.0/16", "192.168.200.1", true },
        { "192.168.0.0/16", "192.169.0.1", false },
        { "172.16.0.0/12", "172.31.255.255", true },
        { "172.16.0.0/12", "172.32.0.0", false },
        { "10.0.0.128/25", "10.0.0.127", false },
        { "10.0.0.128/25", "10.0.0.128", true },
        { "10.0.0.128/25", "10.0.0.255", true },
        { "128.0.0.0/1", "127.255.255.255", false },
        { "128.0.0.0/1", "128.0.0.0", true },
        { "10.0.0.0/31", "10.0.0.1", true },
        { "10.0.0.0/31", "10.0.0.2", false },
        /* v4-mapped both ways */
        { "10.0.0.0/8", "::ffff:10.0.0.1", true },
        { "10.0.0.0/8", "::ffff:a00:1", true },
        { "10.0.0.0/8", "::ffff:11.0.0.1", false },
        { "::ffff:10.0.0.0/104", "10.20.30.40", true },
        { "::ffff:10.0.0.0/104", "11.20.30.40", false },
        { "::ffff:0:0/96", "1.2.3.4", true },
        { "::ffff:10.0.0.1", "10.0.0.1", true },
        { "::ffff:10.0.0.1/128", "10.0.0.2", false },
        /* IPv4-compatible (deprecated) is not v4-mapped */
        { "10.0.0.0/8", "::10.0.0.1", false },
        /* IPv6 */
        { "::1", "::1", true },
        { "::1/128", "::1", true },
        { "::1", "::2", false },
        { "::1", "127.0.0.1", false },
        { "127.0.0.1", "::1", false },
        { "fe80::/10", "fe80::1", true },
        { "fe80::/10", "febf:ffff::1", true },
        { "fe80::/10", "fec0::1", false },
        { "2001:db8::/32", "2001:db8:ffff::1", true },
        { "2001:db8::/32", "2001:db9::1", false },
        { "2001:db8::/127", "2001:db8::1", true },
        { "2001:db8::/127", "2001:db8::2", false },
        { "2001:db8::1/128", "2001:db8:0:0:0:0:0:1", true },
        { "2001:DB8::/32", "2001:db8::1", true },
        { "8000::/1", "7fff::1", false },
        { "8000::/1", "8000::", true },
};

static const struct {
        const char *in;
        const char *error_part;
} bad[] = {
        { "", "expected an IP address" },
        { "/8", "expected an IP address" },
        { "10.0.0.0/", "missing prefix" },
        { "10.0.0.0/33", "0 to 32" },
        { "10.0.0.0/99999999999", "0 to 32" },
        { "::/129", "0 to 128" },
        { "::/1000", "0 to 128" },
        { "10.0.0.0/-1", "must be a number" },
        { "10.0.0.0/+8", "must be a number" },
        { "10.0.0.0/8x", "must be a number" },
        { "10.0.0.0/ 8", "must be a number" },
        { "10.0.0.0/08", "leading zeros" },
        { "10.0.0.1/8", "host bits" },
        { "11.0.0.0/7", "host bits" },
        { "0.0.0.1/0", "host bits" },
        { "::1/0", "host bits" },
        { "fe80::1/10", "host bits" },
        { "::ffff:10.0.0.1/104", "host bits" },
        { "10.0.0", "not an IPv4" },
        { "10.0.0.256", "not an IPv4" },
        { "010.0.0.1", "not an IPv4" },
        { "localhost", "host names" },
        { "example.com/24", "host names" },
        { "10.0.0.0/8/8", "must be a number" },
        { "1::2::3", "not a valid IPv6" },
        { "::g", "not a valid IPv6" },
        { "fe80::1%eth0", "zone" },
        { "12345678901234567890123456789012345678901234567890", "expected an IP address" },
};

static const struct {
        const char *mask;
        const char *canonical;
} formats[] = {
        { "10.0.0.0/8", "10.0.0.0/8" },
        { "10.1.2.3", "10.1.2.3/32" },
        { "0.0.0.0/0", "0.0.0.0/0" },
        { "::/0", "::/0" },
        { "::1", "::1/128" },
        { "::ffff:10.0.0.0/104", "10.0.0.0/8" },
        { "::fffe:0:0/95", "::fffe:0:0/95" },
        { "::ffff:0:0/96", "0.0.0.0/0" },
        { "2001:DB8:0::/48", "2001:db8::/48" },
};

static const struct {
        const char *pattern;
        bool ok;
} globs[] = {
        { "", true },
        { "app", true },
        { "report_*", true },
        { "a?c", true },
        { "[abc]*", true },
        { "[!abc]", true },
        { "[^abc]", true },
        { "[]]", true },
        { "[!]]", true },
        { "[a-z]", true },
        { "[[:alpha:]_]*", true },
        { "[[:digit:][:upper:]]", true },
        { "\\[literal", true },
        { "x]", true },
        { "[\\]]", true },
        { "[", false },
        { "[abc", false },
        { "report_[", false },
        { "[]", false },
        { "[!]", false },
        { "[[:alpha:]", false },
        { "[[:nope:]]", false },
        { "[[:alpha]]", false },
        { "trailing\\", false },
};

static void test_contains(void) {
        for (size_t i = 0; i < sizeof(contains) / sizeof(contains[0]); i++) {
                struct netmask m;
                uint8_t a[16];
                const char *why = NULL;

                CHECK_AT(netmask_parse(contains[i].mask, &m, &why) == 0, __FILE__, __LINE__, "parse %s: %s",
                         contains[i].mask, why ? why : "");
                CHECK_AT(ip_parse(contains[i].addr, a) == 0, __FILE__, __LINE__, "ip %s", contains[i].addr);
                CHECK_AT(netmask_contains(&m, a) == contains[i].match, __FILE__, __LINE__, "%s in %s: want %d",
                         contains[i].addr, contains[i].mask, contains[i].match);
        }
}

static void test_bad(void) {
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct netmask m;
                const char *why = NULL;
                int r = netmask_parse(bad[i].in, &m, &why);

                CHECK_AT(r == -EINVAL, __FILE__, __LINE__, "\"%s\" parsed", bad[i].in);
                CHECK_AT(why && strstr(why, bad[i].error_part), __FILE__, __LINE__, "\"%s\": got \"%s\", want \"%s\"",
                         bad[i].in, why ? why : "(null)", bad[i].error_part);
        }
        uint8_t a[16];
        CHECK(ip_parse("", a) == -EINVAL);
        CHECK(ip_parse("local", a) == -EINVAL);
        CHECK(ip_parse("10.0.0.0/8", a) == -EINVAL);
}

static void test_prefix_sweep(void) {
        /* every prefix length of both families, against the block's first and last address and beyond */
        for (unsigned len = 0; len <= 128; len++) {
                struct netmask m = { .prefix = len };
                uint8_t in[16] = {}, out[16] = {};

                memset(m.addr, 0, 16);
                if (len > 0)
                        m.addr[0] = 0x80;  /* 8000::/len, host bits clear for len >= 1 */
                memcpy(in, m.addr, 16);
                for (unsigned bit = len; bit < 128; bit++)
                        in[bit / 8] |= (uint8_t) (0x80 >> (bit % 8));  /* last address of the block */
                CHECK_AT(netmask_contains(&m, m.addr), __FILE__, __LINE__, "first of /%u", len);
                CHECK_AT(netmask_contains(&m, in), __FILE__, __LINE__, "last of /%u", len);
                if (len > 0) {
                        memcpy(out, m.addr, 16);
                        out[(len - 1) / 8] ^= (uint8_t) (0x80 >> ((len - 1) % 8));  /* flip the last prefix bit */
                        CHECK_AT(!netmask_contains(&m, out), __FILE__, __LINE__, "outside /%u", len);
                }
        }
        for (unsigned len = 0; len <= 32; len++) {
                char text[32];
                struct netmask m;
                const char *why;
                uint8_t a[16];

                snprintf(text, sizeof(text), "%s/%u", len ? "128.0.0.0" : "0.0.0.0", len);
                CHECK_AT(netmask_parse(text, &m, &why) == 0 && m.prefix == len + 96, __FILE__, __LINE__, "%s", text);
                CHECK_AT(ip_parse("255.255.255.255", a) == 0 && netmask_contains(&m, a) == (len <= 1), __FILE__,
                         __LINE__, "255.255.255.255 in %s", text);
        }
}

static void test_format(void) {
        for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
                struct netmask m;
                const char *why;
                char buf[NETMASK_FORMAT_MAX];

                CHECK(netmask_parse(formats[i].mask, &m, &why) == 0);
                CHECK_STR(netmask_format(&m, buf, sizeof(buf)), formats[i].canonical, formats[i].mask);
        }
}

static void test_globs(void) {
        for (size_t i = 0; i < sizeof(globs) / sizeof(globs[0]); i++) {
                const char *why = NULL;
                int r = glob_check(globs[i].pattern, &why);
                CHECK_AT((r == 0) == globs[i].ok, __FILE__, __LINE__, "glob \"%s\": got %d (%s)", globs[i].pattern, r,
                         why ? why : "");
        }
}

static char *dup(const char *s) {
        char *p = strdup(s);
        if (!p)
                abort();
        return p;
}

static struct name_list names(size_t n, const char *const *v) {
        struct name_list l = { .patterns = calloc(n + 1, sizeof(char *)), .n = n, .given = true };
        for (size_t i = 0; i < n; i++)
                l.patterns[i] = dup(v[i]);
        return l;
}

static struct addr_list addrs(size_t n, const char *const *v) {
        struct addr_list l = { .masks = calloc(n + 1, sizeof(struct netmask)), .given = true };
        for (size_t i = 0; i < n; i++) {
                const char *why;
                if (strcmp(v[i], "local") == 0)
                        l.local = true;
                else if (netmask_parse(v[i], &l.masks[l.n], &why) == 0)
                        l.n++;
        }
        return l;
}

#define NAMES(...) names(sizeof((const char *[]) { __VA_ARGS__ }) / sizeof(char *), (const char *[]) { __VA_ARGS__ })
#define ADDRS(...) addrs(sizeof((const char *[]) { __VA_ARGS__ }) / sizeof(char *), (const char *[]) { __VA_ARGS__ })

static struct snapshot_row row(const char *user, const char *db, const char *app, const char *addr) {
        return (struct snapshot_row) { .user = user, .database = db, .application = app, .client_addr = addr };
}

static void test_name_lists(void) {
        struct name_list l = NAMES("report_*", "app", "[[:upper:]]x?", "");

        CHECK(name_list_matches(&l, "report_1"));
        CHECK(name_list_matches(&l, "report_"));
        CHECK(!name_list_matches(&l, "reports"));
        CHECK(name_list_matches(&l, "app"));
        CHECK(!name_list_matches(&l, "App"));  /* case-sensitive, like role names */
        CHECK(!name_list_matches(&l, "apps"));
        CHECK(name_list_matches(&l, "Axy"));
        CHECK(!name_list_matches(&l, "axy"));
        CHECK(name_list_matches(&l, ""));       /* empty pattern: unset application_name */
        CHECK(!name_list_matches(&l, "x/y"));
        struct name_list slash = NAMES("a*");
        CHECK(name_list_matches(&slash, "a/b"));  /* no FNM_PATHNAME */
        CHECK(name_list_matches(&slash, "a.b"));
        struct name_list esc = NAMES("a\\*");
        CHECK(name_list_matches(&esc, "a*"));
        CHECK(!name_list_matches(&esc, "ab"));
        struct name_list none = { .given = true };
        CHECK(!name_list_matches(&none, "x"));
        CHECK(!name_list_matches(&none, ""));
        struct filter f = { .users = l }, g = { .users = slash }, h = { .users = esc };
        filter_done(&f);
        filter_done(&g);
        filter_done(&h);
        CHECK(f.users.n == 0 && f.users.patterns == NULL);
}

/* The compiled list (exact names hashed, globs apart) answers exactly as
 * trying every pattern does, for many names, collisions and every kind of
 * glob character. */
static void test_compiled_name_lists(void) {
        static const char *const probes[] = {
                "", "u0", "u1", "u999", "u1000", "u0x", "report_7", "report_", "reports", "a*", "ab", "a\\*",
                "Zq", "zq", "user 5", "user\n5", "é", "x?", "x!",
        };
        struct name_list plain = { .given = true }, compiled = { .given = true };
        char name[32];

        plain.patterns = calloc(1100, sizeof(char *));
        compiled.patterns = calloc(1100, sizeof(char *));
        for (int i = 0; i < 1000; i++) {
                snprintf(name, sizeof(name), "u%d", i * 3);
                plain.patterns[plain.n++] = dup(name);
                compiled.patterns[compiled.n++] = dup(name);
        }
        const char *const extra[] = { "report_*", "a\\*", "[[:upper:]]q", "x?", "", "user 5", "é" };
        for (size_t i = 0; i < ELEMENTSOF(extra); i++) {
                plain.patterns[plain.n++] = dup(extra[i]);
                compiled.patterns[compiled.n++] = dup(extra[i]);
        }
        name_list_compile(&compiled);
        CHECK_INT(compiled.n_globs, 4, "globs kept apart");
        for (int i = 0; i < 3100; i++) {
                snprintf(name, sizeof(name), "u%d", i);
                CHECK_AT(name_list_matches(&plain, name) == name_list_matches(&compiled, name), __FILE__, __LINE__,
                         "%s", name);
                CHECK_AT(name_list_matches(&compiled, name) == (i % 3 == 0 && i < 3000), __FILE__, __LINE__, "%s", name);
        }
        for (size_t i = 0; i < ELEMENTSOF(probes); i++)
                CHECK_AT(name_list_matches(&plain, probes[i]) == name_list_matches(&compiled, probes[i]), __FILE__,
                         __LINE__, "probe \"%s\"", probes[i]);
        CHECK(name_list_matches(&compiled, "report_7"));
        CHECK(name_list_matches(&compiled, "a*"));
        CHECK(!name_list_matches(&compiled, "ab"));
        CHECK(name_list_matches(&compiled, ""));
        CHECK(name_list_matches(&compiled, "user 5"));
        CHECK(!name_list_matches(&compiled, "u1"));
        struct filter f = { .users = plain }, g = { .users = compiled };
        filter_done(&f);
        filter_done(&g);

        struct name_list empty = { .given = true };
        name_list_compile(&empty);
        CHECK(!name_list_matches(&empty, ""));
        free(empty.globs);
}

static void test_addr_lists(void) {
        struct addr_list l = ADDRS("10.0.0.0/8", "::1");
        struct addr_list loc = ADDRS("local");
        struct addr_list all = ADDRS("::/0");

        CHECK(addr_list_matches(&l, "10.2.3.4"));
        CHECK(addr_list_matches(&l, "::ffff:10.2.3.4"));
        CHECK(addr_list_matches(&l, "::1"));
        CHECK(!addr_list_matches(&l, "127.0.0.1"));
        CHECK(!addr_list_matches(&l, "local"));
        CHECK(!addr_list_matches(&l, ""));
        CHECK(!addr_list_matches(&l, NULL));
        CHECK(!addr_list_matches(&l, "garbage"));
        CHECK(addr_list_matches(&loc, "local"));
        CHECK(!addr_list_matches(&loc, "127.0.0.1"));
        CHECK(!addr_list_matches(&loc, ""));
        CHECK(addr_list_matches(&all, "1.2.3.4"));
        CHECK(addr_list_matches(&all, "2001:db8::1"));
        CHECK(!addr_list_matches(&all, "local"));
        free(l.masks);
        free(loc.masks);
        free(all.masks);
}

static void test_filters(void) {
        struct filter none = {};
        struct filter f = {
                .users = NAMES("report_*"),
                .databases = NAMES("analytics", "dwh"),
                .client_addresses = ADDRS("10.0.0.0/8", "local"),
                .set = true,
        };
        struct filter ex = { .users = NAMES("postgres"), .applications = NAMES("pg_dump*"), .set = true };
        struct filter empty = { .users = { .given = true }, .set = true };
        struct snapshot_row r1 = row("report_1", "analytics", "metabase", "10.9.9.9");
        struct snapshot_row r2 = row("report_1", "analytics", "metabase", "local");
        struct snapshot_row r3 = row("report_1", "appdb", "metabase", "10.9.9.9");
        struct snapshot_row r4 = row("app", "dwh", "psql", "10.9.9.9");
        struct snapshot_row r5 = row("report_1", "dwh", "", "192.168.1.1");
        struct snapshot_row r6 = row("postgres", "dwh", "psql", "");
        struct snapshot_row r7 = row("bob", "x", "pg_dump", "local");

        CHECK(filter_matches(&none, &r1));
        CHECK(!filter_exempts(&none, &r1));
        CHECK(filter_matches(&f, &r1));
        CHECK(filter_matches(&f, &r2));
        CHECK(!filter_matches(&f, &r3));  /* database */
        CHECK(!filter_matches(&f, &r4));  /* user */
        CHECK(!filter_matches(&f, &r5));  /* address */
        CHECK(!filter_matches(&empty, &r1));
        CHECK(!filter_exempts(&empty, &r1));
        /* exempt: ANY entry of ANY key */
        CHECK(filter_exempts(&ex, &r6));
        CHECK(filter_exempts(&ex, &r7));
        CHECK(!filter_exempts(&ex, &r1));
        /* an exempt block with the same keys as a filter is an OR, not an AND */
        CHECK(filter_exempts(&f, &r3));
        CHECK(filter_exempts(&f, &r4));
        CHECK(filter_exempts(&f, &r5));
        struct snapshot_row r8 = row("x", "y", "z", "192.168.0.1");
        CHECK(!filter_exempts(&f, &r8));

        CHECK(filter_equal(&f, &f));
        CHECK(!filter_equal(&f, &ex));
        CHECK(filter_includes(&none, &f));
        CHECK(filter_includes(&f, &f));
        CHECK(!filter_includes(&f, &none));
        filter_done(&f);
        filter_done(&ex);
        filter_done(&empty);
}

int main(void) {
        test_contains();
        test_bad();
        test_prefix_sweep();
        test_format();
        test_globs();
        test_name_lists();
        test_compiled_name_lists();
        test_addr_lists();
        test_filters();
        return unit_finish("test-netmatch");
}
