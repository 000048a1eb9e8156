/*
 * libFuzzer target: hp_parse_request() on arbitrary bytes. Nothing may crash or read past the
 * input, and what it returns must hold together: the length within the input, every slice inside
 * the head, header names tokens and values trimmed, and the result prefix-stable (a prefix parses
 * to "incomplete" or to exactly the same result as the whole). A head moved with its bytes
 * (hp_request_move) must equal the parse of the copy, slice for slice.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/http_parse.h"

#define MAXH 64

static void inside(struct hp_str s, const uint8_t *base, int len)
{
    if (s.p == NULL) {
        if (s.n)
            abort();
        return;
    }
    if ((const uint8_t *)s.p < base || (const uint8_t *)s.p + s.n > base + len)
        abort();
}

static void check(const struct hp_request *r, const uint8_t *data, int n, size_t max_headers)
{
    if (n <= 0)
        return;
    if (r->n_headers > max_headers)
        abort();
    inside(r->method_str, data, n);
    inside(r->target, data, n);
    inside(r->path, data, n);
    inside(r->query, data, n);
    inside(r->host, data, n);
    if (r->path.n == 0 || r->path.p[0] != '/' || r->path.p != r->target.p)
        abort();
    if (r->target.n != r->path.n + (r->query.p ? r->query.n + 1 : 0))
        abort();
    if (r->minor != 0 && r->minor != 1)
        abort();
    if (r->minor == 1 && !r->host.p)
        abort();
    if (r->chunked && r->content_length >= 0)
        abort();
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct hp_header *h = &r->headers[i];
        inside(h->name, data, n);
        inside(h->value, data, n);
        if (h->name.n == 0 || memchr(h->name.p, ':', h->name.n))
            abort();
        for (size_t j = 0; j < h->value.n; j++)
            if (h->value.p[j] == '\r' || h->value.p[j] == '\n' || h->value.p[j] == 0)
                abort();
        if (h->value.n && (h->value.p[0] == ' ' || h->value.p[h->value.n - 1] == '\t' ||
                           h->value.p[h->value.n - 1] == ' ' || h->value.p[0] == '\t'))
            abort();
    }
    struct hp_tokens it;
    struct hp_str tok;
    hp_tokens_init(&it, r->headers, r->n_headers, "connection");
    for (size_t k = 0; hp_tokens_next(&it, &tok); k++) {
        inside(tok, data, n);
        if (tok.n == 0 || k > (size_t)n)
            abort();
    }
}

static void same_str(struct hp_str x, struct hp_str y)
{
    if (x.p != y.p || x.n != y.n)
        abort();
}

/* Parse once in data, move to a copy of the head's n bytes: the same as parsing the copy. */
static void check_move(const struct hp_request *a, const uint8_t *data, int n,
                       const struct hp_limits *lim)
{
    static struct hp_header hm[MAXH], hp[MAXH];
    char *copy = malloc((size_t)n);
    memcpy(copy, data, (size_t)n);
    struct hp_request m = {.headers = hm}, p = {.headers = hp};
    hp_request_move(a, (const char *)data, &m, copy);
    if (hp_parse_request(copy, (size_t)n, lim, &p) != n || m.headers != hm ||
        m.n_headers != p.n_headers || m.method != p.method || m.minor != p.minor ||
        m.content_length != p.content_length || m.chunked != p.chunked ||
        m.keep_alive != p.keep_alive || m.expect_continue != p.expect_continue)
        abort();
    same_str(m.method_str, p.method_str);
    same_str(m.target, p.target);
    same_str(m.path, p.path);
    same_str(m.query, p.query);
    same_str(m.host, p.host);
    for (size_t i = 0; i < p.n_headers; i++) {
        same_str(m.headers[i].name, p.headers[i].name);
        same_str(m.headers[i].value, p.headers[i].value);
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct hp_header h1[MAXH], h2[MAXH];
    /* The default-ish bound, and a tight one that the input often crosses. */
    static const struct hp_limits lims[] = {{8192, MAXH}, {48, 3}};
    for (size_t l = 0; l < 2; l++) {
        const struct hp_limits *lim = &lims[l];
        struct hp_request a = {.headers = h1}, b = {.headers = h2};
        int n = hp_parse_request((const char *)data, size, lim, &a);
        if (n > 0 && (size_t)n > size)
            abort();
        if (n < 0 && -n >= HP__ERROR_COUNT)
            abort();
        check(&a, data, n, lim->max_headers);
        if (n > 0)
            check_move(&a, data, n, lim);
        /* A prefix, in an exact-size buffer so reading past it is caught. */
        size_t k = size ? (size_t)data[0] * size / 256 : 0;
        char *pre = malloc(k ? k : 1);
        memcpy(pre, data, k);
        int m = hp_parse_request(pre, k, lim, &b);
        if (m != HP_INCOMPLETE && m != n)
            abort();
        if (m > 0 && (b.n_headers != a.n_headers || b.content_length != a.content_length ||
                      b.keep_alive != a.keep_alive || b.chunked != a.chunked ||
                      b.path.n != a.path.n || b.method != a.method))
            abort();
        free(pre);
    }
    return 0;
}
