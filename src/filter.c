/* Filters and exempt blocks: every key's list at once. */
#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "netmatch.h"
#include "policy.h"  /* struct snapshot_row */

void filter_finish(struct filter *f) {
        f->set = f->users.given || f->databases.given || f->applications.given || f->client_addresses.given ||
                 f->queries.given;
}

void filter_done(struct filter *f) {
        name_list_done(&f->users);
        name_list_done(&f->databases);
        name_list_done(&f->applications);
        name_list_done(&f->queries);
        free(f->client_addresses.masks);
        *f = (struct filter) {};
}

static bool name_list_equal(const struct name_list *a, const struct name_list *b) {
        if (a->given != b->given || a->n != b->n)
                return false;
        for (size_t i = 0; i < a->n; i++)
                if (strcmp(a->patterns[i], b->patterns[i]) != 0)
                        return false;
        return true;
}

static bool addr_list_equal(const struct addr_list *x, const struct addr_list *y) {
        return x->given == y->given && x->local == y->local && x->n == y->n &&
               (x->n == 0 || memcmp(x->masks, y->masks, x->n * sizeof(*x->masks)) == 0);
}

bool filter_includes(const struct filter *wide, const struct filter *narrow) {
        return (!wide->users.given || name_list_equal(&wide->users, &narrow->users)) &&
               (!wide->databases.given || name_list_equal(&wide->databases, &narrow->databases)) &&
               (!wide->applications.given || name_list_equal(&wide->applications, &narrow->applications)) &&
               (!wide->client_addresses.given ||
                addr_list_equal(&wide->client_addresses, &narrow->client_addresses)) &&
               (!wide->queries.given || name_list_equal(&wide->queries, &narrow->queries));
}

bool filter_equal(const struct filter *a, const struct filter *b) {
        return name_list_equal(&a->users, &b->users) && name_list_equal(&a->databases, &b->databases) &&
               name_list_equal(&a->applications, &b->applications) &&
               addr_list_equal(&a->client_addresses, &b->client_addresses) &&
               name_list_equal(&a->queries, &b->queries);
}

bool filter_matches(const struct filter *f, const struct snapshot_row *row) {
        if (f->users.given && !name_list_matches(&f->users, row->user))
                return false;
        if (f->databases.given && !name_list_matches(&f->databases, row->database))
                return false;
        if (f->applications.given && !name_list_matches(&f->applications, row->application))
                return false;
        if (f->client_addresses.given && !addr_list_matches(&f->client_addresses, row->client_addr))
                return false;
        if (f->queries.given && !(row->query && name_list_matches(&f->queries, row->query)))
                return false;
        return true;
}

bool filter_exempts(const struct filter *exempt, const struct snapshot_row *row) {
        return name_list_matches(&exempt->users, row->user) ||
               name_list_matches(&exempt->databases, row->database) ||
               name_list_matches(&exempt->applications, row->application) ||
               addr_list_matches(&exempt->client_addresses, row->client_addr) ||
               (row->query && name_list_matches(&exempt->queries, row->query));
}
