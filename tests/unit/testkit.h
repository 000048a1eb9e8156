/*
 * testkit: helpers shared by the unit tests: keys in memory, hand-built tokens (including
 * deliberately broken ones) and temporary files. Header-only so each test is one binary.
 */
#ifndef TESTS_TESTKIT_H
#define TESTS_TESTKIT_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "core/b64url.h"
#include "core/jwk.h"
#include "core/jws.h"
#include "core/mandate.h"
#include "core/sjson.h"

/* A key set holding a second reference to k's key, for verification. */
static inline struct jwks *tk_set_of(const struct jwk *k)
{
    struct jwks *set = xcalloc(1, sizeof(*set));
    set->keys = xcalloc(1, sizeof(struct jwk));
    set->keys[0] = *k;
    assert_true(EVP_PKEY_up_ref(k->pkey));
    set->n = 1;
    return set;
}

/* b64(header) "." b64(payload) "." b64(sig over the first two with key), from raw strings. */
static inline char *tk_forge(const struct jwk *key, const char *header, const char *payload)
{
    char *h = b64url_encode_new((const unsigned char *)header, strlen(header));
    char *p = b64url_encode_new((const unsigned char *)payload, strlen(payload));
    char *input = xasprintf("%s.%s", h, p);
    unsigned char sig[JWS_SIG_LEN];
    assert_int_equal(jws_sign_raw(key, (unsigned char *)input, strlen(input), sig), 0);
    char *s = b64url_encode_new(sig, sizeof(sig));
    char *tok = xasprintf("%s.%s", input, s);
    free(h);
    free(p);
    free(input);
    free(s);
    return tok;
}

/* Write text to a new file in dir; returns its path (caller frees). */
static inline char *tk_write(const char *dir, const char *name, const char *text)
{
    char *path = xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static inline char *tk_tmpdir(void)
{
    char tmpl[] = "/tmp/mandate-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return xstrdup(d);
}

static inline void tk_rmdir(char *dir)
{
    char *cmd = xasprintf("rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(dir);
}

#endif
