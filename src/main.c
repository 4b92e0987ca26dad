/* Command line only: everything else lives in the modules. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "build-config.h"
#include "config.h"
#include "escape.h"
#include "explain.h"
#include "log.h"
#include "manager.h"
#include "oneshot.h"

#define EXIT_USAGE  2
#define EXIT_CONFIG 78 /* EX_CONFIG */

static void usage(FILE *f) {
        fprintf(f,
                "Usage: pgsweeper [OPTIONS]\n"
                "       pgsweeper --explain [--from CAPTURE] [-c FILE] [--server NAME] [--json] [--dry-run]\n"
                "       pgsweeper --capture [-c FILE] [--server NAME]\n"
                "Cancel or terminate PostgreSQL sessions that break the configured rules.\n\n"
                "  -c, --config FILE        configuration file (default %s)\n"
                "      --check              validate the configuration and exit\n"
                "      --dump               validate, print the parsed configuration and exit\n"
                "      --once               run one cycle against every server and exit\n"
                "      --dry-run            judge and log, but never cancel or terminate\n"
                "      --explain            show what would happen to every session, and why\n"
                "      --from CAPTURE       with --explain: judge a capture, connecting nowhere\n"
                "      --capture            print every session the rules read, as JSON\n"
                "      --server NAME        with --explain or --capture: only this server;\n"
                "                           with --from: the server whose rules judge the capture\n"
                "      --json               with --explain: one JSON array\n"
                "      --log-target TARGET  auto, journal or stderr (default auto)\n"
                "  -v, --verbose            log debug messages too\n"
                "  -h, --help               show this help and exit\n"
                "  -V, --version            show the version and exit\n\n"
                "Exit status: 0 success, 1 runtime failure, 2 bad command line or unknown server,\n"
                "78 bad configuration or a file that is not a capture.\n",
                DEFAULT_CONFIG_PATH);
}

/* What the command line asks for. */
struct cli {
        struct manager_options opts;
        struct explain_options explain_opts;
        enum log_target target;
        bool check, dump, explain, capture;
        const char *from;                   /* --explain --from CAPTURE */
        int verbose;
};

#define CLI_CONTINUE (-1)

/* Parse argv into cli. CLI_CONTINUE, or the exit status (--help, --version,
 * a usage error). */
