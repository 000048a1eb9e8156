/*
 * sign-request: how an agent proves that it holds the key its mandate is bound to (SPEC §7).
 *
 * A mandate minted for an agent whose wallet.json entry has a "jwk" carries cnf.jwk, and the
 * gateway then wants every request that presents it signed by that key: an RFC 9421 HTTP
 * Message Signature under the label "mandate", covering "@method" "@authority" "@path"
 * "@query" "authorization", plus "mandate-cart" when that header is sent and "content-digest"
 * (RFC 9530) when there is a body; with created, expires (at most 60 s later), a fresh nonce and
 * keyid = the RFC 7638 thumbprint of the key. This program prints those headers, one
 * "Name: value" a line, for curl or any other client to add:
 *
 *   sign-request --key agent.pem --method POST --url http://127.0.0.1:8080/lux/book \
 *       -H "Authorization: Mandate $PAY" -H "Mandate-Cart: $CART" --data '{}'
 *   Content-Digest: sha-256=:RBNvo1WzZ4oRRq0W9+hknpT7T8If536DEMBg9hyq/4o=:
 *   Signature-Input: mandate=("@method" "@authority" "@path" "@query" "authorization" ...
 *   Signature: mandate=:...:
 *
 * Send the request exactly as signed: the same method, URL (the Host header is the URL's
 * host:port) and header values, and the body byte for byte (curl --data-binary; plain --data
 * strips newlines from @files). Each signature is good once (the nonce) and for 60 s at most:
 * sign every request.
 *
 *   sign-request --key agent.pem --jwk          the agent's public JWK, for its wallet.json entry
 *   sign-request --key agent.pem --keyid        the thumbprint its signatures name
 *
 * The key is a PKCS#8 PEM private key, Ed25519 or P-256, e.g. from
 * `mandate-wallet keygen --alg EdDSA --kid agent --out agent.pem --jwks agent.jwks.json`.
 */
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/httpsig.h"
#include "core/jwk.h"
#include "core/sjson.h"
#include "core/util.h"

#define MAX_HEADERS  32
#define MAX_BODY     (16 * 1024 * 1024)
#define MAX_WINDOW_S 60 /* SPEC §7: expires - created at most */

struct header {
    char *name; /* lower-case */
    char *value;
};

static struct header headers[MAX_HEADERS];
static size_t nheaders;

static void usage(FILE *f)
{
    fputs("usage: sign-request --key AGENT.pem --method METHOD --url URL [-H 'Name: value']...\n"
          "                    [--data STRING | --body FILE] [--expires-in S] [--created T]\n"
          "       sign-request --key AGENT.pem --jwk | --keyid\n"
          "Prints the Signature-Input, Signature and (with a non-empty body) Content-Digest\n"
          "headers of an RFC 9421 signature under the label \"mandate\" (SPEC §7). URL is\n"
          "http[s]://host[:port]/path[?query]; -H Authorization: Mandate ... is required, and a\n"
          "Mandate-Cart header is covered when given. --expires-in is 1-60 (default 60);\n"
          "--created (Unix seconds, default now) is for tests.\n",
          f);
}

static void die(const char *fmt, const char *arg)
{
    fputs("sign-request: ", stderr);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(1);
}

