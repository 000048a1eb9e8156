/*
 * http_parse: strict HTTP/1.1 request and response heads and the chunked coding, in one pass over
 * the bytes with a class table. Errors are reported where the offending byte is seen, which is what
 * makes results prefix-stable (see http_parse.h).
 */
#include "gateway/http_parse.h"

#include <limits.h>
#include <string.h>

#include "core/util.h"

/* Byte classes (RFC 9110 §5.6.2 tchar, §5.5 field-vchar, ...); one table lookup per byte. */
enum {
    C_TCHAR = 0x01,  /* token character */
    C_FIELD = 0x02,  /* field value byte: HTAB, SP, VCHAR, obs-text */
    C_HEX = 0x04,    /* hex digit */
    C_TARGET = 0x08, /* allowed raw in a target: 0x21-0x7E but '#' */
    C_CTL = 0x10,    /* 0x00-0x1F and DEL */
    C_QDTEXT = 0x20, /* quoted-string text: HTAB, SP, 0x21, 0x23-0x5B, 0x5D-0x7E, obs-text */
    C_HOST = 0x40,   /* reg-name, IP literal and port characters: unreserved, sub-delims, ":[]%" */
    C_PLAIN = 0x80,  /* a target byte with no meaning to the path checks (not / ; ? % . \) */
};

/* Generated from the definitions above; test_every_byte in tests/unit/test_http_parse.c checks
 * each of the 256 bytes through the parsers. */
static const unsigned char cls[256] = {
    0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
    0x10, 0x32, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, /* 00 */
    0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
    0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, /* 10 */
    0x22, 0xeb, 0x8a, 0x23, 0xeb, 0x6b, 0xeb, 0xeb,
    0xea, 0xea, 0xeb, 0xeb, 0xea, 0xeb, 0x6b, 0x2a, /* 20 */
    0xef, 0xef, 0xef, 0xef, 0xef, 0xef, 0xef, 0xef,
    0xef, 0xef, 0xea, 0x6a, 0xaa, 0xea, 0xaa, 0x2a, /* 30 */
    0xaa, 0xef, 0xef, 0xef, 0xef, 0xef, 0xef, 0xeb,
    0xeb, 0xeb, 0xeb, 0xeb, 0xeb, 0xeb, 0xeb, 0xeb, /* 40 */
    0xeb, 0xeb, 0xeb, 0xeb, 0xeb, 0xeb, 0xeb, 0xeb,
    0xeb, 0xeb, 0xeb, 0xea, 0x0a, 0xea, 0xab, 0xeb, /* 50 */
    0xab, 0xef, 0xef, 0xef, 0xef, 0xef, 0xef, 0xeb,
    0xeb, 0xeb, 0xeb, 0xeb, 0xeb, 0xeb, 0xeb, 0xeb, /* 60 */
    0xeb, 0xeb, 0xeb, 0xeb, 0xeb, 0xeb, 0xeb, 0xeb,
    0xeb, 0xeb, 0xeb, 0xaa, 0xab, 0xaa, 0xeb, 0x10, /* 70 */
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, /* 80 */
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, /* 90 */
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, /* a0 */
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, /* b0 */
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, /* c0 */
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, /* d0 */
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, /* e0 */
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, /* f0 */
};

static inline unsigned cl(char c)
{
    return cls[(unsigned char)c];
}

static inline int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static inline int hexval(char c)
{
    return c <= '9' ? c - '0' : lower(c) - 'a' + 10;
}

static const struct {
    int status;
    const char *msg;
} errors[] = {
#define HP_ERROR_ROW(name, status, msg) {status, msg},
    HP_ERROR_LIST(HP_ERROR_ROW)
#undef HP_ERROR_ROW
};

const char *hp_error_str(enum hp_error e)
{
    return (unsigned)e < HP__ERROR_COUNT ? errors[e].msg : "unknown error";
}

int hp_error_status(enum hp_error e)
{
    return (unsigned)e < HP__ERROR_COUNT ? errors[e].status : 400;
}