static int parse_args(int argc, char *argv[], struct cli *cli) {
        enum { OPT_CHECK = 0x100, OPT_DUMP, OPT_ONCE, OPT_DRY_RUN, OPT_LOG_TARGET, OPT_EXPLAIN, OPT_SERVER, OPT_JSON,
               OPT_CAPTURE, OPT_FROM };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "check", no_argument, NULL, OPT_CHECK },
                { "dump", no_argument, NULL, OPT_DUMP },
                { "once", no_argument, NULL, OPT_ONCE },
                { "dry-run", no_argument, NULL, OPT_DRY_RUN },
                { "log-target", required_argument, NULL, OPT_LOG_TARGET },
                { "explain", no_argument, NULL, OPT_EXPLAIN },
                { "server", required_argument, NULL, OPT_SERVER },
                { "json", no_argument, NULL, OPT_JSON },
                { "capture", no_argument, NULL, OPT_CAPTURE },
                { "from", required_argument, NULL, OPT_FROM },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        int c, r;

        *cli = (struct cli) { .opts.config_path = DEFAULT_CONFIG_PATH, .target = LOG_TARGET_AUTO };
        /* getopt's own messages would echo an option raw: ours escape it. */
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":c:vhV", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        cli->opts.config_path = optarg;
                        break;
                case OPT_CHECK:
                        cli->check = true;
                        break;
                case OPT_DUMP:
                        cli->dump = true;
                        break;
                case OPT_ONCE:
                        cli->opts.once = true;
                        break;
                case OPT_DRY_RUN:
                        cli->opts.dry_run = true;
                        break;
                case OPT_EXPLAIN:
                        cli->explain = true;
                        break;
                case OPT_SERVER:
                        cli->explain_opts.server = optarg;
                        break;
                case OPT_JSON:
                        cli->explain_opts.json = true;
                        break;
                case OPT_CAPTURE:
                        cli->capture = true;
                        break;
                case OPT_FROM:
                        cli->from = optarg;
                        break;
                case OPT_LOG_TARGET:
                        r = log_target_from_string(optarg);
                        if (r < 0) {
                                _cleanup_free_ char *arg = escape_string(optarg);
                                fprintf(stderr, "pgsweeper: invalid --log-target \"%s\": expected auto, journal or stderr\n",
                                        arg);
                                return EXIT_USAGE;
                        }
                        cli->target = (enum log_target) r;
                        break;
                case 'v':
                        cli->verbose++;
                        break;
                case 'h':
                        usage(stdout);
                        return EXIT_SUCCESS;
                case 'V':
                        printf("pgsweeper %s\n", PACKAGE_VERSION);
                        return EXIT_SUCCESS;
                default: {
                        /* a short option is named by optopt (it may sit inside "-xv"), a long one by its word */
                        char shortopt[3] = { '-', (char) optopt, '\0' };
                        _cleanup_free_ char *arg =
                                escape_string(optopt > ' ' && optopt < 0x7f ? shortopt : argv[optind - 1]);
                        fprintf(stderr, "pgsweeper: %s \"%s\"\n",
                                c == ':' ? "missing argument to option" : "invalid option", arg);
                        usage(stderr);
                        return EXIT_USAGE;
                }
                }
        }
        if (optind < argc) {
                _cleanup_free_ char *arg = escape_string(argv[optind]);
                fprintf(stderr, "pgsweeper: unexpected argument \"%s\"\n", arg);
                usage(stderr);
                return EXIT_USAGE;
        }
        if (!cli->explain && (cli->explain_opts.json || cli->from)) {
                fprintf(stderr, "pgsweeper: %s needs --explain\n", cli->explain_opts.json ? "--json" : "--from");
                return EXIT_USAGE;
        }
        if (!cli->explain && !cli->capture && cli->explain_opts.server) {
                fprintf(stderr, "pgsweeper: --server needs --explain or --capture\n");
                return EXIT_USAGE;
        }
        if (cli->explain && (cli->check || cli->dump || cli->opts.once || cli->capture)) {
                fprintf(stderr, "pgsweeper: --explain cannot be combined with --check, --dump, --once or --capture\n");
                return EXIT_USAGE;
        }
        if (cli->capture && (cli->check || cli->dump || cli->opts.once || cli->opts.dry_run)) {
                fprintf(stderr, "pgsweeper: --capture cannot be combined with --check, --dump, --once or --dry-run\n");
                return EXIT_USAGE;
        }
        return CLI_CONTINUE;
}

int main(int argc, char *argv[]) {
        struct diagnostics diag = {};
        struct config *config = NULL;
        struct cli cli;
        int r = parse_args(argc, argv, &cli);

        if (r != CLI_CONTINUE)
                return r;
        r = config_load(cli.opts.config_path, &config, &diag);
        for (size_t i = 0; i < diag.n_lines; i++)
                fprintf(stderr, "%s\n", diag.lines[i]);
        diagnostics_clear(&diag);
        if (r < 0)
                return EXIT_CONFIG;
        if (cli.dump) {
                config_dump(config, stdout);
                config_free(config);
                return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
        }
        if (cli.check) {
                printf("configuration OK\n");
                config_free(config);
                return EXIT_SUCCESS;
        }
        if (cli.explain) {
                /* Never the journal: explain reports on stdout and stderr only. */
                cli.explain_opts.dry_run = cli.opts.dry_run;
                r = cli.from ? explain_replay(config, &cli.explain_opts, cli.from, stdout)
                             : explain_run(config, &cli.explain_opts, stdout);
                config_free(config);
                return r;
        }
        if (cli.capture) {
                r = capture_run(config, cli.explain_opts.server, stdout);
                config_free(config);
                return r;
        }
        log_setup(cli.target, cli.verbose > 0 ? LOG_DEBUG : LOG_INFO);
        return manager_run(&cli.opts, config);
}
