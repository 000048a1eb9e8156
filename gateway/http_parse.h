/*
 * http_parse: a strict, zero-copy HTTP/1.1 codec (RFC 9112) for the gateway's own connections:
 * request heads (client side), response heads (upstream side) and the chunked transfer coding.
 * Pure functions over caller-owned bytes: no I/O, no allocation, no globals. Every ambiguity SPEC
 * §5 lists is refused with its own error (obsolete folding, bare CR/LF, control bytes, duplicate or
 * conflicting framing, a target that could route differently upstream, ...) rather than guessed.
 *
 * Head parsers are not resumable: call them again from the start of the head with more bytes. They
 * scan at most max_header_bytes, so re-parsing costs O(max_header_bytes) per read and a head that
 * never ends is refused as soon as it passes the bound. Against a client that sends one byte per
 * packet (quadratic re-parsing), a caller may skip the call until the new bytes hold an LF or the
 * buffer passes max_header_bytes: a head can only complete at an LF, and an error in between is
 * still found at the next call, so a head costs about max_headers parses at most. Results are
 * prefix-stable: if a prefix of a buffer parses (or fails), every longer buffer with that prefix
 * gives the same result, so an error is reported as soon as the bytes that prove it have arrived.
 * The chunked decoder is an incremental state machine instead: a body is unbounded, so it is never
 * re-read.
 *
 * Not here: policy (routes, which methods exist, 413 against max_body_bytes for a Content-Length),
 * header rewriting, anything about the body other than chunked framing.
 */
#ifndef GATEWAY_HTTP_PARSE_H
#define GATEWAY_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/code.h"

/*
 * Refusal classes: X(name, HTTP status the gateway answers with, message). Parse functions return
 * -(enum hp_error); HP_INCOMPLETE (0) means "need more bytes" and is never an error.
 */
#define HP_ERROR_LIST(X)                                                                           \
    X(INCOMPLETE, 0, "more bytes are needed")                                                      \
    X(BAD_REQUEST_LINE, 400, "malformed request line")                                             \
    X(BAD_METHOD, 400, "the method is not a token")                                                \
    X(BAD_TARGET, 400, "the request target is not a plain origin-form path")                       \
    X(DOT_SEGMENT, 400, "the path has a dot segment")                                              \
    X(ENCODED_SLASH, 400, "the path has an encoded slash or backslash")                            \
    X(BAD_VERSION, 400, "the HTTP version is not HTTP/1.0 or HTTP/1.1")                            \
    X(BARE_CR_LF, 400, "a line does not end in CRLF (bare CR or LF)")                              \
    X(OBS_FOLD, 400, "a header line starts with whitespace (obsolete line folding)")               \
    X(CONTROL_BYTE, 400, "a control byte in a header or the request target")                       \
    X(BAD_HEADER_NAME, 400, "a header name is not a token followed by a colon")                    \
    X(BAD_HEADER_VALUE, 400, "a Connection header is not a token list")                            \
    X(HEAD_TOO_LARGE, 431, "the head is larger than max_header_bytes")                             \
    X(TOO_MANY_HEADERS, 431, "more than max_headers header lines")                                 \
    X(BAD_CONTENT_LENGTH, 400, "Content-Length is not 1 to 19 decimal digits")                     \
    X(DUP_CONTENT_LENGTH, 400, "Content-Length appears more than once")                            \
    X(BAD_TRANSFER_ENCODING, 400, "Transfer-Encoding is not exactly chunked, once, in HTTP/1.1")   \
    X(TE_AND_CL, 400, "both Transfer-Encoding and Content-Length")                                 \
    X(MISSING_HOST, 400, "an HTTP/1.1 request without Host")                                       \
    X(DUP_HOST, 400, "Host appears more than once")                                                \
    X(BAD_HOST, 400, "the Host value is not a host[:port]")                                        \
    X(BAD_STATUS_LINE, 400, "malformed status line")                                               \
    X(UPGRADE, 400, "a 101 Switching Protocols response (upgrades are refused)")                   \
    X(BAD_CHUNK_SIZE, 400, "a chunk size is not hexadecimal")                                      \
    X(CHUNK_OVERFLOW, 400, "a chunk size is too large")                                            \
    X(BAD_CHUNK_EXT, 400, "a chunk extension is malformed or too long")                            \
    X(BAD_CHUNK_END, 400, "chunk data is not followed by CRLF")                                    \
    X(BODY_TOO_LARGE, 413, "the chunked body is larger than the maximum")

