/* The daemon: sd-event loop, one timer per server, signals, reload. */
#pragma once

#include <stdbool.h>

#include "config.h"

struct manager_options {
        const char *config_path;
        bool dry_run;
        bool once;
};

/* Takes ownership of config. Returns the process exit code. */
int manager_run(const struct manager_options *opts, struct config *config);
