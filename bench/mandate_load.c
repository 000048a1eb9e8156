/*
 * mandate_load: a closed-loop HTTP/1.1 load client that mints a fresh single-use ES256 intent
 * mandate for every request, at the moment it is sent (iat = now, exp = now + TTL_S), so that no
 * mandate is ever stale however slowly the gateway goes.
 *   mandate_load KEY.pem KID PORT PATH N CONNS [TTL_S] [MAX_S]
 * Claims as bench/mint_tokens: iss wallet-1, sub alice, agent bench-agent, aud bench-shop,
 * action echo, uses 1, a random jti. Sends N requests on CONNS keep-alive connections to
 * 127.0.0.1:PORT (epoll, one thread), stops early after MAX_S seconds (default 600).
 * Prints: requests, seconds, requests/s, counts by status, socket errors, latency p50/p99/max
 * (µs, from the send of a request to the last byte of its answer, minting excluded).
 * Exit status 0 if every request got a 2xx, 2 otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "core/jwk.h"
#include "core/mandate.h"
#include "core/sjson.h"

#define RBUF 16384

struct conn {
    int fd;
    char *out;
    size_t out_len, out_off;
    char in[RBUF];
    size_t in_len;
    int64_t sent_us;
    int busy;
};

static struct jwk key;
static const char *path;
static long long ttl;
static int port;
static long sent, done, n_total, errors;
static long status_count[6];  /* 1xx..5xx by hundred; [0] other */
static long lat_hist[64 * 8]; /* log2 buckets, 8 sub-buckets each */

static void lat_add(int64_t us)
{
    if (us < 1)
        us = 1;
    int b = 63 - __builtin_clzll((unsigned long long)us);
    int sub = b >= 3 ? (int)((us >> (b - 3)) & 7) : 0;
    lat_hist[b * 8 + sub]++;
}

static int64_t lat_q(double q)
{
    long total = 0, acc = 0;
    for (int i = 0; i < 64 * 8; i++)
        total += lat_hist[i];
    for (int i = 0; i < 64 * 8; i++) {
        acc += lat_hist[i];
        if (total && acc >= q * total) {
            int b = i / 8, sub = i % 8;
            /* upper bound of the bucket */
            return b >= 3 ? ((int64_t)(8 + sub + 1) << (b - 3)) : ((int64_t)1 << (b + 1));
        }
    }
    return 0;
}

static char *mint(void)
{
    unsigned char r[12];
    char jti[25];
    if (RAND_bytes(r, sizeof(r)) != 1)
        return NULL;
    hex_encode(r, sizeof(r), jti);
    int64_t now = now_s();
    json_t *c = json_pack("{ss ss s{ss} ss ss sI sI ss sI}", "iss", "wallet-1", "sub", "alice",
                          "act", "sub", "bench-agent", "aud", "bench-shop", "action", "echo", "iat",
                          (json_int_t)now, "exp", (json_int_t)(now + ttl), "jti", jti, "uses",
                          (json_int_t)1);
    char *tok = mandate_sign(&key, MANDATE_INTENT, c);
    json_decref(c);
    return tok;
}

static int open_conn(struct conn *c, int ep)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0 && errno != EINPROGRESS)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void close_conn(struct conn *c, int ep)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->in_len = 0;
}

/* Start the next request on c, if any remain. Returns 0, or -1 when there is nothing to send. */
static int start_request(struct conn *c, int ep)
{
    if (sent >= n_total)
        return -1;
    char *tok = mint();
    if (!tok) {
        fputs("mandate_load: minting failed\n", stderr);
        exit(1);
    }
    free(c->out);
    int n = asprintf(&c->out,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Mandate %s\r\n\r\n",
                     path, port, tok);
    free(tok);
    if (n < 0)
        exit(1);
    c->out_len = (size_t)n;
    c->out_off = 0;
    c->busy = 1;
    c->sent_us = mono_us();
    sent++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    return 0;
}

/* Length of a complete answer at the start of c->in, 0 if incomplete, -1 if unparseable.
 * *status and *close_after are set when complete. */
