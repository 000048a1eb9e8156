/*
 * mandate-wallet: flags, the keygen command, configuration check, then the service.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "core/version.h"
#include "wallet/cli.h"
#include "wallet/config.h"
#include "wallet/keygen.h"
#include "wallet/service.h"

static const char usage[] =
    "usage: mandate-wallet --config FILE [--check-config]\n"
    "       mandate-wallet keygen --alg ES256|EdDSA --kid KID --out KEY.pem --jwks KEYS.jwks.json"
    " [--pub KEY.pub.pem]\n"
    "       mandate-wallet approvals | approve ID | deny ID --config FILE"
    " [--admin-token-file FILE]\n"
    "       mandate-wallet sign-cart --key KEY.pem --kid KID --merchant M --principal P"
    " --action A --items ITEMS.json [--ttl S] [--intent JTI]\n"
    "       mandate-wallet --version | --help\n";

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "keygen") == 0)
        return keygen_main(argc - 1, argv + 1);
    if (argc > 1 && (strcmp(argv[1], "approvals") == 0 || strcmp(argv[1], "approve") == 0 ||
                     strcmp(argv[1], "deny") == 0))
        return cli_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "sign-cart") == 0)
        return cli_sign_cart(argc - 1, argv + 1);
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
            printf("mandate-wallet %s\n", MANDATE_VERSION);
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
    struct wallet_config *w = wallet_config_load(path, &cf);
    cfg_print_errors(&cf);
    cfg_clear(&cf);
    if (!w)
        return 1;
    if (check) {
        printf("%s: ok\n", path);
        wallet_config_free(w);
        return 0;
    }
    return service_run(w);
}
