/*
 * jwk: JWK/JWKS parsing and PEM private keys with OpenSSL 3's EVP interface.
 * It does no signing; jws.c does, with the keys this module hands it.
 */
#include "core/jwk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "core/b64url.h"
#include "core/sjson.h"

#define JWKS_MAX_BYTES (256 * 1024)
#define JWKS_MAX_KEYS  64

const char *jwk_alg_name(enum jwk_alg alg)
{
    return alg == JWK_ES256 ? "ES256" : "EdDSA";
}

int jwk_alg_parse(const char *s, enum jwk_alg *out)
{
    if (s && strcmp(s, "ES256") == 0)
        *out = JWK_ES256;
    else if (s && strcmp(s, "EdDSA") == 0)
        *out = JWK_EDDSA;
    else
        return -1;
    return 0;
}

/* Decode a base64url member that must be exactly n bytes. */
static int member_bytes(const json_t *obj, const char *key, unsigned char *out, size_t n,
                        char **err)
{
    const char *s = sjson_str(obj, key);
    if (!s) {
        *err = xasprintf("%s: missing or not a string", key);
        return -1;
    }
    size_t len = strlen(s);
    if (len > B64URL_ENC_LEN(n)) {
        *err = xasprintf("%s: expected %zu bytes of base64url", key, n);
        return -1;
    }
    unsigned char buf[B64URL_DEC_MAX(B64URL_ENC_LEN(64))];
    long got = b64url_decode(s, len, buf);
    if (got != (long)n) {
        *err = xasprintf("%s: expected %zu bytes of base64url", key, n);
        return -1;
    }
    memcpy(out, buf, n);
    return 0;
}

static EVP_PKEY *ec_public(const unsigned char *x, const unsigned char *y)
{
    unsigned char point[65];
    point[0] = 0x04;
    memcpy(point + 1, x, 32);
    memcpy(point + 33, y, 32);
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!bld || !ctx ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)))
        goto out;
    params = OSSL_PARAM_BLD_to_param(bld);
    if (!params || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        goto out;
    /* fromdata does not promise the point is on the curve; check it. */
    EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!check || EVP_PKEY_public_check(check) <= 0) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    EVP_PKEY_CTX_free(check);
out:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return pkey;
}

static bool ops_allow_verify(const json_t *ops)
{
    size_t i;
    json_t *op;
    json_array_foreach(ops, i, op)
    {
        if (json_is_string(op) && strcmp(json_string_value(op), "verify") == 0)
            return true;
    }
    return false;
}

int jwk_from_json(const json_t *obj, struct jwk *out, char **err)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(obj)) {
        *err = xstrdup("not an object");
        return -1;
    }
    const char *kty = sjson_str(obj, "kty"), *crv = sjson_str(obj, "crv");
    const char *kid = sjson_str(obj, "kid"), *alg = sjson_str(obj, "alg");
    const char *use = sjson_str(obj, "use");
    if (!kid || !*kid || strlen(kid) > JWK_KID_MAX) {
        *err = xasprintf("kid: expected a string of 1 to %d characters", JWK_KID_MAX);
        return -1;
    }
    if (json_object_get(obj, "d")) {
        *err = xstrdup("d: a key set must not contain private keys");
        return -1;
    }
    if (use && strcmp(use, "sig") != 0) {
        *err = xstrdup("use: expected \"sig\"");
        return -1;
    }
    if (json_object_get(obj, "key_ops") && !ops_allow_verify(json_object_get(obj, "key_ops"))) {
        *err = xstrdup("key_ops: a signature key must allow \"verify\"");
        return -1;
    }
    if (kty && strcmp(kty, "EC") == 0) {
        unsigned char x[32], y[32];
        if (!crv || strcmp(crv, "P-256") != 0) {
            *err = xstrdup("crv: expected P-256 for kty EC");
            return -1;
        }
        if (member_bytes(obj, "x", x, 32, err) || member_bytes(obj, "y", y, 32, err))
            return -1;
        out->alg = JWK_ES256;
        out->pkey = ec_public(x, y);
    } else if (kty && strcmp(kty, "OKP") == 0) {
        unsigned char x[32];
        if (!crv || strcmp(crv, "Ed25519") != 0) {
            *err = xstrdup("crv: expected Ed25519 for kty OKP");
            return -1;
        }
        if (member_bytes(obj, "x", x, 32, err))
            return -1;
        out->alg = JWK_EDDSA;
        out->pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, 32);
    } else {
        *err = xstrdup("kty: expected EC or OKP");
        return -1;
    }
    if (!out->pkey) {
        *err = xstrdup("x: not a valid public key");
        return -1;
    }
    if (alg && strcmp(alg, jwk_alg_name(out->alg)) != 0) {
        *err = xasprintf("alg: expected %s for this key type", jwk_alg_name(out->alg));
        jwk_clear(out);
        return -1;
    }
    strcpy(out->kid, kid);
    return 0;
}