static long answer_len(struct conn *c, int *status, int *close_after)
{
    c->in[c->in_len < RBUF ? c->in_len : RBUF - 1] = '\0';
    char *end = strstr(c->in, "\r\n\r\n");
    if (!end)
        return c->in_len >= RBUF - 1 ? -1 : 0;
    size_t hlen = (size_t)(end - c->in) + 4;
    if (sscanf(c->in, "HTTP/1.%*d %d", status) != 1)
        return -1;
    long clen = -1;
    int chunked = 0;
    *close_after = 0;
    for (char *l = strstr(c->in, "\r\n") + 2; l < end; l = strstr(l, "\r\n") + 2) {
        if (strncasecmp(l, "Content-Length:", 15) == 0)
            clen = atol(l + 15);
        else if (strncasecmp(l, "Transfer-Encoding:", 18) == 0 && strstr(l, "chunked") &&
                 strstr(l, "chunked") < strstr(l, "\r\n"))
            chunked = 1;
        else if (strncasecmp(l, "Connection:", 11) == 0 && strcasestr(l, "close") &&
                 strcasestr(l, "close") < strstr(l, "\r\n"))
            *close_after = 1;
    }
    if (!chunked) {
        if (clen < 0)
            return -1;
        return c->in_len >= hlen + (size_t)clen ? (long)(hlen + (size_t)clen) : 0;
    }
    size_t at = hlen;
    for (;;) {
        char *crlf = memmem(c->in + at, c->in_len - at, "\r\n", 2);
        if (!crlf)
            return 0;
        long sz = strtol(c->in + at, NULL, 16);
        at = (size_t)(crlf - c->in) + 2 + (size_t)sz + 2;
        if (at > c->in_len)
            return 0;
        if (sz == 0)
            return (long)at;
    }
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fputs("usage: mandate_load KEY.pem KID PORT PATH N CONNS [TTL_S] [MAX_S]\n", stderr);
        return 1;
    }
    char *err = NULL;
    if (jwk_load_private(argv[1], argv[2], &key, &err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    port = atoi(argv[3]);
    path = argv[4];
    n_total = atol(argv[5]);
    int nconn = atoi(argv[6]);
    ttl = argc > 7 ? atoll(argv[7]) : 10;
    int64_t max_us = (argc > 8 ? atoll(argv[8]) : 600) * 1000000LL;
    int ep = epoll_create1(0);
    struct conn *cs = calloc((size_t)nconn, sizeof(*cs));
    int64_t t0 = mono_us();
    for (int i = 0; i < nconn; i++) {
        if (open_conn(&cs[i], ep) != 0) {
            perror("connect");
            return 1;
        }
        start_request(&cs[i], ep);
    }
    struct epoll_event evs[256];
    int stopped = 0;
    while (done + errors < sent || (!stopped && sent < n_total)) {
        if (!stopped && mono_us() - t0 > max_us) {
            stopped = 1;
            n_total = sent; /* no new requests; let those in flight finish */
        }
        int n = epoll_wait(ep, evs, 256, 1000);
        if (n < 0 && errno != EINTR)
            break;
        if (stopped && mono_us() - t0 > max_us + 5000000LL)
            break;
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0)
                continue;
            if ((evs[i].events & EPOLLOUT) && c->out_off < c->out_len) {
                ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
                if (w > 0)
                    c->out_off += (size_t)w;
                else if (w < 0 && errno != EAGAIN)
                    goto broken;
                if (c->out_off == c->out_len) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = read(c->fd, c->in + c->in_len, RBUF - 1 - c->in_len);
                if (r == 0 || (r < 0 && errno != EAGAIN))
                    goto broken;
                if (r > 0)
                    c->in_len += (size_t)r;
                int status = 0, close_after = 0;
                long len = answer_len(c, &status, &close_after);
                if (len < 0)
                    goto broken;
                if (len == 0)
                    continue;
                lat_add(mono_us() - c->sent_us);
                status_count[status >= 100 && status < 600 ? status / 100 : 0]++;
                done++;
                c->busy = 0;
                memmove(c->in, c->in + len, c->in_len - (size_t)len);
                c->in_len -= (size_t)len;
                if (close_after) {
                    close_conn(c, ep);
                    if (sent < n_total && open_conn(c, ep) != 0)
                        continue;
                }
                if (c->fd >= 0)
                    start_request(c, ep);
            }
            continue;
        broken:
            if (c->busy) {
                errors++;
                c->busy = 0;
            }
            close_conn(c, ep);
            if (sent < n_total && open_conn(c, ep) == 0)
                start_request(c, ep);
        }
    }
    double secs = (double)(mono_us() - t0) / 1e6;
    printf("requests=%ld seconds=%.1f rate=%.0f/s 2xx=%ld 4xx=%ld 5xx=%ld other=%ld "
           "socket_errors=%ld latency_us p50<=%lld p99<=%lld max<=%lld%s\n",
           done, secs, done / secs, status_count[2], status_count[4], status_count[5],
           status_count[0] + status_count[1] + status_count[3], errors, (long long)lat_q(0.5),
           (long long)lat_q(0.99), (long long)lat_q(1.0), stopped ? " (stopped at MAX_S)" : "");
    jwk_clear(&key);
    return status_count[2] == done && !errors && !stopped ? 0 : 2;
}
