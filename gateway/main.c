/*
 * mandate-gateway: flags, configuration check, then the server.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/version.h"
#include "gateway/config.h"
#include "gateway/server.h"

static const char usage[] =
    "usage: mandate-gateway --config FILE [--check-config]\n"
    "       mandate-gateway --version | --help\n"
    "\n"
    "  --config FILE    gateway.json (SPEC §2.4)\n"
    "  --check-config   validate the configuration, print every error, exit 0 or 1\n";

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, 0, 'c'},
                                         {"check-config", no_argument, 0, 'k'},
                                         {"version", no_argument, 0, 'v'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *path = NULL;
    int check = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            check = 1;
            break;
        case 'v':
            printf("mandate-gateway %s\n", MANDATE_VERSION);
            return 0;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 1;
        }
    }
    if (!path || optind != argc) {
        fputs(usage, stderr);
        return 1;
    }
    struct cfg cf;
    struct config *conf = config_load(path, &cf);
    cfg_print_errors(&cf);
    cfg_clear(&cf);
    if (!conf)
        return 1;
    if (check) {
        printf("%s: ok\n", path);
        config_free(conf);
        return 0;
    }
    return server_run(conf);
}
