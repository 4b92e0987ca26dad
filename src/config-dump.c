/* --dump: the parsed configuration as YAML that loads back to the same one. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "conninfo.h"
#include "escape.h"
#include "filter.h"
#include "macro.h"
#include "netmatch.h"

/* Exact and loadable again: "1h30m", "1m0s5ms" never; "1m5ms". */
static void dump_duration(FILE *f, int64_t ms) {
        static const struct {
                const char *suffix;
                int64_t ms;
        } parts[] = { { "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 }, { "ms", 1 } };

        for (size_t i = 0; i < ELEMENTSOF(parts); i++)
                if (ms >= parts[i].ms) {
                        fprintf(f, "%" PRId64 "%s", ms / parts[i].ms, parts[i].suffix);
                        ms %= parts[i].ms;
                }
        fputc('\n', f);
}

/* A YAML double-quoted scalar that reads back byte for byte, escaped as
 * every other output is (escape_yaml). */
static void dump_string(FILE *f, const char *s) {
        _cleanup_free_ char *q = escape_yaml(s);

        fputs(q, f);
}

static void dump_name_list(FILE *f, const char *indent, const char *key, const struct name_list *l) {
        if (!l->given)
                return;
        fprintf(f, "%s%s: [", indent, key);
        for (size_t i = 0; i < l->n; i++) {
                fputs(i ? ", " : "", f);
                dump_string(f, l->patterns[i]);
        }
        fputs("]\n", f);
}

static void dump_filter(FILE *f, const char *indent, const struct filter *flt) {
        const struct addr_list *a = &flt->client_addresses;

        dump_name_list(f, indent, "users", &flt->users);
        dump_name_list(f, indent, "databases", &flt->databases);
        dump_name_list(f, indent, "applications", &flt->applications);
        dump_name_list(f, indent, "queries", &flt->queries);
        if (a->given) {
                fprintf(f, "%sclient_addresses: [%s", indent, a->local ? "local" : "");
                for (size_t i = 0; i < a->n; i++) {
                        char buf[NETMASK_FORMAT_MAX];
                        fprintf(f, "%s\"%s\"", i || a->local ? ", " : "", netmask_format(&a->masks[i], buf, sizeof(buf)));
                }
                fputs("]\n", f);
        }
}

static void dump_exempt(FILE *f, const char *indent, const char *inner, const struct filter *flt) {
        if (!flt->set)
                return;
        fprintf(f, "%sexempt:\n", indent);
        dump_filter(f, inner, flt);
}

/* Options in libpq's order, values quoted; secrets (dispchar '*') as ***. */
static void dump_conninfo(FILE *f, const char *conninfo) {
        _cleanup_free_ char *text = conninfo_redacted(conninfo);

        if (!text) {
                fputs("\"\"\n", f);
                return;
        }
        dump_string(f, text);
        fputc('\n', f);
}

/* A list of rules (a set's, or a server's own: a set's copies are skipped). */
static void dump_rules(FILE *f, const char *item, const char *field, const char *sub, const struct rule *rules,
               size_t n) {
        for (size_t j = 0; j < n; j++) {
                const struct rule *r = &rules[j];

                if (r->shared)
                        continue;   /* its set is written out, and named by the server */

                fprintf(f, "%s- name: ", item);
                dump_string(f, r->name);
                fputc('\n', f);
                for (enum limit_kind l = 0; l < _LIMIT_MAX; l++)
                        if (r->limit_ms[l] > 0 && !limit_is_duration(l))
                                fprintf(f, "%s%s: %" PRId64 "\n", field, limit_kind_to_string(l),
                                        r->limit_ms[l]);
                        else if (r->limit_ms[l] > 0) {
                                fprintf(f, "%s%s: ", field, limit_kind_to_string(l));
                                dump_duration(f, r->limit_ms[l]);
                        }
                /* With both lock limits and no min_blocked, each has its own
                 * default: no single value says that. */
                if (r->min_blocked >= 0 || (rule_reads_locks(r) &&
                                            !(r->limit_ms[LIMIT_BLOCKING] > 0 && r->limit_ms[LIMIT_LOCK_WAIT] > 0)))
                        fprintf(f, "%smin_blocked: %" PRId64 "\n", field,
                                rule_min_blocked(r, r->limit_ms[LIMIT_BLOCKING] > 0 ? LIMIT_BLOCKING
                                                                                    : LIMIT_LOCK_WAIT));
                if (r->limit_ms[LIMIT_SESSIONS] > 0) {
                        if (r->per != GROUP_ALL)
                                fprintf(f, "%sper: %s\n", field, group_key_to_string(r->per));
                        fprintf(f, "%smin_idle: ", field);
                        if (r->min_idle_ms > 0)
                                dump_duration(f, r->min_idle_ms);
                        else
                                fputs("0s\n", f);
                }
                if (r->connections_above > 0)
                        fprintf(f, "%swhen_connections_above: %" PRId64 "%s\n", field, r->connections_above,
                                r->connections_above_percent ? "%" : "");
                fprintf(f, "%saction: %s\n", field, action_to_string(r->action));
                if (r->escalate_after_ms > 0) {
                        fprintf(f, "%sescalate_after: ", field);
                        dump_duration(f, r->escalate_after_ms);
                }
                fprintf(f, "%sdry_run: %s\n", field, r->dry_run ? "true" : "false");
                fprintf(f, "%srole: %s\n", field, server_role_to_string(r->role));
                dump_filter(f, field, &r->filter);
                dump_exempt(f, field, sub, &r->exempt);
        }
}


void config_dump(const struct config *c, FILE *f) {
        fputs("interval: ", f);
        dump_duration(f, c->interval_ms);
        fputs("min_interval: ", f);
        dump_duration(f, c->min_interval_ms);
        fprintf(f, "dry_run: %s\n", c->dry_run ? "true" : "false");
        fprintf(f, "log_query: %s\n", c->log_query ? "true" : "false");
        if (c->metrics_file) {
                fputs("metrics_file: ", f);
                dump_string(f, c->metrics_file);
                fputc('\n', f);
        }
        fprintf(f, "max_actions_per_cycle: %u\n", c->max_actions_per_cycle);
        dump_exempt(f, "", "  ", &c->exempt);
        if (c->n_rule_sets > 0) {
                fputs("rule_sets:\n", f);
                for (size_t i = 0; i < c->n_rule_sets; i++) {
                        fputs("  ", f);
                        dump_string(f, c->rule_sets[i].name);
                        fputs(":\n", f);
                        dump_rules(f, "    ", "      ", "        ", c->rule_sets[i].rules, c->rule_sets[i].n_rules);
                }
        }
        fputs("servers:\n", f);
        for (size_t i = 0; i < c->n_servers; i++) {
                const struct server *s = &c->servers[i];

                if (s->file) {
                        /* where it came from; a comment, so the dump still loads as it is */
                        _cleanup_free_ char *file = escape_string(s->file);
                        fprintf(f, "  # from %s\n", file);
                }
                fputs("  - name: ", f);
                dump_string(f, s->name);
                fputs("\n    conninfo: ", f);
                dump_conninfo(f, s->conninfo);
                fputs("    interval: ", f);
                dump_duration(f, s->interval_ms);
                fprintf(f, "    max_actions_per_cycle: %u\n", s->max_actions_per_cycle);
                fprintf(f, "    terminate_superusers: %s\n", s->terminate_superusers ? "true" : "false");
                dump_exempt(f, "    ", "      ", &s->exempt);
                if (s->n_rule_sets > 0) {
                        fputs("    rule_sets: [", f);
                        for (size_t k = 0; k < s->n_rule_sets; k++) {
                                fputs(k ? ", " : "", f);
                                dump_string(f, s->rule_sets[k]);
                        }
                        fputs("]\n", f);
                }
                for (size_t j = 0; j < s->n_rules; j++)
                        if (!s->rules[j].shared) {
                                fputs("    rules:\n", f);
                                break;
                        }
                dump_rules(f, "      ", "        ", "          ", s->rules, s->n_rules);
        }
}
