/*
 * keygen: key generation for wallets, merchants and the audit checkpoint key.
 */
#include "wallet/keygen.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/jwk.h"
#include "core/sjson.h"

static const char usage[] =
    "usage: mandate-wallet keygen --alg ES256|EdDSA --kid KID --out KEY.pem --jwks KEYS.jwks.json"
    " [--pub KEY.pub.pem]\n";

static int write_jwks(const struct jwk *k, const char *path, char **err)
{
    struct jwks set = {(struct jwk *)k, 1};
    json_t *doc = jwks_to_json(&set);
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(doc);
    FILE *f = fopen(path, "wx");
    int ok = f && fputs(s, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0)
        ok = 0;
    free(s);
    if (!ok) {
        *err = xasprintf("%s: could not write (it must not exist yet)", path);
        return -1;
    }
    return 0;
}

int keygen_main(int argc, char **argv)
{
    static const struct option opts[] = {{"alg", required_argument, 0, 'a'},
                                         {"kid", required_argument, 0, 'k'},
                                         {"out", required_argument, 0, 'o'},
                                         {"jwks", required_argument, 0, 'j'},
                                         {"pub", required_argument, 0, 'p'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *alg = NULL, *kid = NULL, *out = NULL, *jwks = NULL, *pub = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            alg = optarg;
            break;
        case 'k':
            kid = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'j':
            jwks = optarg;
            break;
        case 'p':
            pub = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 1;
        }
    }
    enum jwk_alg a;
    if (!alg || !kid || !out || !jwks || optind != argc) {
        fputs(usage, stderr);
        return 1;
    }
    if (jwk_alg_parse(alg, &a) != 0) {
        fprintf(stderr, "keygen: --alg: expected ES256 or EdDSA\n");
        return 1;
    }
    struct jwk k;
    if (jwk_generate(a, kid, &k) != 0) {
        fprintf(stderr, "keygen: --kid must be 1 to %d characters\n", JWK_KID_MAX);
        return 1;
    }
    char *err = NULL;
    int rc = 1;
    if (jwk_write_private(&k, out, &err) != 0)
        goto out;
    if (write_jwks(&k, jwks, &err) != 0 || (pub && jwk_write_public_pem(&k, pub, &err) != 0)) {
        unlink(out);
        goto out;
    }
    rc = 0;
out:
    if (err)
        fprintf(stderr, "keygen: %s\n", err);
    free(err);
    jwk_clear(&k);
    return rc;
}