enum code hp_error_code(enum hp_error e)
{
    switch (hp_error_status(e)) {
    case 413:
        return CODE_BODY_TOO_LARGE;
    case 431:
        return CODE_HEADERS_TOO_LARGE;
    default:
        return CODE_BAD_REQUEST;
    }
}

bool hp_mem_ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return false;
    return true;
}

bool hp_find(const struct hp_header *h, size_t n, const char *name, struct hp_str *value)
{
    for (size_t i = 0; i < n; i++)
        if (hp_str_ieq(h[i].name, name)) {
            *value = h[i].value;
            return true;
        }
    return false;
}

bool hp_header(const struct hp_request *req, const char *name, struct hp_str *value)
{
    return hp_find(req->headers, req->n_headers, name, value);
}

void hp_tokens_init(struct hp_tokens *it, const struct hp_header *h, size_t n, const char *name)
{
    *it = (struct hp_tokens){.h = h, .n = n, .name = name};
}

bool hp_tokens_next(struct hp_tokens *it, struct hp_str *tok)
{
    for (; it->i < it->n; it->i++, it->off = 0) {
        const struct hp_header *h = &it->h[it->i];
        if (!hp_str_ieq(h->name, it->name))
            continue;
        const char *v = h->value.p;
        size_t n = h->value.n;
        while (it->off < n) {
            size_t a = it->off;
            while (a < n && (v[a] == ' ' || v[a] == '\t' || v[a] == ','))
                a++;
            size_t b = a;
            while (b < n && v[b] != ',')
                b++;
            it->off = b;
            while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
                b--;
            if (b > a) {
                *tok = (struct hp_str){v + a, b - a};
                return true;
            }
        }
    }
    return false;
}

/*
 * Head parsing. A scan looks at buf[0..end) where end is min(len, max_header_bytes); running out of
 * bytes means "need more" unless the buffer was cut at the bound, in which case the head is too
 * large. Helpers return OK (1), NEED (0) or -(enum hp_error).
 */
#define OK   1
#define NEED 0

struct scan {
    const char *b;
    size_t end;
    size_t p;
};

/* Framing and connection facts gathered from the header section. */
struct fields {
    struct hp_header *h;
    size_t n, max;
    int minor;
    bool request;
    bool has_host;
    struct hp_str host;
    int64_t content_length;
    bool chunked;
    bool close, keep_alive, expect_continue;
};

/* At a CR: is it followed by LF? */
static int crlf(struct scan *s)
{
    if (s->p + 1 >= s->end)
        return NEED;
    if (s->b[s->p + 1] != '\n')
        return -HP_BARE_CR_LF;
    s->p += 2;
    return OK;
}

static int content_length(struct hp_str v, int64_t *out)
{
    /* 19 digits hold every int64_t; a 19-digit value may still be too large. */
    if (v.n == 0 || v.n > 19)
        return -HP_BAD_CONTENT_LENGTH;
    uint64_t x = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -HP_BAD_CONTENT_LENGTH;
        x = x * 10 + (uint64_t)(v.p[i] - '0');
    }
    if (x > INT64_MAX)
        return -HP_BAD_CONTENT_LENGTH;
    *out = (int64_t)x;
    return OK;
}

