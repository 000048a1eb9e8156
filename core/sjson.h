/*
 * sjson: strict JSON on top of jansson. Duplicate member names are rejected everywhere, input
 * size and nesting depth are bounded, and a NUL inside a string is refused. The helpers read
 * members without jansson's reference conventions leaking out: everything returned is borrowed
 * from the document unless it says otherwise.
 */
#ifndef CORE_SJSON_H
#define CORE_SJSON_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "core/util.h"

#define SJSON_MAX_DEPTH 32

/**
 * Parse len bytes as one JSON value with duplicates refused and depth at most SJSON_MAX_DEPTH.
 * Returns a new reference, or NULL with *err (caller frees) saying what and where.
 */
json_t *sjson_parse(const char *buf, size_t len, char **err) MUST_CHECK;
/** Read and parse a file of at most max bytes; NULL with *err naming the file. */
json_t *sjson_load_file(const char *path, size_t max, char **err) MUST_CHECK;
/** The string member key of obj, or NULL when absent or not a string (borrowed). */
const char *sjson_str(const json_t *obj, const char *key);
/** Store the integer member key of obj in *out: 0, or -1 when absent or not a JSON integer. */
int sjson_int(const json_t *obj, const char *key, int64_t *out) MUST_CHECK;
/** Compact serialisation with sorted keys; a new string the caller frees. */
char *sjson_dump(const json_t *v);
/** Set obj[key] = v, taking ownership of v (jansson's "_new" convention, named once). */
void sjson_set(json_t *obj, const char *key, json_t *v);
/** Append v to arr, taking ownership of v. */
void sjson_append(json_t *arr, json_t *v);
/** s as a JSON string; when it is not valid UTF-8 (a path, a message cut short), every byte
 * over 0x7F becomes '?'. Never NULL. */
json_t *sjson_text(const char *s);

#endif
