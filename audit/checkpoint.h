/*
 * checkpoint: C2SP signed notes in the tlog-checkpoint format. The body is
 * "<origin>\n<size>\n<base64 root>\n"; one signature line "— <origin> <base64(keyid || sig)>"
 * follows a blank line, with an Ed25519 signature over the body and the 4-byte key id
 * SHA-256(<origin> || 0x0A || 0x01 || public key)[:4].
 */
#ifndef AUDIT_CHECKPOINT_H
#define AUDIT_CHECKPOINT_H

#include <stdint.h>

#include <openssl/evp.h>

#include "core/jwk.h"
#include "core/util.h"

/** A signed note for (origin, size, root) with an Ed25519 key; a new string, or NULL. */
char *checkpoint_sign(const struct jwk *key, const char *origin, uint64_t size,
                      const unsigned char root[32]) MUST_CHECK;
/**
 * Parse and verify a note with the Ed25519 public key pub: fills size and root. Returns 0, or -1
 * with *why ("not a checkpoint", "bad signature", ...). origin, when not NULL, receives a copy of
 * the origin line (caller frees).
 */
int checkpoint_verify(const char *note, EVP_PKEY *pub, uint64_t *size, unsigned char root[32],
                      char **origin, const char **why) MUST_CHECK;

#endif
