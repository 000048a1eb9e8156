/*
 * httpsig: proof of possession for requests (SPEC §7). HTTP Message Signatures (RFC 9421) with
 * Ed25519 and ECDSA P-256 SHA-256, the RFC 8941 structured fields they are written in,
 * Content-Digest (RFC 9530) checked as the body streams, and RFC 7638 JWK thumbprints for `keyid`.
 *
 * The structured-field parser is strict and bounded: it takes Dictionaries (members are Items or
 * Inner Lists, with parameters) and refuses anything outside RFC 8941's grammar. Where RFC 8941
 * is lenient it is not: a duplicate dictionary key or parameter is an error (two readers could
 * otherwise see two different signatures under one label), and a Byte Sequence must be canonical
 * padded base64.
 *
 * Verification never takes the algorithm from the message: it is the key's (jwk.h pins it), and
 * an `alg` parameter is only compared with it. The module knows no HTTP library: the caller
 * describes the request with struct httpsig_msg. It does not remember nonces (the replay store
 * is the caller's) and does not read bodies (the caller feeds httpsig_digest_update()).
 */
#ifndef CORE_HTTPSIG_H
#define CORE_HTTPSIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "core/jwk.h"
#include "core/util.h"

/* ---- RFC 8941 structured fields (the subset of shapes RFC 9421 and RFC 9530 use) ---- */

#define HTTPSIG_SF_MAX_INPUT   8192 /* bytes of one field value (all its lines joined) */
#define HTTPSIG_SF_MAX_MEMBERS 16   /* dictionary members */
#define HTTPSIG_SF_MAX_ITEMS   64   /* inner-list items, all members together */
#define HTTPSIG_SF_MAX_LIST    32   /* items in one inner list */
#define HTTPSIG_SF_MAX_PARAMS  64   /* parameters, all items and lists together */
#define HTTPSIG_SF_MAX_KEY     64   /* characters of a key */
#define HTTPSIG_SF_MAX_STRING  1024 /* characters of a String or Token */
#define HTTPSIG_SF_MAX_BYTES   1024 /* base64 characters of a Byte Sequence */

enum httpsig_sf_type {
    HTTPSIG_SF_INTEGER,
    HTTPSIG_SF_DECIMAL,
    HTTPSIG_SF_STRING,
    HTTPSIG_SF_TOKEN,
    HTTPSIG_SF_BYTES,
    HTTPSIG_SF_BOOLEAN,
};

/** A bare item. Strings and tokens are NUL-terminated; all pointers are into the dict's arena. */
struct httpsig_sf_bare {
    enum httpsig_sf_type type;
    int64_t num;     /* Integer; Boolean 0/1; Decimal in thousandths */
    const char *str; /* String (unescaped), Token, Byte Sequence (decoded bytes) */
    size_t len;
};

struct httpsig_sf_param {
    const char *key;
    struct httpsig_sf_bare v;
};

/** An item with its parameters params[p0 .. p0+np). */
struct httpsig_sf_item {
    struct httpsig_sf_bare v;
    size_t p0, np;
};

/**
 * A dictionary member: an Item (item.v and its parameters), or an Inner List of the items
 * items[i0 .. i0+ni) whose own parameters are item.p0/np (item.v is then unused).
 */
struct httpsig_sf_member {
    const char *key;
    bool inner;
    struct httpsig_sf_item item;
    size_t i0, ni;
};

/** A parsed Dictionary. Fixed-size tables plus one arena; release with httpsig_sf_dict_clear(). */
struct httpsig_sf_dict {
    struct httpsig_sf_member m[HTTPSIG_SF_MAX_MEMBERS];
    size_t n;
    struct httpsig_sf_item items[HTTPSIG_SF_MAX_ITEMS];
    size_t nitems;
    struct httpsig_sf_param params[HTTPSIG_SF_MAX_PARAMS];
    size_t nparams;
    char *arena; /* owned */
    size_t used, cap;
};

/**
 * Parse len bytes (at most HTTPSIG_SF_MAX_INPUT) as an RFC 8941 Dictionary into out.
 * Returns 0, or -1 with *why (a static string) and out cleared. Clear out in both cases.
 */
