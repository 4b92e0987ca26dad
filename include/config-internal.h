/* Private to the configuration parser: shared by src/config-*.c and
 * src/diagnostics.c only, never installed, never included elsewhere. The
 * public interface is config.h. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "config.h"
#include "macro.h"

#define CONFIG_MAX_DIAGNOSTICS 1000
#define DIAG_SLOTS             2048  /* > 2 * CONFIG_MAX_DIAGNOSTICS, power of two */

/* One load of one file: the document, and what was found in it so far. */
struct parser {
        const char *file;
        bool included;              /* an included file: "servers" only */
        bool doc_loaded;
        yaml_document_t doc;
        struct diagnostics *diag;
        /* unsorted diagnostics with their position, sorted into diag at the end */
        struct pending {
                unsigned line, column, seq;
                bool error;
                char *text;
        } *pending;
        size_t n_pending;
        /* a node reached through several aliases reports its problems once */
        uint32_t slots[DIAG_SLOTS];
        bool failed;
        bool truncated;
        size_t work;
        bool over_budget;
        /* per node, a bit per table where it was reported as an unknown key:
         * the suggestions are costly and an alias repeats them */
        uint8_t *unknown_key_reported;
};

static inline struct source_pos pos_of(const yaml_node_t *node) {
        return (struct source_pos) { node->start_mark.line + 1, node->start_mark.column + 1 };
}

static inline size_t sequence_length(const yaml_node_t *node) {
        return (size_t) (node->data.sequence.items.top - node->data.sequence.items.start);
}

static inline yaml_node_t *sequence_item(struct parser *p, const yaml_node_t *node, size_t i) {
        return yaml_document_get_node(&p->doc, node->data.sequence.items.start[i]);
}

/* diagnostics.c: "FILE:LINE:COL: error: ..." (no position when pos.line is
 * 0), kept once per text, sorted by position when flushed into p->diag. */
void config_report(struct parser *p, bool error, struct source_pos pos, const char *fmt, ...) _printf_(4, 5);
void config_flush_diagnostics(struct parser *p);

#define error_at(p, node, ...)   config_report(p, true, pos_of(node), __VA_ARGS__)
#define warning_at(p, node, ...) config_report(p, false, pos_of(node), __VA_ARGS__)

/* config-schema.c: walk the document's root mapping into c (the main file;
 * an included file's servers are appended); config_finish() fills in the
 * defaults once every file is read. */
void config_walk(struct parser *p, yaml_node_t *root, struct config *c);
void config_finish(struct config *c);
/* Give servers[from..] (walked by p) the rules of the rule sets they name
 * (c->rule_sets, from the main file), before their own. */
void config_resolve_sets(struct parser *p, struct config *c, size_t from);
/* A server of servers[from..] (walked by p) whose name one of an earlier
 * file has; idx indexes the names seen so far (zeroed before the first call,
 * its slots freed after the last). */
struct name_index {
        size_t *slots;
        size_t n_slots;
        size_t indexed;
};
void config_check_server_names(struct parser *p, const struct config *c, size_t from, struct name_index *idx);
void config_parser_done(struct parser *p);
/* Free what a config holds, not the struct itself (a part of one, on the stack). */
void config_free_parts(struct config *c);
/* Is a key of the filter written as an empty list, so that it matches no session? */
bool config_filter_never_matches(const struct filter *f);

/* config-lint.c: warnings that need the whole file; they never fail the load. */
void config_cross_checks(struct parser *p, const struct config *c, yaml_node_t *root);