enum hp_error {
#define HP_ERROR_ENUM(name, status, msg) HP_##name,
    HP_ERROR_LIST(HP_ERROR_ENUM)
#undef HP_ERROR_ENUM
        HP__ERROR_COUNT
};

/** A slice of the caller's buffer; p is NULL (n 0) for "absent". Not NUL-terminated. */
struct hp_str {
    const char *p;
    size_t n;
};

struct hp_header {
    struct hp_str name;  /* a token, case as received */
    struct hp_str value; /* leading and trailing SP/HTAB removed; may be empty */
};

struct hp_limits {
    size_t max_header_bytes; /* a head (or a trailer section) longer than this: HP_HEAD_TOO_LARGE */
    size_t max_headers;      /* more header lines: HP_TOO_MANY_HEADERS */
};

enum hp_method {
    HP_METHOD_OTHER, /* any other token: the router decides */
    HP_METHOD_GET,
    HP_METHOD_HEAD,
    HP_METHOD_POST,
    HP_METHOD_PUT,
    HP_METHOD_PATCH,
    HP_METHOD_DELETE,
    HP_METHOD_OPTIONS,
};

struct hp_request {
    struct hp_header *headers; /* in: the caller's array of lim->max_headers entries */
    size_t n_headers;
    enum hp_method method;
    struct hp_str method_str;
    struct hp_str target;   /* path and query as received, e.g. "/a/b?x=1" */
    struct hp_str path;     /* raw (not decoded), up to '?' */
    struct hp_str query;    /* after '?', without it; p NULL when there is no '?' */
    int minor;              /* HTTP/1.<minor>: 0 or 1 */
    struct hp_str host;     /* p NULL when absent (HTTP/1.0 only) */
    int64_t content_length; /* -1 when absent */
    bool chunked;
    bool keep_alive;
    bool expect_continue;
};

/* How a response body is delimited (RFC 9112 §6.3). */
enum hp_body_kind {
    HP_BODY_NONE,        /* 1xx, 204, 304, or the answer to HEAD */
    HP_BODY_LENGTH,      /* content_length bytes */
    HP_BODY_CHUNKED,     /* hp_chunked_* */
    HP_BODY_UNTIL_CLOSE, /* neither: read until the upstream closes (keep_alive is false) */
};

struct hp_response {
    struct hp_header *headers; /* in: the caller's array of lim->max_headers entries */
    size_t n_headers;
    int minor;
    int status; /* 100..599 */
    struct hp_str reason;
    int64_t content_length; /* -1 when absent */
    bool chunked;
    bool keep_alive;
    enum hp_body_kind body;
};

/** A short English description of e (never NULL). */
const char *hp_error_str(enum hp_error e);
/** The HTTP status the gateway answers a client with for e: 400, 413 or 431 (0 for INCOMPLETE). */
int hp_error_status(enum hp_error e);
/** The SPEC §2.2 code for e: bad_request, body_too_large or headers_too_large. */
enum code hp_error_code(enum hp_error e);

/**
 * Parse a request head at the start of buf[0..len). Returns the head's length (> 0, the request
 * line through the empty line; the body or the next pipelined request starts there), 0
 * (HP_INCOMPLETE) when more bytes are needed, or -(enum hp_error). Before the call, out->headers
 * must point to lim->max_headers entries; on success every other field of out is set (otherwise
 * out is unspecified). Slices point into buf. Only origin-form targets are accepted; up to
 * HP_MAX_EMPTY_LINES leading empty lines (CRLF) are skipped.
 */
int hp_parse_request(const char *buf, size_t len, const struct hp_limits *lim,
                     struct hp_request *out);

/**
 * Copy a parse whose slices point into from_buf to one whose slices point at the same offsets in
 * to_buf (a copy of the same bytes): the head is parsed once where it arrived, then moved with its
 * bytes. to->headers must point to from->n_headers entries.
 */
void hp_request_move(const struct hp_request *from, const char *from_buf, struct hp_request *to,
                     const char *to_buf);