int httpsig_sf_parse_dict(const char *s, size_t len, struct httpsig_sf_dict *out,
                          const char **why) MUST_CHECK;
/** The member called key, or NULL. */
const struct httpsig_sf_member *httpsig_sf_get(const struct httpsig_sf_dict *d, const char *key);
/** RFC 8941 §4.1.1.1 serialisation of an Inner List member with its parameters (caller frees). */
char *httpsig_sf_inner_list(const struct httpsig_sf_dict *d, const struct httpsig_sf_member *mem);
/** RFC 8941 §4.1.2 serialisation of the whole dictionary (caller frees). */
char *httpsig_sf_dict_serialize(const struct httpsig_sf_dict *d);
/** Release what d holds; d may be reused afterwards. */
void httpsig_sf_dict_clear(struct httpsig_sf_dict *d);

/* ---- The request, as the caller's HTTP parser sees it ---- */

#define HTTPSIG_MAX_FIELD_LINES 16 /* lines of one header field that are combined */

/**
 * The message a signature covers. Strings are borrowed and NUL-terminated; header names passed
 * to field() are lower-case and the callback matches them case-insensitively.
 */
struct httpsig_msg {
    const char *method;    /* "POST", as received */
    const char *scheme;    /* "http" or "https"; NULL means "http" (decides the default port) */
    const char *authority; /* Host (or :authority) as received, e.g. "Example.com:443" */
    const char *path;      /* "/foo", without the query; "" is "/" */
    const char *query;     /* without the "?"; NULL when the target has no "?" */
    int status;            /* a response's status for "@status"; 0 for a request */
    /**
     * Store up to max values of header field `name`, in message order, in vals (borrowed,
     * valid for the call that asked) and return how many lines the message has (0: absent).
     */
    size_t (*field)(void *ctx, const char *name, const char **vals, size_t max);
    void *ctx;
};

/* ---- Verification ---- */

#define HTTPSIG_NONCE_MIN  16
#define HTTPSIG_NONCE_MAX  64
#define HTTPSIG_KEYID_MAX  128
#define HTTPSIG_REASON_MAX 200

enum httpsig_status {
    HTTPSIG_OK,      /* the signature verifies and meets the policy */
    HTTPSIG_MISSING, /* no member under the label (SPEC: signature_missing) */
    HTTPSIG_INVALID, /* anything else (SPEC: signature_invalid); reason says what */
};

/* Parameters a policy can require (bits of httpsig_policy.need). */
#define HTTPSIG_NEED_CREATED 1u
#define HTTPSIG_NEED_EXPIRES 2u
#define HTTPSIG_NEED_NONCE   4u
#define HTTPSIG_NEED_KEYID   8u
#define HTTPSIG_NEED_ALL     15u

/** What a signature must satisfy besides verifying. */
struct httpsig_policy {
    const char *const *required; /* component names that must be covered, e.g. "@method" */
    size_t n_required;
    unsigned need;        /* HTTPSIG_NEED_* */
    const char *keyid;    /* the keyid a signature must name; NULL: the key's kid */
    int64_t max_window_s; /* expires - created at most (when both are present); SPEC: 60 */
    int64_t skew_s;       /* created <= now + skew, expires >= now - skew */
};

/** What verification found, for the logs and the caller's replay store. */
struct httpsig_result {
    char reason[HTTPSIG_REASON_MAX]; /* why not HTTPSIG_OK; "" when OK */
    int64_t created, expires;        /* -1 when absent */
    char nonce[HTTPSIG_NONCE_MAX + 1];
    char keyid[HTTPSIG_KEYID_MAX + 1];
    bool covers_digest; /* "content-digest" is covered: the caller must check the body */
};

/**
 * Verify the signature under label in the message's Signature-Input and Signature fields with
 * key (its pinned algorithm: Ed25519 or ECDSA P-256 SHA-256, r||s) against policy p at time
 * now_s. Returns HTTPSIG_MISSING when neither field has the label, HTTPSIG_INVALID with
 * out->reason for anything else that is wrong (malformed fields, a required component or
 * parameter missing, times, keyid, alg, a component absent from the message, a signature that
 * does not verify), HTTPSIG_OK otherwise. The parameters found are in out in every case.
 */
