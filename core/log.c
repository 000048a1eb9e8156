/*
 * log: JSON-lines logging and the string builder it (and the access log) use.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

enum log_level log_min_level = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *s, enum log_level *out)
{
    int i = name_index(s, level_names, ARRAY_LEN(level_names));
    if (i < 0)
        return -1;
    *out = (enum log_level)i;
    return 0;
}

void sb_grow(struct sb *b, size_t n)
{
    b->cap = (b->len + n + 1) * 2;
    b->buf = xrealloc(b->buf, b->cap);
}

void sb_printf(struct sb *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < (int)sizeof(tmp)) {
        sb_putn(b, tmp, (size_t)(n < 0 ? 0 : n));
        return;
    }
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    sb_puts(b, s);
    free(s);
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates, nothing
 * past U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

void sb_json_str(struct sb *b, const char *s)
{
    sb_putn(b, "\"", 1);
    const char *run = s;
    while (*s) {
        unsigned char c = (unsigned char)*s;
        size_t n = c < 0x80 ? 1 : utf8_len((const unsigned char *)s);
        if (n > 1 || (n == 1 && c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)) {
            s += n;
            continue;
        }
        /* A control byte, a quote, a backslash, or a byte that is not UTF-8: every line must stay
         * valid JSON, so a stray byte is written as the code point of the same value. */
        sb_putn(b, run, (size_t)(s - run));
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof(esc), "\\%c", c);
        else
            snprintf(esc, sizeof(esc), "\\u%04x", c);
        sb_puts(b, esc);
        run = ++s;
    }
    sb_putn(b, run, (size_t)(s - run));
    sb_putn(b, "\"", 1);
}

void sb_int(struct sb *b, long long v)
{
    char buf[24], *p = buf + sizeof(buf);
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    sb_putn(b, p, (size_t)(buf + sizeof(buf) - p));
}

void sb_reset(struct sb *b)
{
    b->len = 0;
    if (b->buf)
        b->buf[0] = '\0';
}

void sb_clear(struct sb *b)
{
    free(b->buf);
    b->buf = NULL;
    b->len = b->cap = 0;
}

void log_timestamp(char *buf, size_t n)
{
    /* Each thread formats a second once (gmtime_r and strftime on every access line cost more
     * than the rest of the line): only the milliseconds change within it. */
    static _Thread_local time_t formatted_s = -1;
    static _Thread_local char date_s[24]; /* "2026-11-22T05:39:04" */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != formatted_s) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        if (!strftime(date_s, sizeof(date_s), "%Y-%m-%dT%H:%M:%S", &tm))
            date_s[0] = '\0';
        formatted_s = ts.tv_sec;
    }
    unsigned ms = (unsigned)(ts.tv_nsec / 1000000);
    size_t k = strlen(date_s);
    if (n < k + 6) {
        if (n)
            buf[0] = '\0';
        return;
    }
    memcpy(buf, date_s, k);
    buf[k] = '.';
    buf[k + 1] = (char)('0' + ms / 100);
    buf[k + 2] = (char)('0' + ms / 10 % 10);
    buf[k + 3] = (char)('0' + ms % 10);
    buf[k + 4] = 'Z';
    buf[k + 5] = '\0';
}

void log_write(enum log_level level, const char *request_id, const char *fmt, ...)
{
    if (level < log_min_level)
        return;
    char ts[40];
    log_timestamp(ts, sizeof(ts));
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvasprintf(fmt, ap);
    va_end(ap);
    struct sb b = {0};
    sb_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, level_names[level]);
    sb_json_str(&b, msg);
    if (request_id) {
        sb_puts(&b, ",\"request_id\":");
        sb_json_str(&b, request_id);
    }
    sb_puts(&b, "}\n");
    ssize_t w = write(STDERR_FILENO, b.buf, b.len);
    (void)w; /* nothing sensible to do when stderr is gone */
    free(msg);
    sb_clear(&b);
}

/* libevent's own messages, as our JSON lines (one write each, escaped like ours). */
static void libevent_log(int severity, const char *msg)
{
    enum log_level l = severity == EVENT_LOG_DEBUG  ? LOG_DEBUG
                       : severity == EVENT_LOG_MSG  ? LOG_INFO
                       : severity == EVENT_LOG_WARN ? LOG_WARN
                                                    : LOG_ERROR;
    log_write(l, NULL, "libevent: %s", msg);
}

void log_route_libevent(void)
{
    event_set_log_callback(libevent_log);
}