static void put_bn(json_t *obj, const char *key, const EVP_PKEY *pkey, const char *param)
{
    BIGNUM *bn = NULL;
    unsigned char buf[32];
    if (!EVP_PKEY_get_bn_param(pkey, param, &bn) || BN_bn2binpad(bn, buf, 32) != 32)
        abort(); /* our own P-256 key always has both coordinates */
    BN_free(bn);
    char *enc = b64url_encode_new(buf, 32);
    sjson_set(obj, key, json_string(enc));
    free(enc);
}

json_t *jwk_to_json(const struct jwk *k)
{
    json_t *o = json_object();
    if (k->alg == JWK_ES256) {
        sjson_set(o, "kty", json_string("EC"));
        sjson_set(o, "crv", json_string("P-256"));
        put_bn(o, "x", k->pkey, OSSL_PKEY_PARAM_EC_PUB_X);
        put_bn(o, "y", k->pkey, OSSL_PKEY_PARAM_EC_PUB_Y);
    } else {
        unsigned char raw[32];
        size_t len = sizeof(raw);
        if (!EVP_PKEY_get_raw_public_key(k->pkey, raw, &len) || len != 32)
            abort();
        char *x = b64url_encode_new(raw, 32);
        sjson_set(o, "kty", json_string("OKP"));
        sjson_set(o, "crv", json_string("Ed25519"));
        sjson_set(o, "x", json_string(x));
        free(x);
    }
    sjson_set(o, "kid", json_string(k->kid));
    sjson_set(o, "alg", json_string(jwk_alg_name(k->alg)));
    sjson_set(o, "use", json_string("sig"));
    return o;
}

void jwk_clear(struct jwk *k)
{
    EVP_PKEY_free(k->pkey);
    k->pkey = NULL;
}

struct jwks *jwks_from_json(const json_t *doc, char **err)
{
    json_t *keys = json_object_get(doc, "keys");
    if (!json_is_object(doc) || !json_is_array(keys)) {
        *err = xstrdup("keys: expected an array of JWKs");
        return NULL;
    }
    if (json_array_size(keys) == 0 || json_array_size(keys) > JWKS_MAX_KEYS) {
        *err = xasprintf("keys: expected 1 to %d keys", JWKS_MAX_KEYS);
        return NULL;
    }
    struct jwks *set = xcalloc(1, sizeof(*set));
    set->keys = xcalloc(json_array_size(keys), sizeof(struct jwk));
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        char *why = NULL;
        if (jwk_from_json(k, &set->keys[set->n], &why) != 0) {
            *err = xasprintf("keys[%zu].%s", i, why);
            free(why);
            goto fail;
        }
        if (jwks_find(set, set->keys[set->n].kid)) {
            *err = xasprintf("keys[%zu].kid: duplicate kid \"%s\"", i, set->keys[set->n].kid);
            jwk_clear(&set->keys[set->n]);
            goto fail;
        }
        set->n++;
    }
    return set;
fail:
    jwks_free(set);
    return NULL;
}

struct jwks *jwks_load_file(const char *path, char **err)
{
    char *why = NULL;
    json_t *doc = sjson_load_file(path, JWKS_MAX_BYTES, &why);
    if (!doc) {
        *err = why;
        return NULL;
    }
    struct jwks *set = jwks_from_json(doc, &why);
    json_decref(doc);
    if (!set) {
        *err = xasprintf("%s: %s", path, why);
        free(why);
    }
    return set;
}

const struct jwk *jwks_find(const struct jwks *set, const char *kid)
{
    for (size_t i = 0; set && i < set->n; i++)
        if (strcmp(set->keys[i].kid, kid) == 0)
            return &set->keys[i];
    return NULL;
}

json_t *jwks_to_json(const struct jwks *set)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < set->n; i++)
        sjson_append(arr, jwk_to_json(&set->keys[i]));
    json_t *doc = json_object();
    sjson_set(doc, "keys", arr);
    return doc;
}

void jwks_free(struct jwks *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->n; i++)
        jwk_clear(&set->keys[i]);
    free(set->keys);
    free(set);
}

struct jwks *jwks_dup(const struct jwks *set)
{
    if (!set)
        return NULL;
    struct jwks *d = xcalloc(1, sizeof(*d));
    d->keys = xcalloc(set->n ? set->n : 1, sizeof(struct jwk));
    for (size_t i = 0; i < set->n; i++) {
        d->keys[i] = set->keys[i];
        if (!EVP_PKEY_up_ref(d->keys[i].pkey))
            abort();
    }
    d->n = set->n;
    return d;
}

