/*
 * entry: the exact bytes of an audit entry (SPEC §4): a compact JSON object with sorted keys,
 * ASCII only (non-ASCII string content is \u-escaped), integers only. The bytes are produced once,
 * stored and hashed as they are, and never re-serialised for verification.
 */
#ifndef AUDIT_ENTRY_H
#define AUDIT_ENTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/log.h"
#include "core/money.h"
#include "core/util.h"

#define ENTRY_MAX_DEPTH 16 /* containers an entry may nest, itself not counted */

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

/*
 * An entry written field by field from C values, without a JSON tree (the hot path: one
 * allocation per entry). Fields are given in sorted key order, each object's keys strictly
 * ascending, containers opened and closed around their members; the bytes, the places of "prev"
 * and "seq" and every refusal are entry_body_encode()'s for the same fields as a tree. The first
 * refusal sticks: later calls do nothing, and entry_builder_finish() reports it. Embedded (on
 * the stack): entry_builder_init(), the fields, then entry_builder_finish(), which releases it.
 * Keys are borrowed until then (the builder compares each with the one before it).
 */
struct entry_builder {
    struct sb b;
    size_t at_prev, at_seq; /* SIZE_MAX until a key that sorts after "prev", "seq" is given */
    const char *why;        /* the first refusal, or NULL */
    int depth;              /* containers open */
    struct {
        const char *last;         /* the previous key at this level, NULL before the first */
        bool array;               /* members have no keys */
        bool any;                 /* a member was given: the next one needs a comma */
    } level[ENTRY_MAX_DEPTH + 1]; /* [0] is the entry itself */
};

/** Start an empty entry in eb. */
void entry_builder_init(struct entry_builder *eb);
/**
 * A string member: s must be UTF-8 (as jansson's json_string() wants it), else the entry is
 * refused. key is the member's name in an object, NULL in an array (likewise below). Keys must
 * be printable ASCII, sort after the previous key of their object and, at the top level, before
 * "v" and be neither "prev" nor "seq"; else the entry is refused.
 */
void entry_put_str(struct entry_builder *eb, const char *key, const char *s);
/** An integer member. */
void entry_put_int(struct entry_builder *eb, const char *key, int64_t v);
/** A money member, {"currency","value"}: money_to_json()'s object. */
void entry_put_money(struct entry_builder *eb, const char *key, const struct money *m);
/** Open an object member; its members follow, then entry_close(). */
void entry_open_object(struct entry_builder *eb, const char *key);
/** Open an array member; its elements follow (key NULL), then entry_close(). */
void entry_open_array(struct entry_builder *eb, const char *key);
/** Close the innermost open container. */
void entry_close(struct entry_builder *eb);
/**
 * The entry's body into out (caller clears it with entry_body_clear), 0; or -1 with *why, the
 * first refusal, and nothing in out. Either way eb is released.
 */
int entry_builder_finish(struct entry_builder *eb, struct entry_body *out,
                         const char **why) MUST_CHECK;

/**
 * Encode the fields of obj (everything but v, seq and prev, which it must not hold; every key
 * sorts before "v") through the builder's calls, each object's keys sorted. Returns 0, or -1
 * with *why for what the builder refuses and for a float anywhere.
 */
int entry_body_encode(const json_t *obj, struct entry_body *out, const char **why) MUST_CHECK;
/** The entry's exact bytes: {fields with "prev" and "seq" in place,"v":1}; caller frees. */
char *entry_seal(const struct entry_body *b, uint64_t seq, const char prev_hex[65], size_t *len);
/** Free what b holds. */
void entry_body_clear(struct entry_body *b);

#endif
