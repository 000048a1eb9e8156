/*
 * libFuzzer target: checkpoint_verify(), the parser of signed notes that come from outside (held
 * by auditors, served by /admin/checkpoint, stored in a database that may have been tampered
 * with). Two properties, besides never crashing or leaking:
 *  - a note that verifies was signed by us: its body is exactly the one checkpoint_sign() makes
 *    for the size, root and origin it reports;
 *  - a note we signed for (origin, size, root) taken from the input verifies to exactly those,
 *    and no longer verifies once any one of its bytes is changed (strict, unmalleable encoding).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "audit/checkpoint.h"

static struct jwk key;

static void setup(void)
{
    if (jwk_generate(JWK_EDDSA, "cp", &key) != 0)
        abort();
}

/* What a note that verifies must be: our body for what it says, then our signature line. */
static void check_accepted(const char *note, uint64_t size, const unsigned char root[32],
                           const char *origin)
{
    char *want = checkpoint_sign(&key, origin, size, root);
    if (!want)
        abort();
    size_t body = (size_t)(strstr(want, "\n\n") - want) + 1;
    if (strncmp(note, want, body) != 0 || note[body] != '\n')
        abort(); /* accepted a body we never signed */
    free(want);
}

/* Sign (origin, size, root) from the input; verify; flip one byte and see it refused. */
static void round_trip(const uint8_t *data, size_t size)
{
    if (size < 1 + 8 + 32 + 2)
        return;
    uint64_t n;
    unsigned char root[32];
    memcpy(&n, data + 1, 8);
    memcpy(root, data + 9, 32);
    size_t pos = data[41], olen = size - 43;
    uint8_t mask = data[42] ? data[42] : 1;
    if (olen == 0 || olen > 200)
        return;
    char origin[201];
    memcpy(origin, data + 43, olen);
    origin[olen] = '\0';
    /* C2SP key names: printable, no spaces and no '+'. */
    for (size_t i = 0; i < olen; i++)
        if (origin[i] <= 0x20 || origin[i] > 0x7e || origin[i] == '+')
            return;
    char *note = checkpoint_sign(&key, origin, n, root);
    if (!note)
        abort();
    uint64_t got;
    unsigned char groot[32];
    char *gorigin = NULL;
    const char *why;
    if (checkpoint_verify(note, key.pkey, &got, groot, &gorigin, &why) != 0 || got != n ||
        memcmp(groot, root, 32) != 0 || strcmp(gorigin, origin) != 0)
        abort();
    free(gorigin);
    size_t len = strlen(note);
    note[pos % len] ^= (char)mask;
    if (note[pos % len] != '\0' && checkpoint_verify(note, key.pkey, &got, groot, NULL, &why) == 0)
        abort(); /* a changed note still verifies */
    free(note);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!key.pkey)
        setup();
    if (size && data[0] == 'R') {
        round_trip(data, size);
        return 0;
    }
    char *note = malloc(size + 1);
    memcpy(note, data, size);
    note[size] = '\0';
    uint64_t n;
    unsigned char root[32];
    char *origin = NULL;
    const char *why;
    if (checkpoint_verify(note, key.pkey, &n, root, &origin, &why) == 0) {
        check_accepted(note, n, root, origin);
        free(origin);
    } else if (!why || origin) {
        abort(); /* a refusal says why and hands back nothing */
    }
    free(note);
    return 0;
}
