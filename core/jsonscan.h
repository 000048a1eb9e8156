/*
 * jsonscan: sjson's strict JSON read in place, without building a tree, for the hot path (the
 * header and claims of every mandate). js_parse() accepts exactly what sjson_parse() accepts
 * (jansson 2.14 with duplicate members refused, nesting at most SJSON_MAX_DEPTH): RFC 8259
 * grammar, UTF-8 without overlongs or surrogates, no NUL (\u0000), escapes with paired
 * surrogates, integers that fit an int64_t, reals that do not overflow a double. It allocates
 * nothing for a mandate's few members: only a top-level object of more than JS_INLINE_MEMBERS
 * members grows its index, and the duplicates of an object of more than 16 are found by sorting
 * (qsort()), so that no input costs quadratic time. Values are then
 * read straight from the checked bytes: member lookups, array walks, integers, strings decoded
 * into the caller's buffer. tests/fuzz/fuzz_claims_diff.c holds it to sjson_parse().
 */
#ifndef CORE_JSONSCAN_H
#define CORE_JSONSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

#define JS_INLINE_MEMBERS 32

/* JS_NONE is an absent value: what a lookup of a missing member gives. */
enum js_type {
    JS_NONE,
    JS_OBJECT,
    JS_ARRAY,
    JS_STRING,
    JS_INT,
    JS_REAL,
    JS_TRUE,
    JS_FALSE,
    JS_NULL
};

/** A value of a checked document: its bytes (p is NULL when absent). Borrowed from the input. */
struct js_val {
    const char *p;
    size_t n;
};

/** One member of an object: its key (the bytes between the quotes, escapes not decoded). */
struct js_member {
    struct js_val key;
    struct js_val val;
    uint32_t hash;   /* FNV-1a of the decoded key */
    size_t key_dlen; /* decoded key length */
    bool key_esc;    /* the key has escapes */
};

/** A checked document. Embedded (js_parse() / js_clear()); not to be copied. */
struct js_doc {
    struct js_val root;
    struct js_member *m; /* the top-level object's members in order, when it is one */
    size_t n;
    size_t cap;
    struct js_member inline_m[JS_INLINE_MEMBERS];
};

/**
 * Check buf (len bytes) as one JSON object or array under sjson's rules and index its top-level
 * members. Returns 0, or -1 when sjson_parse() would refuse it. Either way js_clear() after.
 */
int js_parse(struct js_doc *d, const char *buf, size_t len) MUST_CHECK;
/** Release what d holds (only a grown member index). */
void js_clear(struct js_doc *d);

/** The type of a value of a checked document. */
enum js_type js_type(struct js_val v);
/** The top-level member key (ASCII, no NUL) of d, or an absent value. */
struct js_val js_root_get(const struct js_doc *d, const char *key);
/** The member key of obj, or an absent value (also when obj is not an object). */
struct js_val js_get(struct js_val obj, const char *key);
/** The number of members of an object or elements of an array; 0 for anything else. */
size_t js_size(struct js_val v);
/**
 * Step *it to the next element of array arr (start with it->p NULL): true, or false at the end
 * (or when arr is not an array).
 */
bool js_next(struct js_val arr, struct js_val *it) MUST_CHECK;
/** A JSON integer's value in *out: 0, or -1 when v is not an integer (a real, absent, ...). */
int js_int(struct js_val v, int64_t *out) MUST_CHECK;
/**
 * Decode string v into dst (cap >= 1 bytes): its first cap - 1 bytes, NUL-terminated. Returns
 * the decoded length, which may be cap or more (then dst holds a prefix); 0 when v is not a
 * string, as for "".
 */
size_t js_str(struct js_val v, char *dst, size_t cap);

#endif
