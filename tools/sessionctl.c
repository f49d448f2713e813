/* sessionctl: the operator's tool, in the style of loginctl.
 *
 * Global options are parsed here; `config` is handed to sessionctl-config.c
 * (it works without a daemon), every other verb talks Varlink to the daemon
 * through libsessiond's client.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "sessionctl.h"

static void usage(FILE *f) {
        fputs("Usage: sessionctl [-s SOCKET] [-c FILE] [--json] [--no-legend] VERB [ARGS...]\n"
              "\n"
              "Verbs:\n"
              "  config --validate|--show [--origin]|--summary|--set-env ENV|\n"
              "         --optimize-for ENV|--generate-template [--output FILE] [--format env|conf]\n",
              f);
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "socket", required_argument, NULL, 's' },
                { "config", required_argument, NULL, 'c' },
                { "json", no_argument, NULL, 'j' },
                { "no-legend", no_argument, NULL, 'L' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        struct sessionctl_globals g = {};
        int c;

        /* "+": stop at the verb, so that verbs parse their own options. */
        while ((c = getopt_long(argc, argv, "+s:c:h", options, NULL)) >= 0) {
                switch (c) {
                case 's': g.socket_path = optarg; break;
                case 'c': g.config_file = optarg; break;
                case 'j': g.json = true; break;
                case 'L': g.no_legend = true; break;
                case 'h': usage(stdout); return SESSIONCTL_EXIT_OK;
                default: usage(stderr); return SESSIONCTL_EXIT_USAGE;
                }
        }
        if (optind >= argc) {
                usage(stderr);
                return SESSIONCTL_EXIT_USAGE;
        }
        if (strcmp(argv[optind], "config") == 0)
                return sessionctl_config(argc - optind, argv + optind, &g);

        fprintf(stderr, "sessionctl: unknown verb '%s'\n", argv[optind]);
        usage(stderr);
        return SESSIONCTL_EXIT_USAGE;
}
