/*
 * libFuzzer target: hp_parse_response() on arbitrary bytes (the first byte says whether the
 * request was HEAD). Nothing may crash or read past the input; the framing it reports must be
 * consistent, slices inside the head, and the result prefix-stable.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/http_parse.h"

#define MAXH 64

static void inside(struct hp_str s, const char *base, int len)
{
    if (s.p && (s.p < base || s.p + s.n > base + len))
        abort();
}

static void check(const struct hp_response *r, const char *data, int n, size_t max_headers)
{
    if (n <= 0)
        return;
    if (r->n_headers > max_headers || r->status < 100 || r->status > 599 || r->status == 101)
        abort();
    inside(r->reason, data, n);
    for (size_t i = 0; i < r->n_headers; i++) {
        inside(r->headers[i].name, data, n);
        inside(r->headers[i].value, data, n);
        if (r->headers[i].name.n == 0)
            abort();
    }
    if (r->chunked && r->content_length >= 0)
        abort();
    switch (r->body) {
    case HP_BODY_NONE:
        break;
    case HP_BODY_LENGTH:
        if (r->content_length < 0 || r->chunked)
            abort();
        break;
    case HP_BODY_CHUNKED:
        if (!r->chunked)
            abort();
        break;
    case HP_BODY_UNTIL_CLOSE:
        if (r->keep_alive || r->chunked || r->content_length >= 0)
            abort();
        break;
    default:
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static struct hp_header h1[MAXH], h2[MAXH];
    static const struct hp_limits lims[] = {{8192, MAXH}, {40, 2}};
    bool head = data[0] & 1;
    const char *in = (const char *)data + 1;
    size--;
    for (size_t l = 0; l < 2; l++) {
        const struct hp_limits *lim = &lims[l];
        struct hp_response a = {.headers = h1}, b = {.headers = h2};
        int n = hp_parse_response(in, size, lim, head, &a);
        if ((n > 0 && (size_t)n > size) || (n < 0 && -n >= HP__ERROR_COUNT))
            abort();
        check(&a, in, n, lim->max_headers);
        size_t k = (size_t)(data[0] >> 1) * size / 128;
        char *pre = malloc(k ? k : 1);
        memcpy(pre, in, k);
        int m = hp_parse_response(pre, k, lim, head, &b);
        if (m != HP_INCOMPLETE && m != n)
            abort();
        if (m > 0 && (b.status != a.status || b.body != a.body || b.keep_alive != a.keep_alive ||
                      b.content_length != a.content_length || b.n_headers != a.n_headers))
            abort();
        free(pre);
    }
    return 0;
}
