/*
 * util: allocation that never returns NULL, small string helpers and the clock.
 * Out of memory is not an error we can recover from in a proxy: we abort.
 */
#ifndef CORE_UTIL_H
#define CORE_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define MUST_CHECK   __attribute__((warn_unused_result))
#define PRINTF(a, b) __attribute__((format(printf, a, b)))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/** malloc that aborts on failure; never returns NULL. */
void *xmalloc(size_t n);
/** calloc that aborts on failure. */
void *xcalloc(size_t n, size_t size);
/** realloc that aborts on failure. */
void *xrealloc(void *p, size_t n);
/** strdup that aborts on failure; xstrdup(NULL) is NULL. */
char *xstrdup(const char *s);
/** strndup that aborts on failure. */
char *xstrndup(const char *s, size_t n);
/** printf into a new string the caller frees. */
char *xasprintf(const char *fmt, ...) PRINTF(1, 2);
/** vprintf into a new string the caller frees. */
char *xvasprintf(const char *fmt, va_list ap);

/** Lower-case hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void hex_encode(const unsigned char *in, size_t n, char *out);
/** Decode exactly 2n hex digits into n bytes; 0 or -1. */
int hex_decode(const char *in, unsigned char *out, size_t n) MUST_CHECK;

/** Wall clock, seconds since the epoch. */
int64_t now_s(void);
/** Wall clock, milliseconds since the epoch. */
int64_t now_ms(void);
/** Monotonic clock in microseconds, for durations. */
int64_t mono_us(void);

/** The index of s in names[0..n), or -1 (also for s NULL): for parsing enum names. */
int name_index(const char *s, const char *const names[], size_t n);

/** Constant-time comparison of n bytes: 1 equal, 0 not. */
int ct_equal(const void *a, const void *b, size_t n);

/** Read a whole file (at most max bytes) into a NUL-terminated buffer; NULL with *err set. */
char *file_read(const char *path, size_t max, size_t *len, char **err) MUST_CHECK;

#endif
