/*
 * b64url: strict base64url (RFC 4648 §5) without padding, as JWS uses it, and strict standard
 * base64 with padding (§4), as checkpoint notes and HTTP structured fields use it.
 * Decoding refuses whitespace, any byte outside the alphabet, a wrong length or padding, and
 * non-zero unused bits, so every byte string has exactly one accepted encoding.
 */
#ifndef CORE_B64URL_H
#define CORE_B64URL_H

#include <stddef.h>

#include "core/util.h"

/** Bytes needed to encode n bytes, including the NUL. */
#define B64URL_ENC_LEN(n) ((((n) + 2) / 3) * 4 + 1)
/** Upper bound of decoded bytes for an n-character input. */
#define B64URL_DEC_MAX(n) (((n) / 4) * 3 + 2)

/** Encode n bytes into out (B64URL_ENC_LEN(n) bytes); returns the length without NUL. */
size_t b64url_encode(const unsigned char *in, size_t n, char *out);
/** Encode into a new NUL-terminated string the caller frees. */
char *b64url_encode_new(const unsigned char *in, size_t n);
/**
 * Decode n characters into out (room for B64URL_DEC_MAX(n) bytes).
 * Returns the decoded length, or -1 when the input is not canonical base64url.
 */
long b64url_decode(const char *in, size_t n, unsigned char *out) MUST_CHECK;
/**
 * Decode n characters of standard padded base64 into out (room for n / 4 * 3 bytes). Returns
 * the decoded length, or -1 when the input is not canonical (length a multiple of 4, '=' only
 * as the last one or two characters, unused bits zero).
 */
long b64_decode(const char *in, size_t n, unsigned char *out) MUST_CHECK;

#endif
