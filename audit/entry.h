/*
 * entry: the exact bytes of an audit entry (SPEC §4): a compact JSON object with sorted keys,
 * ASCII only (non-ASCII string content is \u-escaped), integers only. The bytes are produced once,
 * stored and hashed as they are, and never re-serialised for verification.
 */
#ifndef AUDIT_ENTRY_H
#define AUDIT_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/util.h"

/*
 * An entry's fields, encoded on the thread that made them: each top-level field as "key":value
 * followed by a comma, keys sorted, with the places where "prev" and "seq" will go. The writer
 * only seals it (entry_seal), so the one thread that orders the log does not also encode it.
 */
struct entry_body {
    char *text;
    size_t len;
    size_t at_prev, at_seq;
};

/**
 * Encode the fields of obj (everything but v, seq and prev, which it must not hold; every key
 * sorts before "v"). Returns 0, or -1 with *why for a float anywhere or a key that is not
 * printable ASCII.
 */
int entry_body_encode(const json_t *obj, struct entry_body *out, const char **why) MUST_CHECK;
/** The entry's exact bytes: {fields with "prev" and "seq" in place,"v":1}; caller frees. */
char *entry_seal(const struct entry_body *b, uint64_t seq, const char prev_hex[65], size_t *len);
/** Free what b holds. */
void entry_body_clear(struct entry_body *b);

#endif