bool jwks_equal(const struct jwks *a, const struct jwks *b)
{
    if (!a || !b || a->n != b->n)
        return a == b;
    for (size_t i = 0; i < a->n; i++) {
        const struct jwk *k = jwks_find(b, a->keys[i].kid);
        if (!k || k->alg != a->keys[i].alg || EVP_PKEY_eq(k->pkey, a->keys[i].pkey) != 1)
            return false;
    }
    return true;
}

static struct keyring_entry *ring_push(struct keyring *kr, const char *issuer)
{
    kr->v = xrealloc(kr->v, (kr->n + 1) * sizeof(*kr->v));
    struct keyring_entry *e = &kr->v[kr->n++];
    memset(e, 0, sizeof(*e));
    e->issuer = xstrdup(issuer);
    return e;
}

void keyring_add(struct keyring *kr, const char *issuer, struct jwks *set)
{
    ring_push(kr, issuer)->jwks = set;
}

struct jwks_remote_slot *keyring_add_remote(struct keyring *kr, const char *issuer, const char *uri,
                                            const char *ca_file)
{
    struct jwks_remote_slot *s = xcalloc(1, sizeof(*s));
    s->uri = xstrdup(uri);
    s->ca_file = ca_file ? xstrdup(ca_file) : NULL;
    atomic_init(&s->cur, NULL);
    atomic_init(&s->wanted, false);
    atomic_init(&s->notify_arg, NULL);
    ring_push(kr, issuer)->remote = s;
    return s;
}

void keyring_remote_install(struct jwks_remote_slot *slot, struct jwks *set)
{
    struct jwks *prev = atomic_load_explicit(&slot->cur, memory_order_relaxed);
    if (prev && slot->nold == KEYRING_REMOTE_RETIRED) {
        /* A reader holds a set for one verification (microseconds); the fetcher installs at
         * most once per 30 s, so the oldest of these was replaced minutes ago: a key server
         * that flaps between sets cannot grow this list without bound. */
        jwks_free(slot->old[0]);
        memmove(slot->old, slot->old + 1, (slot->nold - 1) * sizeof(*slot->old));
        slot->nold--;
    }
    if (prev) {
        slot->old = xrealloc(slot->old, (slot->nold + 1) * sizeof(*slot->old));
        slot->old[slot->nold++] = prev;
    }
    /* Release: a reader that sees the pointer sees the keys it points to. */
    atomic_store_explicit(&slot->cur, set, memory_order_release);
}

const struct jwks *keyring_remote_current(const struct jwks_remote_slot *slot)
{
    return atomic_load_explicit(&((struct jwks_remote_slot *)slot)->cur, memory_order_acquire);
}

static const struct keyring_entry *ring_entry(const struct keyring *kr, const char *issuer)
{
    for (size_t i = 0; i < kr->n; i++)
        if (strcmp(kr->v[i].issuer, issuer) == 0)
            return &kr->v[i];
    return NULL;
}

struct jwks_remote_slot *keyring_remote_slot(const struct keyring *kr, const char *issuer)
{
    const struct keyring_entry *e = ring_entry(kr, issuer);
    return e ? e->remote : NULL;
}

const struct jwks *keyring_get(const struct keyring *kr, const char *issuer)
{
    const struct keyring_entry *e = ring_entry(kr, issuer);
    if (!e)
        return NULL;
    return e->remote ? keyring_remote_current(e->remote) : e->jwks;
}

static enum keyring_miss slot_miss(struct jwks_remote_slot *s)
{
    if (!keyring_remote_current(s))
        return KEYRING_MISS_NO_KEYS;
    /* Wake the fetcher once per batch of misses: it clears the flag when it looks. */
    void *arg = atomic_load_explicit(&s->notify_arg, memory_order_acquire);
    if (!atomic_exchange(&s->wanted, true) && arg)
        s->notify(arg);
    return KEYRING_MISS_ASKED;
}

const struct jwk *keyring_find(const struct keyring *kr, const char *issuer, const char *kid)
{
    const struct keyring_entry *e = ring_entry(kr, issuer);
    if (!e)
        return NULL;
    if (!e->remote)
        return jwks_find(e->jwks, kid);
    const struct jwk *k = jwks_find(keyring_remote_current(e->remote), kid);
    if (!k)
        slot_miss(e->remote); /* a rotated set: ask for a refetch (rate-limited by the fetcher) */
    return k;
}