static bool tchar(unsigned char c)
{
    return isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* "Name: value": the name a token, the value trimmed of spaces and tabs (RFC 9110 §5.5). */
static void add_header(const char *line)
{
    const char *colon = strchr(line, ':');
    if (!colon || colon == line)
        die("-H wants \"Name: value\", got \"%s\"", line);
    for (const char *p = line; p < colon; p++)
        if (!tchar((unsigned char)*p))
            die("-H: \"%s\" is not a header name", line);
    const char *v = colon + 1, *end = v + strlen(v);
    while (*v == ' ' || *v == '\t')
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    for (const char *p = v; p < end; p++)
        if (*p == '\r' || *p == '\n' || *p == '\0')
            die("-H: \"%s\" has a line break in its value", line);
    if (nheaders == MAX_HEADERS)
        die("at most %s headers", "32");
    struct header *h = &headers[nheaders++];
    h->name = xstrndup(line, (size_t)(colon - line));
    for (char *p = h->name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    h->value = xstrndup(v, (size_t)(end - v));
}

static bool has_header(const char *name)
{
    for (size_t i = 0; i < nheaders; i++)
        if (strcmp(headers[i].name, name) == 0)
            return true;
    return false;
}

/* struct httpsig_msg's field(): every line of a header, in the order given. */
static size_t field(void *ctx, const char *name, const char **vals, size_t max)
{
    (void)ctx;
    size_t n = 0;
    for (size_t i = 0; i < nheaders; i++) {
        if (strcasecmp(headers[i].name, name) != 0)
            continue;
        if (n < max)
            vals[n] = headers[i].value;
        n++;
    }
    return n;
}

/* Split url into the message's scheme, authority, path and query (strings it then owns). */
static void parse_url(const char *url, struct httpsig_msg *m)
{
    const char *rest;
    if (strncasecmp(url, "http://", 7) == 0) {
        m->scheme = "http";
        rest = url + 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        m->scheme = "https";
        rest = url + 8;
    } else {
        die("--url: expected http://host[:port]/path, got \"%s\"", url);
    }
    size_t alen = strcspn(rest, "/?#");
    if (alen == 0 || memchr(rest, '@', alen))
        die("--url: expected a host (and no user information) in \"%s\"", url);
    m->authority = xstrndup(rest, alen);
    const char *p = rest + alen;
    size_t plen = strcspn(p, "?#");
    m->path = plen ? xstrndup(p, plen) : xstrdup("/");
    p += plen;
    if (*p == '?') {
        p++;
        m->query = xstrndup(p, strcspn(p, "#"));
    }
}

static int64_t number(const char *opt, const char *s, int64_t min, int64_t max)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < min || v > max)
        die("%s: out of range or not a number", opt);
    return v;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"key", required_argument, NULL, 'k'},
                                         {"method", required_argument, NULL, 'm'},
                                         {"url", required_argument, NULL, 'u'},
                                         {"header", required_argument, NULL, 'H'},
                                         {"data", required_argument, NULL, 'd'},
                                         {"body", required_argument, NULL, 'b'},
                                         {"expires-in", required_argument, NULL, 'e'},
                                         {"created", required_argument, NULL, 'c'},
                                         {"jwk", no_argument, NULL, 'j'},
                                         {"keyid", no_argument, NULL, 'i'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *keyfile = NULL, *method = NULL, *url = NULL, *data = NULL, *bodyfile = NULL;
    int64_t window = MAX_WINDOW_S, created = (int64_t)time(NULL);
    bool print_jwk = false, print_keyid = false;
    int o;
    while ((o = getopt_long(argc, argv, "H:h", opts, NULL)) != -1) {
        switch (o) {
        case 'k':
            keyfile = optarg;
            break;
        case 'm':
            method = optarg;
            break;
        case 'u':
            url = optarg;
            break;
        case 'H':
            add_header(optarg);
            break;
        case 'd':
            data = optarg;
            break;
        case 'b':
            bodyfile = optarg;
            break;
        case 'e':
            window = number("--expires-in", optarg, 1, MAX_WINDOW_S);
            break;
        case 'c':
            created = number("--created", optarg, 0, INT64_MAX / 2);
            break;
        case 'j':
            print_jwk = true;
            break;
        case 'i':
            print_keyid = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind != argc || !keyfile) {
        usage(stderr);
        return 1;
    }

    struct jwk key;
    char *err = NULL;
    if (jwk_load_private(keyfile, "agent", &key, &err) != 0)
        die("%s", err);
    char thumb[HTTPSIG_THUMBPRINT_LEN + 1];
    httpsig_thumbprint(&key, thumb);

    if (print_jwk || print_keyid) {
        if (print_jwk) {
            /* What the agent's wallet.json entry takes as "jwk": the public members only. */
            json_t *pub = jwk_to_json(&key);
            json_object_del(pub, "kid");
            json_object_del(pub, "alg");
            json_object_del(pub, "use");
            char *s = sjson_dump(pub);
            puts(s);
            free(s);
            json_decref(pub);
        }
        if (print_keyid)
            puts(thumb);
        jwk_clear(&key);
        return 0;
    }
    if (!method || !url) {
        usage(stderr);
        return 1;
    }
    for (const char *p = method; *p; p++)
        if (!tchar((unsigned char)*p))
            die("--method: \"%s\" is not a method", method);
    if (data && bodyfile)
        die("%s", "give --data or --body, not both");
    if (!has_header("authorization"))
        die("%s", "-H 'Authorization: Mandate <mandate>' is required: the signature covers it");
    if (has_header("content-digest"))
        die("%s", "Content-Digest is computed here from the body: do not pass it with -H");
    if (has_header("signature") || has_header("signature-input"))
        die("%s", "the request is already signed");

    struct httpsig_msg m = {.method = method, .field = field};
    parse_url(url, &m);

    char *body = NULL;
    size_t blen = 0;
    if (bodyfile) {
        if (!(body = file_read(bodyfile, MAX_BODY, &blen, &err)))
            die("%s", err);
    } else if (data) {
        body = xstrdup(data);
        blen = strlen(data);
    }

    const char *components[7] = {"@method", "@authority", "@path", "@query", "authorization"};
    size_t n = 5;
    if (has_header("mandate-cart"))
        components[n++] = "mandate-cart";
    char *digest = NULL;
    if (blen > 0) {
        digest = httpsig_digest_value(HTTPSIG_SHA256, body, blen);
        char *line = xasprintf("Content-Digest: %s", digest);
        add_header(line);
        free(line);
        components[n++] = "content-digest";
    }

    char nonce[33];
    httpsig_nonce(nonce);
    struct httpsig_sign_params sp = {.components = components,
                                     .n_components = n,
                                     .created = created,
                                     .expires = created + window,
                                     .nonce = nonce,
                                     .alg = httpsig_alg_name(&key),
                                     .keyid = thumb};
    char *input = NULL, *sig = NULL;
    if (httpsig_sign(&m, "mandate", &key, &sp, &input, &sig, &err) != 0)
        die("%s", err);
    if (digest)
        printf("Content-Digest: %s\n", digest);
    printf("Signature-Input: %s\nSignature: %s\n", input, sig);

    free(input);
    free(sig);
    free(digest);
    free(body);
    free((char *)m.authority);
    free((char *)m.path);
    free((char *)m.query);
    for (size_t i = 0; i < nheaders; i++) {
        free(headers[i].name);
        free(headers[i].value);
    }
    jwk_clear(&key);
    return fflush(stdout) == 0 ? 0 : 1;
}
