/*
 * entry: the exact bytes of an audit entry (SPEC §4): a compact JSON object with sorted keys,
 * ASCII only (non-ASCII string content is \u-escaped), integers only. The bytes are produced once,
 * stored and hashed as they are, and never re-serialised for verification.
 */
#ifndef AUDIT_ENTRY_H
#define AUDIT_ENTRY_H

#include <stddef.h>

#include <jansson.h>

#include "core/util.h"

/**
 * Encode obj as entry bytes (a new NUL-terminated string, length in *len). Returns NULL with *why
 * when obj holds a float anywhere or a key that is not printable ASCII.
 */
char *entry_encode(const json_t *obj, size_t *len, const char **why) MUST_CHECK;

#endif