enum keyring_miss keyring_miss(const struct keyring *kr, const char *issuer)
{
    struct jwks_remote_slot *s = keyring_remote_slot(kr, issuer);
    return s ? slot_miss(s) : KEYRING_MISS_LOCAL;
}

void keyring_clear(struct keyring *kr)
{
    for (size_t i = 0; i < kr->n; i++) {
        free(kr->v[i].issuer);
        jwks_free(kr->v[i].jwks);
        struct jwks_remote_slot *s = kr->v[i].remote;
        if (s) {
            jwks_free(atomic_load(&s->cur));
            for (size_t j = 0; j < s->nold; j++)
                jwks_free(s->old[j]);
            free(s->old);
            free(s->uri);
            free(s->ca_file);
            free(s);
        }
    }
    free(kr->v);
    kr->v = NULL;
    kr->n = 0;
}

int jwk_generate(enum jwk_alg alg, const char *kid, struct jwk *out)
{
    memset(out, 0, sizeof(*out));
    if (strlen(kid) == 0 || strlen(kid) > JWK_KID_MAX)
        return -1;
    if (alg == JWK_ES256)
        out->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    else
        out->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!out->pkey)
        return -1;
    out->alg = alg;
    strcpy(out->kid, kid);
    return 0;
}

int jwk_load_private(const char *path, const char *kid, struct jwk *out, char **err)
{
    memset(out, 0, sizeof(*out));
    if (!kid || !*kid || strlen(kid) > JWK_KID_MAX) {
        *err = xasprintf("%s: kid must be 1 to %d characters", path, JWK_KID_MAX);
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        *err = xasprintf("%s: %s", path, strerror(errno));
        return -1;
    }
    EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!pkey) {
        *err = xasprintf("%s: not a PKCS#8 PEM private key", path);
        return -1;
    }
    if (EVP_PKEY_is_a(pkey, "ED25519")) {
        out->alg = JWK_EDDSA;
    } else if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[32];
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            NULL) ||
            strcmp(group, "prime256v1") != 0) {
            *err = xasprintf("%s: EC key is not on P-256", path);
            EVP_PKEY_free(pkey);
            return -1;
        }
        out->alg = JWK_ES256;
    } else {
        *err = xasprintf("%s: key type is neither P-256 nor Ed25519", path);
        EVP_PKEY_free(pkey);
        return -1;
    }
    out->pkey = pkey;
    strcpy(out->kid, kid);
    return 0;
}

static int write_pem(const struct jwk *k, const char *path, bool private, char **err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, private ? 0600 : 0644);
    if (fd < 0) {
        *err = xasprintf("%s: %s", path, strerror(errno));
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        *err = xasprintf("%s: %s", path, strerror(errno));
        return -1;
    }
    int ok = private ? PEM_write_PKCS8PrivateKey(f, k->pkey, NULL, NULL, 0, NULL, NULL)
                     : PEM_write_PUBKEY(f, k->pkey);
    if (fclose(f) != 0)
        ok = 0;
    if (!ok) {
        *err = xasprintf("%s: could not write the key", path);
        unlink(path);
        return -1;
    }
    return 0;
}

int jwk_write_private(const struct jwk *k, const char *path, char **err)
{
    return write_pem(k, path, true, err);
}

int jwk_write_public_pem(const struct jwk *k, const char *path, char **err)
{
    return write_pem(k, path, false, err);
}

/* Canonical public JWKS (audit key-set evidence): one key's compact text, ordered by kid then
 * text so that the same keys in another order give the same bytes. */
struct canon_key {
    const char *kid;
    char *text;
};

static int cmp_canon_key(const void *a, const void *b)
{
    const struct canon_key *x = a, *y = b;
    int c = strcmp(x->kid, y->kid);
    return c ? c : strcmp(x->text, y->text);
}

char *jwks_canonical_public(const struct jwks *set)
{
    size_t n = set ? set->n : 0;
    struct canon_key *v = xcalloc(n ? n : 1, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        json_t *k = jwk_to_json(&set->keys[i]); /* public members only, by construction */
        v[i].kid = set->keys[i].kid;
        v[i].text = sjson_dump(k);
        json_decref(k);
    }
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_canon_key);
    /* {"keys":[k1,k2,...]}: each key is already compact with sorted members. */
    size_t len = strlen("{\"keys\":[]}") + 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(v[i].text) + 1;
    char *out = xmalloc(len), *p = out;
    p += sprintf(p, "{\"keys\":[");
    for (size_t i = 0; i < n; i++) {
        p += sprintf(p, "%s%s", i ? "," : "", v[i].text);
        free(v[i].text);
    }
    sprintf(p, "]}");
    free(v);
    return out;
}
