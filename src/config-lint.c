/* Warnings that need the whole file: a min_interval longer than the interval,
 * a rule that never acts because another always takes precedence. They never
 * fail the load. */
#include <stddef.h>
#include <string.h>
#include <yaml.h>

#include "config-internal.h"
#include "config.h"
#include "duration.h"
#include "filter.h"

/* The value node of key name in a mapping, or NULL. */
static yaml_node_t *find_value(struct parser *p, yaml_node_t *map, const char *name) {
        if (!map || map->type != YAML_MAPPING_NODE)
                return NULL;
        for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
                yaml_node_t *k = yaml_document_get_node(&p->doc, pair->key);
                if (k && k->type == YAML_SCALAR_NODE && strcmp((const char *) k->data.scalar.value, name) == 0)
                        return yaml_document_get_node(&p->doc, pair->value);
        }
        return NULL;
}

/* Does rule a act on every session that rule b would act on, and win? The
 * policy picks enforcing over dry-run, then the stronger action, then the
 * earlier rule. */
static bool rule_shadows(const struct rule *a, size_t ia, const struct rule *b, size_t ib) {
        bool b_has_limit = false;

        /* What a count or a threshold does depends on how many sessions
         * there are, not on any one session: never compared */
        if (a->limit_ms[LIMIT_SESSIONS] > 0 || a->connections_above > 0 || b->limit_ms[LIMIT_SESSIONS] > 0 ||
            b->connections_above > 0)
                return false;
        if (config_filter_never_matches(&b->filter))
                return false;  /* warned about already: it never matches at all */
        if (a->role != ROLE_ANY && a->role != b->role)
                return false;  /* b applies in a role where a does not */

        if (a->dry_run != b->dry_run) {
                if (a->dry_run)
                        return false;
        } else if (a->action != b->action) {
                if (a->action < b->action)
                        return false;
        } else if (ia > ib)
                return false;
        for (enum limit_kind l = 0; l < _LIMIT_MAX; l++) {
                if (b->limit_ms[l] == 0)
                        continue;
                b_has_limit = true;
                if (a->limit_ms[l] == 0 || a->limit_ms[l] > b->limit_ms[l])
                        return false;
                if (limit_is_chain(l) && rule_min_blocked(a, l) > rule_min_blocked(b, l))
                        return false;
        }
        return b_has_limit && filter_includes(&a->filter, &b->filter) &&
               (!a->exempt.set || filter_equal(&a->exempt, &b->exempt));
}

void config_cross_checks(struct parser *p, const struct config *c, yaml_node_t *root) {
        yaml_node_t *servers = find_value(p, root, "servers");
        char a[DURATION_FORMAT_MAX], b[DURATION_FORMAT_MAX];

        if (c->min_interval_ms > c->interval_ms && find_value(p, root, "min_interval"))
                warning_at(p, find_value(p, root, "min_interval"),
                           "\"min_interval\" (%s) is longer than \"interval\" (%s); polls happen at most every %s",
                           duration_format(c->min_interval_ms, a, sizeof(a)),
                           duration_format(c->interval_ms, b, sizeof(b)), a);
        if (!servers || servers->type != YAML_SEQUENCE_NODE || p->over_budget)
                return;
        for (size_t i = 0; i < c->n_servers && i < sequence_length(servers); i++) {
                const struct server *s = &c->servers[i];
                yaml_node_t *snode = sequence_item(p, servers, i);
                yaml_node_t *rules = find_value(p, snode, "rules");

                if (!s->name)
                        continue;
                for (size_t j = 0; rules && j < s->n_rules; j++)
                        for (size_t k = 0; k < s->n_rules; k++)
                                if (k != j && s->rules[j].name && s->rules[k].name &&
                                    rule_shadows(&s->rules[k], k, &s->rules[j], j)) {
                                        config_report(p, false, s->rules[j].pos,
                                                      "rule \"%s\" never acts in server \"%s\": rule \"%s\" "
                                                      "(line %u) catches every session it would and takes "
                                                      "precedence", s->rules[j].name, s->name, s->rules[k].name,
                                                      s->rules[k].pos.line);
                                        break;
                                }
        }
}
