/*
 * accesslog: the fixed-format access log line.
 */
#include "gateway/accesslog.h"

#include <unistd.h>

#include "core/log.h"

static void field(struct sb *b, const char *name, const char *value)
{
    sb_printf(b, ",\"%s\":", name);
    sb_json_str(b, value ? value : "");
}

void accesslog_write(const struct access *a)
{
    char ts[40];
    log_timestamp(ts, sizeof(ts));
    struct sb b = {0};
    sb_printf(&b, "{\"ts\":\"%s\",\"type\":\"access\"", ts);
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
    sb_printf(&b, ",\"status\":%d,\"bytes\":%llu,\"check_us\":%lld,\"upstream_us\":%lld}\n",
              a->status, (unsigned long long)a->bytes, (long long)a->check_us,
              (long long)a->upstream_us);
    ssize_t w = write(STDERR_FILENO, b.buf, b.len);
    (void)w;
    sb_clear(&b);
}
