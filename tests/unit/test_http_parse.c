/*
 * Unit tests for gateway/http_parse: every SPEC §5 refusal as a table row with its error, the
 * accepted forms with their parsed fields, and for each row every prefix (fed as its own exact-size
 * buffer, so a read past the end is an ASan error) must be incomplete or fail the same way. The
 * chunked decoder is fed whole, split at every byte boundary, and one byte at a time.
 */
#include "testkit.h"

#include <time.h>

#include "gateway/http_parse.h"

#define MAXH 16
static const struct hp_limits lim = {8192, MAXH};

struct row {
    const char *s;
    size_t n;
    int want; /* > 0: the head length; else -(enum hp_error) */
};
#define OKR(s)                                                                                     \
    {                                                                                              \
        s, sizeof(s) - 1, (int)sizeof(s) - 1                                                       \
    }
#define BAD(s, e)                                                                                  \
    {                                                                                              \
        s, sizeof(s) - 1, -(e)                                                                     \
    }

static int parse_req(const char *s, size_t n, const struct hp_limits *l, struct hp_request *r)
{
    static struct hp_header h[256];
    static char *copy; /* the slices in *r point here until the next call */
    r->headers = h;
    /* An exact-size heap copy: ASan catches any read past n. */
    free(copy);
    copy = xmalloc(n ? n : 1);
    memcpy(copy, s, n);
    return hp_parse_request(copy, n, l, r);
}

static int parse_resp(const char *s, size_t n, const struct hp_limits *l, bool head,
                      struct hp_response *r)
{
    static struct hp_header h[256];
    static char *copy;
    r->headers = h;
    free(copy);
    copy = xmalloc(n ? n : 1);
    memcpy(copy, s, n);
    return hp_parse_response(copy, n, l, head, r);
}

static void show(const char *s, size_t n, int got, int want)
{
    char esc[512];
    size_t j = 0;
    for (size_t i = 0; i < n && j < sizeof(esc) - 5; i++)
        j += (size_t)snprintf(esc + j, sizeof(esc) - j,
                              s[i] >= 0x20 && s[i] < 0x7f ? "%c" : "\\x%02x", (unsigned char)s[i]);
    esc[j] = 0;
    fail_msg("\"%s\": got %d (%s), want %d (%s)", esc, got, got < 0 ? hp_error_str(-got) : "", want,
             want < 0 ? hp_error_str(-want) : "");
}

/* The whole row gives its result; every proper prefix gives incomplete or that same result. */
static void check_request_row(const struct row *r, const struct hp_limits *l)
{
    struct hp_request req;
    int got = parse_req(r->s, r->n, l, &req);
    if (got != r->want)
        show(r->s, r->n, got, r->want);
    for (size_t k = 0; k < r->n; k++) {
        int p = parse_req(r->s, k, l, &req);
        if (p != HP_INCOMPLETE && p != r->want)
            show(r->s, k, p, r->want);
        if (p > 0 && (size_t)p > k)
            fail_msg("length %d past the %zu bytes given", p, k);
    }
}

