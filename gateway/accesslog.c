/*
 * accesslog: the fixed-format access log line.
 */
#include "gateway/accesslog.h"

#include <unistd.h>

#include "core/log.h"

static void name(struct sb *b, const char *n)
{
    sb_puts(b, ",\"");
    sb_puts(b, n);
    sb_puts(b, "\":");
}

static void field(struct sb *b, const char *n, const char *value)
{
    name(b, n);
    sb_json_str(b, value ? value : "");
}

static void number(struct sb *b, const char *n, long long value)
{
    name(b, n);
    sb_int(b, value);
}

void accesslog_flush(struct sb *buf)
{
    if (buf->len) {
        ssize_t w = write(STDERR_FILENO, buf->buf, buf->len);
        (void)w; /* nothing sensible to do when stderr is gone */
        buf->len = 0;
    }
}

/* A line's opening: its time and type. */
static void begin(struct sb *b, const char *type)
{
    char ts[40];
    log_timestamp(ts, sizeof(ts));
    sb_puts(b, "{\"ts\":\"");
    sb_puts(b, ts);
    sb_puts(b, "\",\"type\":\"");
    sb_puts(b, type);
    sb_puts(b, "\"");
}

void accesslog_summary(const char *client, int64_t unix_s, uint64_t count,
                       const uint32_t codes[CODE__COUNT])
{
    struct sb b = {0};
    begin(&b, "access_summary");
    field(&b, "client", client);
    number(&b, "unix_s", unix_s);
    number(&b, "count", (long long)count);
    sb_puts(&b, ",\"codes\":{");
    const char *sep = "";
    for (int c = 0; c < CODE__COUNT; c++)
        if (codes[c]) {
            sb_puts(&b, sep);
            sb_json_str(&b, code_name((enum code)c));
            sb_puts(&b, ":");
            sb_int(&b, codes[c]);
            sep = ",";
        }
    sb_puts(&b, "}}\n");
    accesslog_flush(&b);
    sb_clear(&b);
}

void accesslog_write(struct sb *buf, const struct access *a)
{
    struct sb b = *buf;
    begin(&b, "access");
    field(&b, "request_id", a->request_id);
    field(&b, "method", a->method);
    field(&b, "path", a->path);
    field(&b, "route", a->route);
    field(&b, "merchant", a->merchant);
    field(&b, "action", a->action);
    field(&b, "principal", a->principal);
    field(&b, "agent", a->agent);
    field(&b, "decision", a->decision);
    field(&b, "code", a->code);
    if (a->surface)
        field(&b, "surface", a->surface);
    if (a->tls_client && a->tls_client[0])
        field(&b, "tls_client", a->tls_client);
    number(&b, "status", a->status);
    number(&b, "bytes", (long long)a->bytes);
    number(&b, "check_us", a->check_us);
    number(&b, "upstream_us", a->upstream_us);
    sb_puts(&b, "}\n");
    *buf = b;
    if (buf->len >= ACCESSLOG_FLUSH_BYTES)
        accesslog_flush(buf);
}