enum httpsig_status httpsig_verify(const struct httpsig_msg *m, const char *label,
                                   const struct jwk *key, const struct httpsig_policy *p,
                                   int64_t now_s, struct httpsig_result *out) MUST_CHECK;

/**
 * The RFC 9421 §2.5 signature base of the signature under label in the message's
 * Signature-Input (no trailing newline). A new string the caller frees (*len bytes), or NULL
 * with *err (caller frees).
 */
char *httpsig_base(const struct httpsig_msg *m, const char *label, size_t *len,
                   char **err) MUST_CHECK;

/* ---- Signing (agents, examples, tests) ---- */

/** What to sign. Absent parameters: created/expires < 0, strings NULL. */
struct httpsig_sign_params {
    const char *const *components;
    size_t n_components;
    int64_t created, expires;
    const char *nonce, *alg, *keyid, *tag; /* serialised in this order after created, expires */
};

/**
 * Sign components of m with key (a private Ed25519 or P-256 key, e.g. from jwk_load_private()).
 * On success sets *sig_input and *signature to the field values `label=(...);...` and
 * `label=:...:` (caller frees both). -1 with *err (caller frees) when a component is absent or
 * malformed, or the key cannot sign.
 */
int httpsig_sign(const struct httpsig_msg *m, const char *label, const struct jwk *key,
                 const struct httpsig_sign_params *p, char **sig_input, char **signature,
                 char **err) MUST_CHECK;

/** The RFC 9421 `alg` name of a key's algorithm: "ed25519" or "ecdsa-p256-sha256". */
const char *httpsig_alg_name(const struct jwk *key);
/** A fresh random nonce of 32 base64url characters (24 bytes) into out. */
void httpsig_nonce(char out[33]);

/* ---- RFC 9530 Content-Digest ---- */

enum httpsig_digest_alg { HTTPSIG_SHA256, HTTPSIG_SHA512 };

/** An incremental check of a body against a Content-Digest value. */
struct httpsig_digest {
    EVP_MD_CTX *ctx[2]; /* owned; NULL for an algorithm the field does not name */
    unsigned char want[2][64];
};

/**
 * Parse a Content-Digest value (a Dictionary of Byte Sequences) and start hashing with every
 * algorithm it names that we know (sha-256, sha-512; others are ignored as RFC 9530 says).
 * -1 with *why when it is malformed, a known digest has the wrong length, or no known one is
 * present.
 */
int httpsig_digest_begin(struct httpsig_digest *d, const char *value, size_t len,
                         const char **why) MUST_CHECK;
/** Hash the next len bytes of the body. */
void httpsig_digest_update(struct httpsig_digest *d, const void *data, size_t len);
/** 0 when every named digest matches the body fed so far, else -1. Clears d. */
int httpsig_digest_end(struct httpsig_digest *d) MUST_CHECK;
/** Abandon a check (a body cut short); clearing a cleared d is a no-op. */
void httpsig_digest_clear(struct httpsig_digest *d);
/** The Content-Digest value of a body, e.g. "sha-256=:X48E...=:" (caller frees). */
char *httpsig_digest_value(enum httpsig_digest_alg alg, const void *body, size_t len);

/* ---- RFC 7638 thumbprints and RFC 7800 cnf keys ---- */

#define HTTPSIG_THUMBPRINT_LEN 43 /* base64url of a SHA-256 */

/** The RFC 7638 SHA-256 thumbprint of k's public key, base64url without padding, into out. */
void httpsig_thumbprint(const struct jwk *k, char out[HTTPSIG_THUMBPRINT_LEN + 1]);
/**
 * Parse a `cnf.jwk` object (public EC P-256 or OKP Ed25519, validated by jwk_from_json()) into
 * out, whose kid becomes the key's thumbprint whatever the object's own kid says. -1 with *err
 * (caller frees) otherwise; clear out with jwk_clear().
 */
int httpsig_jwk_from_cnf(const json_t *jwk, struct jwk *out, char **err) MUST_CHECK;

#endif