static const struct row requests[] = {
    /* accepted */
    OKR("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    OKR("GET /a/b?x=1&y=/../%zz HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"),
    OKR("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
    OKR("POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\n\r\n"),
    OKR("GET / HTTP/1.0\r\n\r\n"),
    OKR("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
    OKR("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    OKR("GET / HTTP/1.1\r\nHost: [::1]:80\r\nX: a\tb\r\nY:\r\nZ:  \t v v \t \r\n\r\n"),
    OKR("GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n"),
    OKR("GET /.../a..b/.well-known/%41/a//b/;/x;y HTTP/1.1\r\nHost: a\r\n\r\n"),
    OKR("BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n"),
    OKR("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n"),
    OKR("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n"),
    OKR("GET / HTTP/1.1\r\nHost:\r\n\r\n"),
    OKR("GET /a!$&'()*+,=:@~-_ HTTP/1.1\r\nHost: a\r\n\r\n"),
    /* request line */
    BAD(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_REQUEST_LINE),
    OKR("\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    BAD("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_REQUEST_LINE),
    BAD("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_REQUEST_LINE),
    BAD("GET\r\n\r\n", HP_BAD_REQUEST_LINE),
    BAD("GET /\r\n\r\n", HP_BAD_REQUEST_LINE),
    BAD("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", HP_BAD_REQUEST_LINE),
    BAD("GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_METHOD),
    BAD("G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_METHOD),
    /* versions other than 1.0 and 1.1 */
    BAD("GET / HTTP/1.2\r\nHost: a\r\n\r\n", HP_BAD_VERSION),
    BAD("GET / HTTP/2.0\r\nHost: a\r\n\r\n", HP_BAD_VERSION),
    BAD("GET / HTTP/0.9\r\nHost: a\r\n\r\n", HP_BAD_VERSION),
    BAD("GET / http/1.1\r\nHost: a\r\n\r\n", HP_BAD_VERSION),
    BAD("GET / HTTP/1.10\r\nHost: a\r\n\r\n", HP_BAD_VERSION),
    /* a space in the target leaves something that is not a version */
    BAD("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_VERSION),
    /* target forms */
    BAD("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_TARGET),
    BAD("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_TARGET),
    BAD("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_TARGET),
    BAD("GET /a#f HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_TARGET),
    BAD("GET /a?x#f HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_TARGET),
    BAD("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_TARGET),
    BAD("GET /a?\x80 HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_TARGET),
    BAD("GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_TARGET),
    BAD("GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_TARGET),
    BAD("GET /a%4 HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_TARGET),
    BAD("GET /a%00b HTTP/1.1\r\nHost: a\r\n\r\n", HP_BAD_TARGET),
    BAD("GET /a\x00 HTTP/1.1\r\nHost: a\r\n\r\n", HP_CONTROL_BYTE),
    BAD("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", HP_CONTROL_BYTE),
    BAD("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", HP_CONTROL_BYTE),
    BAD("GET /a?b\x01 HTTP/1.1\r\nHost: a\r\n\r\n", HP_CONTROL_BYTE),
    /* dot segments, raw or encoded */
    BAD("GET /./a HTTP/1.1\r\nHost: a\r\n\r\n", HP_DOT_SEGMENT),
    BAD("GET /a/.. HTTP/1.1\r\nHost: a\r\n\r\n", HP_DOT_SEGMENT),
    BAD("GET /a/../b HTTP/1.1\r\nHost: a\r\n\r\n", HP_DOT_SEGMENT),
    BAD("GET /a/.?x HTTP/1.1\r\nHost: a\r\n\r\n", HP_DOT_SEGMENT),
    BAD("GET /%2e/a HTTP/1.1\r\nHost: a\r\n\r\n", HP_DOT_SEGMENT),
    BAD("GET /%2E%2e/a HTTP/1.1\r\nHost: a\r\n\r\n", HP_DOT_SEGMENT),
    BAD("GET /a/.%2E HTTP/1.1\r\nHost: a\r\n\r\n", HP_DOT_SEGMENT),
    BAD("GET /..;x/a HTTP/1.1\r\nHost: a\r\n\r\n", HP_DOT_SEGMENT),
    /* encoded slashes */
    BAD("GET /a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n", HP_ENCODED_SLASH),
    BAD("GET /a%2fb HTTP/1.1\r\nHost: a\r\n\r\n", HP_ENCODED_SLASH),
    BAD("GET /a%5Cb HTTP/1.1\r\nHost: a\r\n\r\n", HP_ENCODED_SLASH),
    BAD("GET /a%5c HTTP/1.1\r\nHost: a\r\n\r\n", HP_ENCODED_SLASH),
    /* line endings */
    BAD("GET / HTTP/1.1\nHost: a\r\n\r\n", HP_BARE_CR_LF),
    BAD("GET / HTTP/1.1\rHost: a\r\n\r\n", HP_BARE_CR_LF),
    BAD("GET / HTTP/1.1\r\nHost: a\n\r\n", HP_BARE_CR_LF),
    BAD("GET / HTTP/1.1\r\nHost: a\r\n\n", HP_BARE_CR_LF),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", HP_BARE_CR_LF),
    BAD("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", HP_BARE_CR_LF),
    BAD("\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", HP_BARE_CR_LF),
    /* obsolete line folding, and whitespace before the first header */
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", HP_OBS_FOLD),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", HP_OBS_FOLD),
    BAD("GET / HTTP/1.1\r\n Host: a\r\n\r\n", HP_OBS_FOLD),
    /* control bytes in headers */
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", HP_CONTROL_BYTE),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", HP_CONTROL_BYTE),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n", HP_CONTROL_BYTE),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX\x00: a\r\n\r\n", HP_CONTROL_BYTE),
    /* header names */
    BAD("GET / HTTP/1.1\r\nHost : a\r\n\r\n", HP_BAD_HEADER_NAME),
    BAD("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", HP_BAD_HEADER_NAME),
    BAD("GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n", HP_BAD_HEADER_NAME),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX(y): a\r\n\r\n", HP_BAD_HEADER_NAME),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n", HP_BAD_HEADER_NAME),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: a\r\n\r\n", HP_BAD_HEADER_NAME),
    /* Content-Length */
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        HP_DUP_CONTENT_LENGTH),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n",
        HP_DUP_CONTENT_LENGTH),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", HP_BAD_CONTENT_LENGTH),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", HP_BAD_CONTENT_LENGTH),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", HP_BAD_CONTENT_LENGTH),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", HP_BAD_CONTENT_LENGTH),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", HP_BAD_CONTENT_LENGTH),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", HP_BAD_CONTENT_LENGTH),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12345678901234567890\r\n\r\n",
        HP_BAD_CONTENT_LENGTH),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n",
        HP_BAD_CONTENT_LENGTH),
    /* Transfer-Encoding */
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        HP_BAD_TRANSFER_ENCODING),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        HP_BAD_TRANSFER_ENCODING),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
        HP_BAD_TRANSFER_ENCODING),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
        "chunked\r\n\r\n",
        HP_BAD_TRANSFER_ENCODING),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
        HP_BAD_TRANSFER_ENCODING),
    BAD("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", HP_BAD_TRANSFER_ENCODING),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        HP_TE_AND_CL),
    BAD("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        HP_TE_AND_CL),
    /* Host */
    BAD("GET / HTTP/1.1\r\n\r\n", HP_MISSING_HOST),
    BAD("GET / HTTP/1.1\r\nX: a\r\n\r\n", HP_MISSING_HOST),
    BAD("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", HP_DUP_HOST),
    BAD("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", HP_DUP_HOST),
    BAD("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", HP_BAD_HOST),
    BAD("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", HP_BAD_HOST),
    BAD("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", HP_BAD_HOST),
    /* Connection must be a token list (its tokens name headers to strip) */
    BAD("GET / HTTP/1.1\r\nHost: a\r\nConnection: close;x\r\n\r\n", HP_BAD_HEADER_VALUE),
};

static void test_request_rows(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(requests); i++)
        check_request_row(&requests[i], &lim);
}

static void same_slice(struct hp_str moved, struct hp_str parsed)
{
    assert_ptr_equal(moved.p, parsed.p);
    assert_int_equal(moved.n, parsed.n);
}

/* Every accepted head, parsed where it arrived (with the next bytes after it) and moved to a copy
 * of its bytes, equals the parse of that copy: the gateway parses each head once. */
static void test_request_move(void **state)
{
    (void)state;
    size_t moved_rows = 0;
    for (size_t i = 0; i < ARRAY_LEN(requests); i++) {
        const struct row *row = &requests[i];
        if (row->want <= 0)
            continue;
        char in[1024], head[1024];
        assert_true(row->n + 5 <= sizeof(in));
        memcpy(in, row->s, row->n);
        memcpy(in + row->n, "GET /", 5); /* a pipelined request behind it */
        struct hp_header ha[MAXH], hm[MAXH], hp[MAXH];
        struct hp_request a = {.headers = ha}, m = {.headers = hm}, p = {.headers = hp};
        assert_int_equal(hp_parse_request(in, row->n + 5, &lim, &a), row->want);
        memcpy(head, in, row->n);
        memset(in, 'x', sizeof(in)); /* the input buffer moves on */
        hp_request_move(&a, in, &m, head);
        assert_int_equal(hp_parse_request(head, row->n, &lim, &p), row->want);
        assert_ptr_equal(m.headers, hm);
        assert_int_equal(m.n_headers, p.n_headers);
        assert_int_equal(m.method, p.method);
        assert_int_equal(m.minor, p.minor);
        assert_int_equal(m.content_length, p.content_length);
        assert_true(m.chunked == p.chunked && m.keep_alive == p.keep_alive &&
                    m.expect_continue == p.expect_continue);
        same_slice(m.method_str, p.method_str);
        same_slice(m.target, p.target);
        same_slice(m.path, p.path);
        same_slice(m.query, p.query);
        same_slice(m.host, p.host);
        for (size_t k = 0; k < p.n_headers; k++) {
            same_slice(m.headers[k].name, p.headers[k].name);
            same_slice(m.headers[k].value, p.headers[k].value);
        }
        moved_rows++;
    }
    assert_true(moved_rows >= 10);
}

static bool eq(struct hp_str s, const char *lit)
{
    return s.p && s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

static void test_request_fields(void **state)
{
    (void)state;
    struct hp_request r;
    const char *a = "GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Y:  v w \t\r\n"
                    "Expect: 100-Continue\r\nE:\r\n\r\n";
    assert_int_equal(parse_req(a, strlen(a), &lim, &r), (int)strlen(a));
    assert_int_equal(r.method, HP_METHOD_GET);
    assert_true(eq(r.method_str, "GET"));
    assert_true(eq(r.target, "/a/b?x=1"));
    assert_true(eq(r.path, "/a/b"));
    assert_true(eq(r.query, "x=1"));
    assert_true(eq(r.host, "example.com"));
    assert_int_equal(r.minor, 1);
    assert_int_equal(r.content_length, -1);
    assert_false(r.chunked);
    assert_true(r.keep_alive);
    assert_true(r.expect_continue);
    assert_int_equal(r.n_headers, 4);
    struct hp_str v;
    assert_true(hp_header(&r, "x-y", &v));
    assert_true(eq(v, "v w"));
    assert_true(hp_header(&r, "e", &v));
    assert_int_equal(v.n, 0);
    assert_false(hp_header(&r, "x", &v));
    assert_false(hp_header(&r, "x-y-z", &v));

    const char *b =
        "POST /p? HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\nConnection: close\r\n\r\n";
    assert_int_equal(parse_req(b, strlen(b), &lim, &r), (int)strlen(b));
    assert_int_equal(r.method, HP_METHOD_POST);
    assert_true(eq(r.path, "/p"));
    assert_non_null(r.query.p); /* "?" with nothing after: present and empty */
    assert_int_equal(r.query.n, 0);
    assert_int_equal(r.content_length, 42);
    assert_false(r.keep_alive);
    assert_false(r.expect_continue);

    const char *c = "PATCH /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(parse_req(c, strlen(c), &lim, &r), (int)strlen(c));
    assert_int_equal(r.method, HP_METHOD_PATCH);
    assert_true(r.chunked);
    assert_int_equal(r.content_length, -1);
    assert_null(r.query.p);

    const char *d = "GET / HTTP/1.0\r\n\r\n";
    assert_int_equal(parse_req(d, strlen(d), &lim, &r), (int)strlen(d));
    assert_int_equal(r.minor, 0);
    assert_false(r.keep_alive);
    assert_null(r.host.p);
    const char *e = "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
    assert_int_equal(parse_req(e, strlen(e), &lim, &r), (int)strlen(e));
    assert_true(r.keep_alive);
    const char *f = "DELETE / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n";
    assert_int_equal(parse_req(f, strlen(f), &lim, &r), (int)strlen(f));
    assert_int_equal(r.method, HP_METHOD_DELETE);
    assert_false(r.keep_alive);
    const char *g = "get / HTTP/1.1\r\nHost: h\r\n\r\n"; /* methods are case-sensitive */
    assert_int_equal(parse_req(g, strlen(g), &lim, &r), (int)strlen(g));
    assert_int_equal(r.method, HP_METHOD_OTHER);
    assert_true(eq(r.method_str, "get"));
}

/* The returned length is where the next pipelined request (or the body) starts. */
static void test_pipelined(void **state)
{
    (void)state;
    const char *two = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                      "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
                      "GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t len = strlen(two), off = 0;
    struct hp_request r;
    int n = parse_req(two, len, &lim, &r);
    assert_true(n > 0);
    assert_int_equal(r.content_length, 3);
    assert_memory_equal(two + n, "abc", 3);
    off = (size_t)n + 3;
    n = parse_req(two + off, len - off, &lim, &r);
    assert_true(n > 0);
    assert_true(eq(r.path, "/b"));
    off += (size_t)n;
    n = parse_req(two + off, len - off, &lim, &r);
    assert_int_equal(off + (size_t)n, len);
    assert_true(eq(r.path, "/c"));
}

static void test_connection_tokens(void **state)
{
    (void)state;
    const char *a = "GET / HTTP/1.1\r\nHost: h\r\nConnection: ,X-A , keep-alive,,\r\n"
                    "X-A: 1\r\nconnection: x-b\r\nConnection:\r\n\r\n";
    struct hp_request r;
    assert_int_equal(parse_req(a, strlen(a), &lim, &r), (int)strlen(a));
    struct hp_tokens it;
    struct hp_str tok;
    hp_tokens_init(&it, r.headers, r.n_headers, "connection");
    const char *want[] = {"X-A", "keep-alive", "x-b"};
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        assert_true(hp_tokens_next(&it, &tok));
        assert_true(eq(tok, want[i]));
    }
    assert_false(hp_tokens_next(&it, &tok));
    assert_false(hp_tokens_next(&it, &tok));
}

/* Head and header-count bounds hold even while the head is incomplete. */
static void test_limits(void **state)
{
    (void)state;
    const char *a = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
    size_t n = strlen(a);
    struct hp_request r;
    struct hp_limits l = {n, 3};
    assert_int_equal(parse_req(a, n, &l, &r), (int)n); /* exactly at both bounds */
    l.max_headers = 2;
    struct row too_many = {a, n, -HP_TOO_MANY_HEADERS};
    check_request_row(&too_many, &l);
    l = (struct hp_limits){n - 1, 3};
    struct row too_large = {a, n, -HP_HEAD_TOO_LARGE};
    check_request_row(&too_large, &l);
    /* A head that never ends is refused once it passes the bound, not when it ends. */
    size_t big = 100000;
    char *flood = xmalloc(big);
    memcpy(flood, "GET / HTTP/1.1\r\nHost: h\r\nX: ", 28);
    memset(flood + 28, 'a', big - 28);
    l = (struct hp_limits){8192, 100};
    assert_int_equal(parse_req(flood, 8192, &l, &r), HP_INCOMPLETE);
    assert_int_equal(parse_req(flood, 8193, &l, &r), -HP_HEAD_TOO_LARGE);
    assert_int_equal(parse_req(flood, big, &l, &r), -HP_HEAD_TOO_LARGE);
    /* Many short header lines: the count bound. */
    size_t m = 0;
    m += (size_t)sprintf(flood, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < 100; i++)
        m += (size_t)sprintf(flood + m, "X: %d\r\n", i);
    assert_int_equal(parse_req(flood, m, &l, &r), -HP_TOO_MANY_HEADERS);
    free(flood);
    assert_int_equal(hp_error_status(HP_TOO_MANY_HEADERS), 431);
    assert_int_equal(hp_error_status(HP_HEAD_TOO_LARGE), 431);
    assert_int_equal(hp_error_status(HP_BODY_TOO_LARGE), 413);
    assert_int_equal(hp_error_status(HP_OBS_FOLD), 400);
    assert_int_equal(hp_error_code(HP_HEAD_TOO_LARGE), CODE_HEADERS_TOO_LARGE);
    assert_int_equal(hp_error_code(HP_BODY_TOO_LARGE), CODE_BODY_TOO_LARGE);
    assert_int_equal(hp_error_code(HP_DOT_SEGMENT), CODE_BAD_REQUEST);
    for (int e = 1; e < HP__ERROR_COUNT; e++)
        assert_true(strlen(hp_error_str((enum hp_error)e)) > 0);
}

/* Each of the 256 bytes in a header name, a header value and a path: accepted exactly when the
 * RFC (and SPEC §5, for the path) says so. This checks the class table. */
static void test_every_byte(void **state)
{
    (void)state;
    static const char tchar[] = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (int c = 0; c < 256; c++) {
        char buf[64];
        struct hp_request r;
        int n = sprintf(buf, "GET / HTTP/1.1\r\nHost: h\r\nX%cY: v\r\n\r\n", 'q');
        buf[27] = (char)c;
        bool ok = c && strchr(tchar, c);
        if ((parse_req(buf, (size_t)n, &lim, &r) > 0) != ok && c != ':')
            fail_msg("byte 0x%02x in a name", c);
        n = sprintf(buf, "GET / HTTP/1.1\r\nHost: h\r\nX: aqb\r\n\r\n");
        buf[29] = (char)c;
        ok = c == '\t' || (c >= 0x20 && c != 0x7f);
        if ((parse_req(buf, (size_t)n, &lim, &r) > 0) != ok)
            fail_msg("byte 0x%02x in a value", c);
        n = sprintf(buf, "GET /aqb HTTP/1.1\r\nHost: h\r\n\r\n");
        buf[6] = (char)c;
        ok = c > 0x20 && c < 0x7f && c != '#' && c != '\\' && c != '%';
        if ((parse_req(buf, (size_t)n, &lim, &r) > 0) != ok)
            fail_msg("byte 0x%02x in a path", c);
    }
}

/* Responses: status line, framing and the body each implies. */
struct resp_row {
    const char *s;
    size_t n;
    bool head;
    int want;
    int body; /* enum hp_body_kind when want > 0 */
    bool keep_alive;
};
#define RESP(s, head, body, ka)                                                                    \
    {                                                                                              \
        s, sizeof(s) - 1, head, (int)sizeof(s) - 1, body, ka                                       \
    }
#define RBAD(s, e)                                                                                 \
    {                                                                                              \
        s, sizeof(s) - 1, false, -(e), 0, false                                                    \
    }

static const struct resp_row responses[] = {
    RESP("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, HP_BODY_LENGTH, true),
    RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, HP_BODY_CHUNKED, true),
    RESP("HTTP/1.1 200 OK\r\n\r\n", false, HP_BODY_UNTIL_CLOSE, false),
    RESP("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false, HP_BODY_LENGTH, true),
    RESP("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", false, HP_BODY_LENGTH, true),
    RESP("HTTP/1.1 500 Internal \t Error \xe9\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
         false, HP_BODY_LENGTH, false),
    RESP("HTTP/1.1 204 No Content\r\n\r\n", false, HP_BODY_NONE, true),
    RESP("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false, HP_BODY_NONE, true),
    RESP("HTTP/1.1 100 Continue\r\n\r\n", false, HP_BODY_NONE, true),
    RESP("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false, HP_BODY_NONE, true),
    RESP("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true, HP_BODY_NONE, true),
    RESP("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, HP_BODY_LENGTH, false),
    RESP("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n", false,
         HP_BODY_LENGTH, true),
    RBAD("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", HP_UPGRADE),
    RBAD("HTTP/1.1 99 X\r\n\r\n", HP_BAD_STATUS_LINE),
    RBAD("HTTP/1.1 600 X\r\n\r\n", HP_BAD_STATUS_LINE),
    RBAD("HTTP/1.1 2000 X\r\n\r\n", HP_BAD_STATUS_LINE),
    RBAD("HTTP/1.1 20 X\r\n\r\n", HP_BAD_STATUS_LINE),
    RBAD("HTTP/1.1  200 X\r\n\r\n", HP_BAD_STATUS_LINE),
    RBAD("HTTP/1.1\t200 X\r\n\r\n", HP_BAD_STATUS_LINE),
    RBAD("HTTP/1.2 200 OK\r\n\r\n", HP_BAD_VERSION),
    RBAD("HTTX/1.1 200 OK\r\n\r\n", HP_BAD_STATUS_LINE),
    RBAD("\r\nHTTP/1.1 200 OK\r\n\r\n", HP_BAD_STATUS_LINE),
    RBAD("HTTP/1.1 200 O\x01K\r\n\r\n", HP_CONTROL_BYTE),
    RBAD("HTTP/1.1 200 OK\n\r\n", HP_BARE_CR_LF),
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
         HP_DUP_CONTENT_LENGTH),
    RBAD("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
         HP_TE_AND_CL),
    RBAD("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", HP_BAD_TRANSFER_ENCODING),
    RBAD("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HP_BAD_TRANSFER_ENCODING),
    RBAD("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", HP_OBS_FOLD),
    RBAD("HTTP/1.1 200 OK\r\nX : a\r\n\r\n", HP_BAD_HEADER_NAME),
    RBAD("HTTP/1.1 204 OK\r\nContent-Length: x\r\n\r\n", HP_BAD_CONTENT_LENGTH),
};

static void test_response_rows(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(responses); i++) {
        const struct resp_row *w = &responses[i];
        struct hp_response r;
        int got = parse_resp(w->s, w->n, &lim, w->head, &r);
        if (got != w->want)
            show(w->s, w->n, got, w->want);
        if (got > 0 && ((int)r.body != w->body || r.keep_alive != w->keep_alive))
            fail_msg("row %zu: body %d keep-alive %d", i, (int)r.body, (int)r.keep_alive);
        for (size_t k = 0; k < w->n; k++) {
            int p = parse_resp(w->s, k, &lim, w->head, &r);
            if (p != HP_INCOMPLETE && p != w->want)
                show(w->s, k, p, w->want);
        }
    }
    struct hp_response r;
    const char *a = "HTTP/1.1 201 Created\r\nLocation: /x\r\nContent-Length: 12\r\n\r\n";
    assert_int_equal(parse_resp(a, strlen(a), &lim, false, &r), (int)strlen(a));
    assert_int_equal(r.status, 201);
    assert_true(eq(r.reason, "Created"));
    assert_int_equal(r.minor, 1);
    assert_int_equal(r.content_length, 12);
    struct hp_str v;
    assert_true(hp_find(r.headers, r.n_headers, "LOCATION", &v));
    assert_true(eq(v, "/x"));
    struct hp_limits small = {64, 1};
    const char *b = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_int_equal(parse_resp(b, strlen(b), &small, false, &r), -HP_TOO_MANY_HEADERS);
    small = (struct hp_limits){sizeof("HTTP/1.1 200 OK\r\nA: 1\r\n") - 1, 5};
    assert_int_equal(parse_resp(b, strlen(b), &small, false, &r), -HP_HEAD_TOO_LARGE);
}

/* Chunked bodies: want is the decoded body and the final result (DONE or an error). */
struct chunk_row {
    const char *s;
    size_t n;
    const char *body; /* expected data, in order (for errors: what came before) */
    int want;         /* HP_CHUNK_DONE, HP_INCOMPLETE or -(enum hp_error) */
    size_t end;       /* for DONE: where the body ends */
    uint64_t max_body;
};
#define CHUNK_MAX_BODY 0x100000
/* clang-format off */
#define CH(s, body, want, end) {s, sizeof(s) - 1, body, want, end, CHUNK_MAX_BODY}
/* With no body limit, to reach the size cap. */
#define CHX(s, body, want, end) {s, sizeof(s) - 1, body, want, end, UINT64_MAX}
/* clang-format on */

static const struct chunk_row chunks[] = {
    CH("5\r\nhello\r\n0\r\n\r\n", "hello", HP_CHUNK_DONE, 15),
    CH("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET", "hello world", HP_CHUNK_DONE, 26),
    CH("0\r\n\r\n", "", HP_CHUNK_DONE, 5),
    CH("000A\r\n0123456789\r\n0\r\n\r\n", "0123456789", HP_CHUNK_DONE, 23),
    CH("a\r\n0123456789\r\n00\r\n\r\n", "0123456789", HP_CHUNK_DONE, 21),
    CH("3;x\r\nabc\r\n0\r\n\r\n", "abc", HP_CHUNK_DONE, 15),
    CH("3;x=y;z=\"q \\\" ;\"\r\nabc\r\n0;last\r\n\r\n", "abc", HP_CHUNK_DONE, 33),
    CH("3 ; a = b ;c\r\nabc\r\n0\r\n\r\n", "abc", HP_CHUNK_DONE, 24),
    CH("3\r\nabc\r\n0\r\nX-T: 1\r\nY:\r\n\r\n", "abc", HP_CHUNK_DONE, 25),
    CH("3\r\nabc\r\n0\r\n", "abc", HP_INCOMPLETE, 0),
    CH("3\r\nab", "ab", HP_INCOMPLETE, 0),
    /* sizes */
    CH("\r\nabc\r\n", "", -HP_BAD_CHUNK_SIZE, 0),
    CH("g\r\n", "", -HP_BAD_CHUNK_SIZE, 0),
    CH("-3\r\nabc\r\n", "", -HP_BAD_CHUNK_SIZE, 0),
    CH("0x3\r\nabc\r\n", "", -HP_BAD_CHUNK_SIZE, 0),
    CH("3 \r\nabc\r\n", "", -HP_BAD_CHUNK_SIZE, 0),
    CH(" 3\r\nabc\r\n", "", -HP_BAD_CHUNK_SIZE, 0),
    CH("3\nabc\r\n", "", -HP_BARE_CR_LF, 0),
    CH("3\rabc\r\n", "", -HP_BARE_CR_LF, 0),
    CHX("fffffffffffffffff\r\n", "", -HP_CHUNK_OVERFLOW, 0),
    CHX("10000000000000000\r\n", "", -HP_CHUNK_OVERFLOW, 0),
    CHX("40000000000000001\r\n", "", -HP_CHUNK_OVERFLOW, 0),
    CHX("00000000000000000000000000000000003\r\nabc\r\n0\r\n\r\n", "abc", HP_CHUNK_DONE, 47),
    CH("100001\r\n", "", -HP_BODY_TOO_LARGE, 0),
    CH("0100001\r\n", "", -HP_BODY_TOO_LARGE, 0),
    /* extensions */
    CH("3;\r\nabc\r\n", "", -HP_BAD_CHUNK_EXT, 0),
    CH("3;=x\r\nabc\r\n", "", -HP_BAD_CHUNK_EXT, 0),
    CH("3;a=\r\nabc\r\n", "", -HP_BAD_CHUNK_EXT, 0),
    CH("3;a \r\nabc\r\n", "", -HP_BAD_CHUNK_EXT, 0),
    CH("3;a=\"x\r\nabc\r\n", "", -HP_BAD_CHUNK_EXT, 0),
    CH("3;a=\"x\"y\r\nabc\r\n", "", -HP_BAD_CHUNK_EXT, 0),
    CH("3;a=b c\r\nabc\r\n", "", -HP_BAD_CHUNK_EXT, 0),
    CH("3;a\x01\r\nabc\r\n", "", -HP_BAD_CHUNK_EXT, 0),
    CH("3;a=\"\x7f\"\r\nabc\r\n", "", -HP_BAD_CHUNK_EXT, 0),
    /* data framing */
    CH("3\r\nabcd\r\n", "abc", -HP_BAD_CHUNK_END, 0),
    CH("3\r\nabc\n0\r\n\r\n", "abc", -HP_BAD_CHUNK_END, 0),
    CH("3\r\nabc\r0\r\n\r\n", "abc", -HP_BAD_CHUNK_END, 0),
    /* trailers */
    CH("0\r\nX: 1\r\n folded\r\n\r\n", "", -HP_OBS_FOLD, 0),
    CH("0\r\nX : 1\r\n\r\n", "", -HP_BAD_HEADER_NAME, 0),
    CH("0\r\n: 1\r\n\r\n", "", -HP_BAD_HEADER_NAME, 0),
    CH("0\r\nX: \x00\r\n\r\n", "", -HP_CONTROL_BYTE, 0),
    CH("0\r\nX: 1\n\r\n", "", -HP_BARE_CR_LF, 0),
    CH("0\r\n\n", "", -HP_BARE_CR_LF, 0),
    CH("0\r\n\rX", "", -HP_BARE_CR_LF, 0),
    CH("0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", "", -HP_TOO_MANY_HEADERS, 0),
};

static const struct hp_limits chunk_lim = {64, 3};

/* Feed s[0..n) in pieces of at most step bytes (each its own heap copy); collect the data. */
static int feed_all(const struct chunk_row *w, size_t first, size_t step, char *out, size_t *out_n,
                    size_t *end)
{
    struct hp_chunked d;
    hp_chunked_init(&d, w->max_body, &chunk_lim);
    size_t off = 0;
    *out_n = 0;
    int rc = HP_INCOMPLETE;
    while (off < w->n) {
        size_t piece = off == 0 ? first : step;
        if (piece > w->n - off)
            piece = w->n - off;
        char *copy = xmalloc(piece ? piece : 1);
        memcpy(copy, w->s + off, piece);
        size_t used = 0;
        while (used < piece) {
            size_t c;
            struct hp_str data;
            rc = hp_chunked_feed(&d, copy + used, piece - used, &c, &data);
            assert_true(c <= piece - used);
            if (rc == HP_CHUNK_DATA) {
                assert_true(data.p >= copy + used && data.p + data.n == copy + used + c);
                memcpy(out + *out_n, data.p, data.n);
                *out_n += data.n;
            } else {
                assert_int_equal(data.n, 0);
            }
            used += c;
            if (rc == HP_CHUNK_DONE || rc < 0)
                break;
            rc = HP_INCOMPLETE;
        }
        free(copy);
        off += used;
        if (rc == HP_CHUNK_DONE || rc < 0)
            break;
    }
    *end = off;
    return rc;
}

static void test_chunked_rows(void **state)
{
    (void)state;
    char out[256];
    for (size_t i = 0; i < ARRAY_LEN(chunks); i++) {
        const struct chunk_row *w = &chunks[i];
        /* Whole; then split once at every boundary; then one byte at a time. */
        for (size_t split = 0; split <= w->n + 1; split++) {
            size_t first = split <= w->n ? split : 1, step = split <= w->n ? w->n : 1;
            if (first == 0)
                first = w->n;
            size_t out_n, end;
            int rc = feed_all(w, first, step, out, &out_n, &end);
            if (rc != w->want || out_n != strlen(w->body) || memcmp(out, w->body, out_n) != 0 ||
                (rc == HP_CHUNK_DONE && end != w->end))
                fail_msg("row %zu split %zu: rc %d (%s) want %d, %zu body bytes, end %zu", i, split,
                         rc, rc < 0 ? hp_error_str(-rc) : "", w->want, out_n, end);
        }
    }
}

static void test_chunked_api(void **state)
{
    (void)state;
    struct hp_chunked d;
    hp_chunked_init(&d, 10, &chunk_lim);
    size_t c;
    struct hp_str data;
    /* Exactly the maximum is fine, one more byte in a later chunk is not. */
    assert_int_equal(hp_chunked_feed(&d, "a\r\n", 3, &c, &data), HP_INCOMPLETE);
    assert_int_equal(hp_chunked_feed(&d, "0123456789\r\n", 12, &c, &data), HP_CHUNK_DATA);
    assert_int_equal(c, 10);
    assert_int_equal(hp_chunked_feed(&d, "\r\n1\r\n", 5, &c, &data), -HP_BODY_TOO_LARGE);
    assert_int_equal(c, 2); /* at the offending digit */
    /* Failed stays failed; done stays done and consumes nothing more. */
    assert_int_equal(hp_chunked_feed(&d, "0\r\n\r\n", 5, &c, &data), -HP_BODY_TOO_LARGE);
    assert_int_equal(c, 0);
    hp_chunked_init(&d, 10, &chunk_lim);
    assert_int_equal(hp_chunked_feed(&d, "0\r\n\r\nxyz", 8, &c, &data), HP_CHUNK_DONE);
    assert_int_equal(c, 5);
    assert_int_equal(hp_chunked_feed(&d, "xyz", 3, &c, &data), HP_CHUNK_DONE);
    assert_int_equal(c, 0);
    /* The size cap holds whatever the body limit. */
    hp_chunked_init(&d, UINT64_MAX, &chunk_lim);
    assert_int_equal(hp_chunked_feed(&d, "4000000000000000\r\n", 18, &c, &data), HP_INCOMPLETE);
    hp_chunked_init(&d, UINT64_MAX, &chunk_lim);
    assert_int_equal(hp_chunked_feed(&d, "40000000000000001", 17, &c, &data), -HP_CHUNK_OVERFLOW);
    /* A size line longer than HP_CHUNK_LINE_MAX (leading zeros, a long extension). */
    char line[HP_CHUNK_LINE_MAX + 8];
    memset(line, '0', sizeof(line));
    hp_chunked_init(&d, 10, &chunk_lim);
    assert_int_equal(hp_chunked_feed(&d, line, sizeof(line), &c, &data), -HP_BAD_CHUNK_EXT);
    assert_int_equal(c, HP_CHUNK_LINE_MAX);
    /* The trailer section is bounded in bytes. */
    hp_chunked_init(&d, 10, &chunk_lim);
    assert_int_equal(hp_chunked_feed(&d, "0\r\nX: ", 6, &c, &data), HP_INCOMPLETE);
    memset(line, 'v', sizeof(line));
    assert_int_equal(hp_chunked_feed(&d, line, 100, &c, &data), -HP_HEAD_TOO_LARGE);
}

/* A rough speed figure for a typical ~400-byte request head (printed, and each parse checked). */
static void test_speed(void **state)
{
    (void)state;
    const char *req = "POST /lux/bookings/42/confirm?lang=en&currency=EUR HTTP/1.1\r\n"
                      "Host: merchant.example.com\r\n"
                      "User-Agent: agent-sdk/1.4.2 (linux; x86_64)\r\n"
                      "Accept: application/json\r\n"
                      "Accept-Encoding: gzip, deflate, br\r\n"
                      "Content-Type: application/json\r\n"
                      "Content-Length: 128\r\n"
                      "Authorization: Mandate eyJhbGciOiJFUzI1NiIsInR5cCI6ImludGVudC1tYW5kYXRlK2"
                      "p3dCJ9.eyJpc3MiOiJ3YWxsZXQtMSJ9.c2ln\r\n"
                      "Mandate-Cart: eyJhbGciOiJFUzI1NiJ9.e30.c2ln\r\n"
                      "Connection: keep-alive\r\n"
                      "X-Trace: 7f3a9c2e-1b4d-4e8a-9f00-123456789abc\r\n\r\n";
    size_t n = strlen(req);
    struct hp_header h[32];
    struct hp_request r = {.headers = h};
    const struct hp_limits l = {8192, 32};
    int iters = 200000;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < iters; i++) {
        r.headers = h;
        if (hp_parse_request(req, n, &l, &r) != (int)n)
            fail_msg("parse failed");
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / iters;
    printf("http_parse: %zu-byte request head, %d headers: %.0f ns/parse (%.2f ns/byte)\n", n,
           (int)r.n_headers, ns, ns / (double)n);
    assert_int_equal(r.n_headers, 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_rows),  cmocka_unit_test(test_request_fields),
        cmocka_unit_test(test_pipelined),     cmocka_unit_test(test_connection_tokens),
        cmocka_unit_test(test_limits),        cmocka_unit_test(test_every_byte),
        cmocka_unit_test(test_response_rows), cmocka_unit_test(test_chunked_rows),
        cmocka_unit_test(test_chunked_api),   cmocka_unit_test(test_speed),
        cmocka_unit_test(test_request_move),
    };
    return cmocka_run_group_tests_name("http_parse", tests, NULL, NULL);
}
