/*
 * checkpoint: signing and verifying C2SP signed-note checkpoints.
 */
#include "audit/checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "core/b64url.h"
#include "core/jws.h"
#include "core/sha256.h"

static const char dash[] = "\xe2\x80\x94 "; /* U+2014 EM DASH, then a space */

static int key_id(const char *name, EVP_PKEY *pkey, unsigned char out[4])
{
    unsigned char pub[32];
    size_t n = sizeof(pub);
    if (!EVP_PKEY_get_raw_public_key(pkey, pub, &n) || n != 32)
        return -1;
    size_t nl = strlen(name);
    unsigned char *buf = xmalloc(nl + 2 + 32);
    memcpy(buf, name, nl);
    buf[nl] = '\n';
    buf[nl + 1] = 0x01; /* signature type: Ed25519 */
    memcpy(buf + nl + 2, pub, 32);
    unsigned char h[32];
    sha256(buf, nl + 2 + 32, h);
    free(buf);
    memcpy(out, h, 4);
    return 0;
}

char *checkpoint_sign(const struct jwk *key, const char *origin, uint64_t size,
                      const unsigned char root[32])
{
    if (key->alg != JWK_EDDSA)
        return NULL;
    char root64[45];
    EVP_EncodeBlock((unsigned char *)root64, root, 32);
    char *body = xasprintf("%s\n%" PRIu64 "\n%s\n", origin, size, root64);
    unsigned char blob[4 + JWS_SIG_LEN];
    char *note = NULL;
    if (key_id(origin, key->pkey, blob) == 0 &&
        jws_sign_raw(key, (unsigned char *)body, strlen(body), blob + 4) == 0) {
        char sig64[((4 + JWS_SIG_LEN + 2) / 3) * 4 + 1];
        EVP_EncodeBlock((unsigned char *)sig64, blob, sizeof(blob));
        note = xasprintf("%s\n%s%s %s\n", body, dash, origin, sig64);
    }
    free(body);
    return note;
}

/* The canonical, padded standard base64 of exactly n bytes (n <= 68), and only that. 0 or -1. */
static int b64_exact(const char *s, size_t len, unsigned char *out, size_t n)
{
    unsigned char buf[72];
    if (n > 68 || len != 4 * ((n + 2) / 3) || b64_decode(s, len, buf) != (long)n)
        return -1;
    memcpy(out, buf, n);
    return 0;
}

int checkpoint_verify(const char *note, EVP_PKEY *pub, uint64_t *size, unsigned char root[32],
                      char **origin, const char **why)
{
    *why = "not a checkpoint note";
    const char *blank = strstr(note, "\n\n");
    if (!blank)
        return -1;
    size_t body_len = (size_t)(blank - note) + 1;
    char *body = xstrndup(note, body_len);
    char *l1 = body, *l2 = strchr(l1, '\n'), *l3, *end;
    int rc = -1;
    if (!l2)
        goto out;
    *l2++ = '\0';
    l3 = strchr(l2, '\n');
    if (!l3)
        goto out;
    *l3++ = '\0';
    end = strchr(l3, '\n');
    if (!end || end[1] != '\0' || !*l1 || !*l2 || (l2[0] == '0' && l2[1]))
        goto out;
    *end = '\0';
    /* The size in plain decimal: strtoull alone takes "+5", " 5" and "-1" (as 2^64 - 1). */
    size_t dl2 = strlen(l2);
    if (dl2 > 20 || strspn(l2, "0123456789") != dl2)
        goto out;
    errno = 0;
    unsigned long long sz = strtoull(l2, NULL, 10);
    unsigned char dec[32];
    if (errno == ERANGE || b64_exact(l3, strlen(l3), dec, 32) != 0)
        goto out;
    /* Signature lines: find one with our name and key id that verifies. */
    struct jwk key = {"checkpoint", JWK_EDDSA, pub};
    unsigned char want_id[4];
    if (key_id(l1, pub, want_id) != 0)
        goto out;
    *why = "no valid signature by the checkpoint key";
    const char *line = blank + 2;
    size_t nl = strlen(l1);
    while (*line) {
        const char *eol = strchr(line, '\n');
        if (!eol)
            break;
        size_t dl = strlen(dash);
        if ((size_t)(eol - line) > dl + nl + 1 && memcmp(line, dash, dl) == 0 &&
            memcmp(line + dl, l1, nl) == 0 && line[dl + nl] == ' ') {
            const char *b64 = line + dl + nl + 1;
            size_t bl = (size_t)(eol - b64);
            unsigned char blob[4 + JWS_SIG_LEN];
            if (b64_exact(b64, bl, blob, sizeof(blob)) == 0 && memcmp(blob, want_id, 4) == 0) {
                unsigned char *body_bytes = (unsigned char *)xstrndup(note, body_len);
                int ok = jws_verify_raw(&key, body_bytes, body_len, blob + 4, JWS_SIG_LEN) == 0;
                free(body_bytes);
                if (ok) {
                    *size = sz;
                    memcpy(root, dec, 32);
                    if (origin)
                        *origin = xstrdup(l1);
                    rc = 0;
                    goto out;
                }
            }
        }
        line = eol + 1;
    }
out:
    free(body);
    return rc;
}