/**
 * Parse a response head, as hp_parse_request does. head_request says the request was HEAD (no body
 * follows whatever the framing headers say). A 101 is refused (HP_UPGRADE); other 1xx are interim
 * responses (body HP_BODY_NONE) after which the caller parses the next head.
 */
int hp_parse_response(const char *buf, size_t len, const struct hp_limits *lim, bool head_request,
                      struct hp_response *out);

/** The value of the first header named name (ASCII case-insensitive) in h[0..n): true, or false. */
bool hp_find(const struct hp_header *h, size_t n, const char *name, struct hp_str *value);
/** hp_find over a parsed request's headers. */
bool hp_header(const struct hp_request *req, const char *name, struct hp_str *value);
bool hp_mem_ieq(const char *a, const char *b, size_t n);
/** Does s equal the NUL-terminated lit, ignoring ASCII case? Inline so that a literal's length
 * is known at compile time and most names differ at the first comparison. */
static inline bool hp_str_ieq(struct hp_str s, const char *lit)
{
    return s.n == strlen(lit) && hp_mem_ieq(s.p, lit, s.n);
}

/*
 * Iterator over the comma-separated tokens of every header named name, e.g. the Connection options
 * (whose named headers are hop-by-hop and must be stripped). Empty list elements are skipped.
 */
struct hp_tokens {
    const struct hp_header *h;
    size_t n, i, off;
    const char *name;
};

/** Start iterating the tokens of the headers named name in h[0..n) (name is borrowed). */
void hp_tokens_init(struct hp_tokens *it, const struct hp_header *h, size_t n, const char *name);
/** The next token (trimmed of OWS) in *tok: true, or false at the end. */
bool hp_tokens_next(struct hp_tokens *it, struct hp_str *tok);

/* Empty lines skipped before a request line (RFC 9112 §2.2 asks for at least one); more: refused.
 */
#define HP_MAX_EMPTY_LINES 4

/* Chunked decoder events, returned by hp_chunked_feed (errors are negative). */
#define HP_CHUNK_DATA 1 /* *data is a span of body bytes inside the input */
#define HP_CHUNK_DONE 2 /* the last chunk, the trailers and the final CRLF were consumed */

/* The longest chunk-size line (size and extensions) accepted, without its CRLF. */
#define HP_CHUNK_LINE_MAX 1024
/* Chunk sizes above this are refused (HP_CHUNK_OVERFLOW) whatever the body limit. */
#define HP_CHUNK_SIZE_MAX ((uint64_t)1 << 62)

/** Chunked decoder state; initialize with hp_chunked_init, embed anywhere, nothing to free. */
struct hp_chunked {
    int state;
    enum hp_error err;    /* sticky once the decoder has failed */
    uint64_t left;        /* bytes of the current chunk not yet reported */
    uint64_t total;       /* body bytes so far, counting the current chunk's size */
    uint64_t max_body;    /* more: HP_BODY_TOO_LARGE */
    size_t line;          /* bytes of the current size line */
    size_t trailer_bytes; /* bytes of the trailer section so far */
    size_t trailers;      /* trailer lines so far */
    struct hp_limits lim; /* bounds for the trailer section */
};

/** Prepare to decode a chunked body of at most max_body bytes; trailers are bounded by lim. */
void hp_chunked_init(struct hp_chunked *d, uint64_t max_body, const struct hp_limits *lim);

/**
 * Feed the next in[0..len) bytes of a chunked body (any split, down to one byte at a time). Sets
 * *consumed to how many bytes of in were used and returns:
 *  - HP_CHUNK_DATA: *data is body bytes inside in (ending at in + *consumed) to forward as is;
 *  - HP_CHUNK_DONE: the body ended at in + *consumed (what follows belongs to the next message);
 *  - 0 (HP_INCOMPLETE): all len bytes were used and the body goes on;
 *  - -(enum hp_error): malformed (or over max_body); the decoder stays failed.
 * *data is empty unless HP_CHUNK_DATA. Chunk extensions and trailers are checked, then dropped.
 */
int hp_chunked_feed(struct hp_chunked *d, const char *in, size_t len, size_t *consumed,
                    struct hp_str *data);

#endif
