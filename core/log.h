/*
 * log: JSON lines on standard error, one object per line, written with a single write() so lines
 * from different threads never interleave. Strings are escaped (control bytes as \u00XX); a
 * token is never logged whole (use mandate_ref()). Debug lines cost one comparison when off.
 */
#ifndef CORE_LOG_H
#define CORE_LOG_H

#include <stddef.h>
#include <string.h>

#include "core/util.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_min_level;

/** Parse "debug", "info", "warn", "error"; -1 for anything else. */
int log_level_parse(const char *s, enum log_level *out) MUST_CHECK;
/** Write one line {"ts","level","msg"[, "request_id"]} if level is enabled. */
void log_write(enum log_level level, const char *request_id, const char *fmt, ...) PRINTF(3, 4);

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_min_level <= LOG_DEBUG)                                                            \
            log_write(LOG_DEBUG, NULL, __VA_ARGS__);                                               \
    } while (0)
#define log_info(...)  log_write(LOG_INFO, NULL, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARN, NULL, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, NULL, __VA_ARGS__)

/**
 * A growable byte buffer for building lines; sb_json_str appends a quoted, escaped JSON string.
 * Embedded; clear with sb_clear().
 */
struct sb {
    char *buf;
    size_t len, cap;
};
/** Make room for n more bytes and the NUL (sb_putn's slow path). */
void sb_grow(struct sb *b, size_t n);
/* Inline: every entry and log line is built from many short appends, most of a constant
 * length that the copy then becomes a store of. */
static inline void sb_putn(struct sb *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap)
        sb_grow(b, n);
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}
static inline void sb_puts(struct sb *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}
void sb_printf(struct sb *b, const char *fmt, ...) PRINTF(2, 3);
void sb_json_str(struct sb *b, const char *s);
/** Append a decimal integer (no printf: this is on every request's path). */
void sb_int(struct sb *b, long long v);
/** Empty the buffer, keeping its memory (for a buffer reused on every request). */
void sb_reset(struct sb *b);
void sb_clear(struct sb *b);

/** The time as "2026-11-22T05:39:04.123Z" into buf (at least 32 bytes). */
void log_timestamp(char *buf, size_t n);

/** Send libevent's own messages through log_write (JSON lines) instead of raw stderr. */
void log_route_libevent(void);

#endif