/* Connection: a comma-separated list of tokens (empty elements allowed, RFC 9110 §5.6.1). */
static int connection(struct fields *f, struct hp_str v)
{
    size_t i = 0;
    while (i < v.n) {
        while (i < v.n && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        size_t a = i;
        while (i < v.n && (cl(v.p[i]) & C_TCHAR))
            i++;
        struct hp_str tok = {v.p + a, i - a};
        while (i < v.n && (v.p[i] == ' ' || v.p[i] == '\t'))
            i++;
        if (i < v.n && v.p[i] != ',')
            return -HP_BAD_HEADER_VALUE;
        if (hp_str_ieq(tok, "close"))
            f->close = true;
        else if (hp_str_ieq(tok, "keep-alive"))
            f->keep_alive = true;
    }
    return OK;
}

/* What one header line means for framing; refusals of duplicates happen here, at the line. */
static int field(struct fields *f, const struct hp_header *h)
{
    switch (h->name.n) {
    case 4:
        if (!f->request || !hp_str_ieq(h->name, "host"))
            return OK;
        if (f->has_host)
            return -HP_DUP_HOST;
        for (size_t i = 0; i < h->value.n; i++)
            if (!(cl(h->value.p[i]) & C_HOST))
                return -HP_BAD_HOST;
        f->has_host = true;
        f->host = h->value;
        return OK;
    case 6:
        if (f->request && hp_str_ieq(h->name, "expect") && hp_str_ieq(h->value, "100-continue"))
            f->expect_continue = true;
        return OK;
    case 10:
        return hp_str_ieq(h->name, "connection") ? connection(f, h->value) : OK;
    case 14:
        if (!hp_str_ieq(h->name, "content-length"))
            return OK;
        if (f->content_length >= 0)
            return -HP_DUP_CONTENT_LENGTH;
        if (f->chunked)
            return -HP_TE_AND_CL;
        return content_length(h->value, &f->content_length);
    case 17:
        if (!hp_str_ieq(h->name, "transfer-encoding"))
            return OK;
        /* HTTP/1.0 has no transfer codings: RFC 9112 §6.1 calls its framing faulty. */
        if (f->chunked || f->minor == 0 || !hp_str_ieq(h->value, "chunked"))
            return -HP_BAD_TRANSFER_ENCODING;
        if (f->content_length >= 0)
            return -HP_TE_AND_CL;
        f->chunked = true;
        return OK;
    default:
        return OK;
    }
}

/* Header lines up to and including the empty line. */
static int fields(struct scan *s, struct fields *f)
{
    const char *b = s->b;
    for (;;) {
        size_t p = s->p;
        if (p >= s->end)
            return NEED;
        if (b[p] == '\r')
            return crlf(s);
        if (b[p] == '\n')
            return -HP_BARE_CR_LF;
        if (b[p] == ' ' || b[p] == '\t')
            return -HP_OBS_FOLD;
        if (f->n == f->max)
            return -HP_TOO_MANY_HEADERS;
        size_t name = p;
        while (p < s->end && (cl(b[p]) & C_TCHAR))
            p++;
        if (p >= s->end)
            return NEED;
        if (b[p] != ':' || p == name) {
            bool ctl = (cl(b[p]) & C_CTL) && b[p] != '\r' && b[p] != '\n' && b[p] != '\t';
            return ctl ? -HP_CONTROL_BYTE : -HP_BAD_HEADER_NAME;
        }
        size_t name_end = p++;
        while (p < s->end && (b[p] == ' ' || b[p] == '\t'))
            p++;
        size_t v = p;
        while (p < s->end && (cl(b[p]) & C_FIELD))
            p++;
        if (p >= s->end)
            return NEED;
        if (b[p] == '\n')
            return -HP_BARE_CR_LF;
        if (b[p] != '\r')
            return -HP_CONTROL_BYTE;
        size_t v_end = p;
        while (v_end > v && (b[v_end - 1] == ' ' || b[v_end - 1] == '\t'))
            v_end--;
        s->p = p;
        int r = crlf(s);
        if (r != OK)
            return r;
        struct hp_header *h = &f->h[f->n++];
        h->name = (struct hp_str){b + name, name_end - name};
        h->value = (struct hp_str){b + v, v_end - v};
        if ((r = field(f, h)) != OK)
            return r;
    }
}

/* Why a byte cannot be in a target: a line end (HTTP/0.9 has no version), a control, or else. */
static int bad_target_byte(char c)
{
    if (c == '\r' || c == '\n')
        return -HP_BAD_REQUEST_LINE;
    return (cl(c) & C_CTL) ? -HP_CONTROL_BYTE : -HP_BAD_TARGET;
}

/* Does the path segment just ended consist of "." or ".." (raw or percent-encoded)? */
static inline bool dot_segment(unsigned dots, bool only_dots)
{
    return only_dots && (dots == 1 || dots == 2);
}

/*
 * Origin-form target at s->p (a '/'), up to the SP that ends it. The path is checked as a router
 * and every upstream could read it: percent escapes decode, no "." / ".." segment (a ';' also ends
 * a segment for this check, as servlet containers read "..;x" as ".."), no encoded '/' or '\', no
 * raw '\', no encoded NUL. The query is forwarded unchanged, so it only has to be bytes we accept.
 */
static int target(struct scan *s, struct hp_request *r)
{
    const char *b = s->b;
    size_t p = s->p, start = p;
    unsigned dots = 0;
    bool only_dots = true;
    for (;;) {
        if (p >= s->end)
            return NEED;
        char c = b[p];
        if (cl(c) & C_PLAIN) {
            only_dots = false;
            p++;
            continue;
        }
        switch (c) {
        case '.':
            dots++;
            p++;
            continue;
        case '/':
            if (dot_segment(dots, only_dots))
                return -HP_DOT_SEGMENT;
            dots = 0;
            only_dots = true;
            p++;
            continue;
        case ';':
            if (dot_segment(dots, only_dots))
                return -HP_DOT_SEGMENT;
            only_dots = false;
            p++;
            continue;
        case '%': {
            if (p + 1 >= s->end)
                return NEED;
            if (!(cl(b[p + 1]) & C_HEX))
                return -HP_BAD_TARGET;
            if (p + 2 >= s->end)
                return NEED;
            if (!(cl(b[p + 2]) & C_HEX))
                return -HP_BAD_TARGET;
            int d = hexval(b[p + 1]) << 4 | hexval(b[p + 2]);
            if (d == '/' || d == '\\')
                return -HP_ENCODED_SLASH;
            if (d == 0)
                return -HP_BAD_TARGET;
            if (d == '.')
                dots++;
            else
                only_dots = false;
            p += 3;
            continue;
        }
        case '?':
        case ' ':
            if (dot_segment(dots, only_dots))
                return -HP_DOT_SEGMENT;
            break;
        default:
            return bad_target_byte(c);
        }
        break;
    }
    r->path = (struct hp_str){b + start, p - start};
    r->query = (struct hp_str){NULL, 0};
    if (b[p] == '?') {
        size_t q = ++p;
        while (p < s->end && (cl(b[p]) & C_TARGET))
            p++;
        if (p >= s->end)
            return NEED;
        if (b[p] != ' ')
            return bad_target_byte(b[p]);
        r->query = (struct hp_str){b + q, p - q};
    }
    r->target = (struct hp_str){b + start, p - start};
    s->p = p + 1; /* the SP */
    return OK;
}

static const struct {
    const char *name;
    size_t n;
    enum hp_method m;
} methods[] = {
    {"GET", 3, HP_METHOD_GET},         {"HEAD", 4, HP_METHOD_HEAD},
    {"POST", 4, HP_METHOD_POST},       {"PUT", 3, HP_METHOD_PUT},
    {"PATCH", 5, HP_METHOD_PATCH},     {"DELETE", 6, HP_METHOD_DELETE},
    {"OPTIONS", 7, HP_METHOD_OPTIONS},
};

/* "HTTP/1.0" or "HTTP/1.1" at s->p; *minor gets the digit. Methods are case-sensitive, so is this.
 */
static int version(struct scan *s, int *minor, enum hp_error bad)
{
    static const char v[] = "HTTP/1.";
    for (size_t i = 0; i < sizeof(v) - 1; i++, s->p++) {
        if (s->p >= s->end)
            return NEED;
        if (s->b[s->p] != v[i])
            return -(int)bad;
    }
    if (s->p >= s->end)
        return NEED;
    if (s->b[s->p] != '0' && s->b[s->p] != '1')
        return -HP_BAD_VERSION;
    *minor = s->b[s->p++] - '0';
    return OK;
}

static int request_line(struct scan *s, struct hp_request *r)
{
    const char *b = s->b;
    /* RFC 9112 §2.2: ignore empty lines before the request line (a client's extra CRLF). */
    for (int empty = 0; s->p < s->end && b[s->p] == '\r'; empty++) {
        if (empty == HP_MAX_EMPTY_LINES)
            return -HP_BAD_REQUEST_LINE;
        int rc = crlf(s);
        if (rc != OK)
            return rc;
    }
    size_t p = s->p, m = p;
    while (p < s->end && (cl(b[p]) & C_TCHAR))
        p++;
    if (p >= s->end)
        return NEED;
    if (b[p] == '\n')
        return -HP_BARE_CR_LF;
    if (p == m || b[p] == '\r')
        return -HP_BAD_REQUEST_LINE;
    if (b[p] != ' ')
        return -HP_BAD_METHOD;
    r->method_str = (struct hp_str){b + m, p - m};
    r->method = HP_METHOD_OTHER;
    for (size_t i = 0; i < ARRAY_LEN(methods); i++)
        if (methods[i].n == p - m && memcmp(methods[i].name, b + m, p - m) == 0)
            r->method = methods[i].m;
    if (++p >= s->end)
        return NEED;
    if (b[p] != '/')
        return b[p] == ' ' ? -HP_BAD_REQUEST_LINE : -HP_BAD_TARGET;
    s->p = p;
    int rc = target(s, r);
    if (rc != OK)
        return rc;
    if ((rc = version(s, &r->minor, HP_BAD_VERSION)) != OK)
        return rc;
    if (s->p >= s->end)
        return NEED;
    if (b[s->p] == '\r')
        return crlf(s);
    if (b[s->p] == '\n')
        return -HP_BARE_CR_LF;
    return b[s->p] >= '0' && b[s->p] <= '9' ? -HP_BAD_VERSION : -HP_BAD_REQUEST_LINE;
}

/* The bytes a head scan may look at: the bound, and never more than the int we return. */
static size_t scan_end(size_t len, const struct hp_limits *lim)
{
    size_t max = lim->max_header_bytes < INT_MAX ? lim->max_header_bytes : INT_MAX;
    return len < max ? len : max;
}

/* Turn a helper's NEED into "incomplete" or, at the bound, "too large". */
static int need(int rc, size_t len, const struct scan *s)
{
    return rc == NEED && len > s->end ? -HP_HEAD_TOO_LARGE : rc;
}

int hp_parse_request(const char *buf, size_t len, const struct hp_limits *lim,
                     struct hp_request *out)
{
    struct scan s = {buf, scan_end(len, lim), 0};
    struct fields f = {
        .h = out->headers, .max = lim->max_headers, .request = true, .content_length = -1};
    int rc = request_line(&s, out);
    if (rc != OK)
        return need(rc, len, &s);
    f.minor = out->minor;
    if ((rc = fields(&s, &f)) != OK)
        return need(rc, len, &s);
    if (out->minor == 1 && !f.has_host)
        return -HP_MISSING_HOST;
    out->n_headers = f.n;
    out->host = f.host;
    out->content_length = f.content_length;
    out->chunked = f.chunked;
    out->keep_alive = out->minor == 1 ? !f.close : f.keep_alive && !f.close;
    out->expect_continue = f.expect_continue;
    return (int)s.p;
}

static struct hp_str moved(struct hp_str s, const char *from_buf, const char *to_buf)
{
    if (s.p)
        s.p = to_buf + (s.p - from_buf);
    return s;
}

void hp_request_move(const struct hp_request *from, const char *from_buf, struct hp_request *to,
                     const char *to_buf)
{
    struct hp_header *headers = to->headers;
    *to = *from;
    to->headers = headers;
    to->method_str = moved(from->method_str, from_buf, to_buf);
    to->target = moved(from->target, from_buf, to_buf);
    to->path = moved(from->path, from_buf, to_buf);
    to->query = moved(from->query, from_buf, to_buf);
    to->host = moved(from->host, from_buf, to_buf);
    for (size_t i = 0; i < from->n_headers; i++) {
        headers[i].name = moved(from->headers[i].name, from_buf, to_buf);
        headers[i].value = moved(from->headers[i].value, from_buf, to_buf);
    }
}

static int status_line(struct scan *s, struct hp_response *r)
{
    const char *b = s->b;
    int rc = version(s, &r->minor, HP_BAD_STATUS_LINE);
    if (rc != OK)
        return rc;
    if (s->p >= s->end)
        return NEED;
    if (b[s->p++] != ' ')
        return -HP_BAD_STATUS_LINE;
    int status = 0;
    for (int i = 0; i < 3; i++, s->p++) {
        if (s->p >= s->end)
            return NEED;
        if (b[s->p] < '0' || b[s->p] > '9')
            return -HP_BAD_STATUS_LINE;
        status = status * 10 + (b[s->p] - '0');
    }
    if (s->p >= s->end)
        return NEED;
    /* "HTTP/1.1 200\r\n" (no SP, no reason) is common enough and unambiguous. */
    if ((b[s->p] != ' ' && b[s->p] != '\r') || status < 100 || status > 599)
        return -HP_BAD_STATUS_LINE;
    if (status == 101)
        return -HP_UPGRADE;
    r->status = status;
    size_t p = s->p + (b[s->p] == ' '), reason = p;
    while (p < s->end && (cl(b[p]) & C_FIELD))
        p++;
    if (p >= s->end)
        return NEED;
    if (b[p] == '\n')
        return -HP_BARE_CR_LF;
    if (b[p] != '\r')
        return -HP_CONTROL_BYTE;
    r->reason = (struct hp_str){b + reason, p - reason};
    s->p = p;
    return crlf(s);
}

int hp_parse_response(const char *buf, size_t len, const struct hp_limits *lim, bool head_request,
                      struct hp_response *out)
{
    struct scan s = {buf, scan_end(len, lim), 0};
    struct fields f = {.h = out->headers, .max = lim->max_headers, .content_length = -1};
    int rc = status_line(&s, out);
    if (rc != OK)
        return need(rc, len, &s);
    f.minor = out->minor;
    if ((rc = fields(&s, &f)) != OK)
        return need(rc, len, &s);
    out->n_headers = f.n;
    out->content_length = f.content_length;
    out->chunked = f.chunked;
    out->keep_alive = out->minor == 1 ? !f.close : f.keep_alive && !f.close;
    /* RFC 9112 §6.3, in its order: no body, then chunked, then length, then until close. */
    if (out->status < 200 || out->status == 204 || out->status == 304 || head_request) {
        out->body = HP_BODY_NONE;
    } else if (f.chunked) {
        out->body = HP_BODY_CHUNKED;
    } else if (f.content_length >= 0) {
        out->body = HP_BODY_LENGTH;
    } else {
        out->body = HP_BODY_UNTIL_CLOSE;
        out->keep_alive = false;
    }
    return (int)s.p;
}

/* Chunked decoder states, in the order a body goes through them. */
enum {
    CH_SIZE0,       /* first hex digit of a size */
    CH_SIZE,        /* more digits, ';', BWS or CR */
    CH_SIZE_WS,     /* BWS after the size: only before ';' */
    CH_EXT_NAME0,   /* after ';': BWS, then a token */
    CH_EXT_NAME,    /* in the name */
    CH_EXT_NAME_WS, /* BWS after the name: '=' or ';' next */
    CH_EXT_VAL0,    /* after '=': BWS, then token or quoted-string */
    CH_EXT_VAL,     /* in a token value */
    CH_EXT_VAL_WS,  /* BWS after a value: ';' next */
    CH_EXT_QUOTED,  /* in a quoted-string */
    CH_EXT_ESC,     /* after a backslash in it */
    CH_EXT_QEND,    /* after the closing quote */
    CH_SIZE_LF,     /* the LF ending the size line */
    CH_DATA,        /* chunk bytes */
    CH_DATA_CR,     /* CRLF after the data */
    CH_DATA_LF,
    CH_TR_START, /* start of a trailer line, or the final CRLF */
    CH_TR_NAME,
    CH_TR_VALUE,
    CH_TR_LF,
    CH_TR_END_LF, /* the final LF */
    CH_DONE,
    CH_FAILED,
};

void hp_chunked_init(struct hp_chunked *d, uint64_t max_body, const struct hp_limits *lim)
{
    *d = (struct hp_chunked){.state = CH_SIZE0, .max_body = max_body, .lim = *lim};
}

/* One byte of a size line (CH_SIZE0 .. CH_SIZE_LF): the next state, or -(error). */
static int size_line(struct hp_chunked *d, char c)
{
    if (c == '\n')
        return -HP_BARE_CR_LF;
    if (++d->line > HP_CHUNK_LINE_MAX)
        return -HP_BAD_CHUNK_EXT;
    bool ws = c == ' ' || c == '\t', tchar = cl(c) & C_TCHAR;
    switch (d->state) {
    case CH_SIZE0:
    case CH_SIZE:
        if (cl(c) & C_HEX) {
            if (d->left > (HP_CHUNK_SIZE_MAX >> 4))
                return -HP_CHUNK_OVERFLOW;
            d->left = d->left << 4 | (uint64_t)hexval(c);
            if (d->left > d->max_body - d->total)
                return -HP_BODY_TOO_LARGE;
            return CH_SIZE;
        }
        if (d->state == CH_SIZE0)
            return -HP_BAD_CHUNK_SIZE;
        if (c == ';')
            return CH_EXT_NAME0;
        if (ws)
            return CH_SIZE_WS;
        return c == '\r' ? CH_SIZE_LF : -HP_BAD_CHUNK_SIZE;
    case CH_SIZE_WS:
        return ws ? CH_SIZE_WS : c == ';' ? CH_EXT_NAME0 : -HP_BAD_CHUNK_SIZE;
    case CH_EXT_NAME0:
        return ws ? CH_EXT_NAME0 : tchar ? CH_EXT_NAME : -HP_BAD_CHUNK_EXT;
    case CH_EXT_NAME:
        if (tchar)
            return CH_EXT_NAME;
        if (c == '=')
            return CH_EXT_VAL0;
        if (c == ';')
            return CH_EXT_NAME0;
        if (ws)
            return CH_EXT_NAME_WS;
        return c == '\r' ? CH_SIZE_LF : -HP_BAD_CHUNK_EXT;
    case CH_EXT_NAME_WS:
        if (ws)
            return CH_EXT_NAME_WS;
        return c == '=' ? CH_EXT_VAL0 : c == ';' ? CH_EXT_NAME0 : -HP_BAD_CHUNK_EXT;
    case CH_EXT_VAL0:
        if (ws)
            return CH_EXT_VAL0;
        return tchar ? CH_EXT_VAL : c == '"' ? CH_EXT_QUOTED : -HP_BAD_CHUNK_EXT;
    case CH_EXT_VAL:
        if (tchar)
            return CH_EXT_VAL;
        if (c == ';')
            return CH_EXT_NAME0;
        if (ws)
            return CH_EXT_VAL_WS;
        return c == '\r' ? CH_SIZE_LF : -HP_BAD_CHUNK_EXT;
    case CH_EXT_VAL_WS:
        return ws ? CH_EXT_VAL_WS : c == ';' ? CH_EXT_NAME0 : -HP_BAD_CHUNK_EXT;
    case CH_EXT_QUOTED:
        if (c == '"')
            return CH_EXT_QEND;
        if (c == '\\')
            return CH_EXT_ESC;
        return (cl(c) & C_QDTEXT) ? CH_EXT_QUOTED : -HP_BAD_CHUNK_EXT;
    case CH_EXT_ESC:
        return (cl(c) & C_FIELD) ? CH_EXT_QUOTED : -HP_BAD_CHUNK_EXT;
    case CH_EXT_QEND:
        if (c == ';')
            return CH_EXT_NAME0;
        if (ws)
            return CH_EXT_VAL_WS;
        return c == '\r' ? CH_SIZE_LF : -HP_BAD_CHUNK_EXT;
    default:
        return -HP_BAD_CHUNK_SIZE; /* not reached: CH_SIZE_LF is handled by the caller */
    }
}

/* A byte of a trailer name; a colon ends a name that is not empty. */
static int name_byte(char c, bool started)
{
    if (cl(c) & C_TCHAR)
        return CH_TR_NAME;
    if (c == ':' && started)
        return CH_TR_VALUE;
    if ((cl(c) & C_CTL) && c != '\r' && c != '\n' && c != '\t')
        return -HP_CONTROL_BYTE;
    return -HP_BAD_HEADER_NAME;
}

/* One byte of the trailer section (CH_TR_*): the next state, or -(error). Same rules as headers. */
static int trailer(struct hp_chunked *d, char c)
{
    if (++d->trailer_bytes > d->lim.max_header_bytes)
        return -HP_HEAD_TOO_LARGE;
    switch (d->state) {
    case CH_TR_START:
        if (c == '\r')
            return CH_TR_END_LF;
        if (c == '\n')
            return -HP_BARE_CR_LF;
        if (c == ' ' || c == '\t')
            return -HP_OBS_FOLD;
        if (d->trailers == d->lim.max_headers)
            return -HP_TOO_MANY_HEADERS;
        d->trailers++;
        return name_byte(c, false);
    case CH_TR_NAME:
        return name_byte(c, true);
    case CH_TR_VALUE:
        if (cl(c) & C_FIELD)
            return CH_TR_VALUE;
        if (c == '\r')
            return CH_TR_LF;
        return c == '\n' ? -HP_BARE_CR_LF : -HP_CONTROL_BYTE;
    case CH_TR_LF:
        return c == '\n' ? CH_TR_START : -HP_BARE_CR_LF;
    default: /* CH_TR_END_LF */
        return c == '\n' ? CH_DONE : -HP_BARE_CR_LF;
    }
}

int hp_chunked_feed(struct hp_chunked *d, const char *in, size_t len, size_t *consumed,
                    struct hp_str *data)
{
    *data = (struct hp_str){NULL, 0};
    *consumed = 0;
    if (d->state == CH_FAILED)
        return -(int)d->err;
    if (d->state == CH_DONE)
        return HP_CHUNK_DONE;
    size_t i = 0;
    while (i < len) {
        char c = in[i];
        int next;
        switch (d->state) {
        case CH_DATA: {
            size_t n = len - i < d->left ? len - i : (size_t)d->left;
            d->left -= n;
            if (!d->left)
                d->state = CH_DATA_CR;
            *data = (struct hp_str){in + i, n};
            *consumed = i + n;
            return HP_CHUNK_DATA;
        }
        case CH_SIZE_LF:
            if (c != '\n') {
                next = -HP_BARE_CR_LF;
                break;
            }
            d->total += d->left;
            next = d->left ? CH_DATA : CH_TR_START;
            break;
        case CH_DATA_CR:
            next = c == '\r' ? CH_DATA_LF : -HP_BAD_CHUNK_END;
            break;
        case CH_DATA_LF:
            next = c == '\n' ? CH_SIZE0 : -HP_BAD_CHUNK_END;
            d->line = 0;
            break;
        case CH_TR_START:
        case CH_TR_NAME:
        case CH_TR_VALUE:
        case CH_TR_LF:
        case CH_TR_END_LF:
            next = trailer(d, c);
            break;
        default:
            next = size_line(d, c);
            break;
        }
        if (next < 0) {
            d->err = (enum hp_error) - next;
            d->state = CH_FAILED;
            *consumed = i;
            return next;
        }
        d->state = next;
        i++;
        if (next == CH_DONE) {
            *consumed = i;
            return HP_CHUNK_DONE;
        }
    }
    *consumed = len;
    return HP_INCOMPLETE;
}
