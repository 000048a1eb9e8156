/*
 * cfg: helpers for reading a JSON configuration file with errors that name their JSON path,
 * e.g. "gateway.json: merchants[0].routes[2].method: expected one of GET, POST". Errors are
 * collected, not fatal, so --check-config can print every one of them in one run. A getter that
 * fails records the error and returns its default, so loading carries on.
 */
#ifndef CORE_CFG_H
#define CORE_CFG_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "core/util.h"

#define CFG_PATH_MAX  256
#define CFG_MAX_BYTES (4 * 1024 * 1024)

struct cfg {
    char *file;    /* the name as given, for messages */
    char *dir;     /* its directory, for relative file names */
    json_t *root;  /* owned; NULL when the file could not be parsed */
    char **errors; /* "file: path: message" */
    size_t nerrors;
};

/** Load path into c; returns 0 or -1 (the error is recorded either way). */
int cfg_open(struct cfg *c, const char *path) MUST_CHECK;
/** Free what c holds. */
void cfg_clear(struct cfg *c);
/** Print every recorded error on stderr, one a line; returns how many. */
size_t cfg_print_errors(const struct cfg *c);
/** Record an error at path. */
void cfg_error(struct cfg *c, const char *path, const char *fmt, ...) PRINTF(3, 4);
/** Write "path.key" (or "key" at the root) into buf. */
void cfg_join(char *buf, const char *path, const char *key);
/** Write "path[i]" into buf. */
void cfg_index(char *buf, const char *path, size_t i);

/** Record an error for every member of obj (at path) not in the NULL-terminated allowed list. */
void cfg_keys(struct cfg *c, const char *path, const json_t *obj, const char *const allowed[]);
/** The object member key, or NULL (error recorded when required or of another type). */
json_t *cfg_object(struct cfg *c, const char *path, const json_t *obj, const char *key,
                   bool required);
/** The array member key, or NULL (error recorded when required or of another type). */
json_t *cfg_array(struct cfg *c, const char *path, const json_t *obj, const char *key,
                  bool required);
/** A string member (borrowed), dflt when absent; error when required or not a non-empty string. */
const char *cfg_string(struct cfg *c, const char *path, const json_t *obj, const char *key,
                       bool required, const char *dflt);
/** An integer member in [min, max], dflt when absent. */
int64_t cfg_int(struct cfg *c, const char *path, const json_t *obj, const char *key, bool required,
                int64_t dflt, int64_t min, int64_t max);
/** A boolean member, dflt when absent. */
bool cfg_bool(struct cfg *c, const char *path, const json_t *obj, const char *key, bool dflt);
/** The index of a string member in the NULL-terminated choices, dflt when absent. */
int cfg_enum(struct cfg *c, const char *path, const json_t *obj, const char *key, bool required,
             const char *const choices[], int dflt);
/** A file name member resolved against the configuration's directory (caller frees), or NULL. */
char *cfg_file(struct cfg *c, const char *path, const json_t *obj, const char *key, bool required);
/** A 64-hex-digit SHA-256 member into out[32]; error when missing or malformed. */
void cfg_sha256(struct cfg *c, const char *path, const json_t *obj, const char *key,
                unsigned char out[32]);
/** A "host:port" member split into a new host string and port; error when malformed. */
int cfg_listen(struct cfg *c, const char *path, const json_t *obj, const char *key, bool required,
               char **host, int *port);

/** Parse "host:port" (IPv4, name or [IPv6]); 0 or -1. host is a new string. */
int hostport_parse(const char *s, char **host, int *port) MUST_CHECK;

#endif
