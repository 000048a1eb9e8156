/*
 * http: the few evhttp helpers every HTTP surface here needs (the gateway's admin listener and
 * denials, the wallet, the demo merchant): JSON replies, a bounded JSON body, a bearer token's
 * SHA-256. Nothing about routes or policy.
 */
#ifndef CORE_HTTP_H
#define CORE_HTTP_H

#include <stddef.h>

#include <event2/http.h>
#include <jansson.h>

#include "core/util.h"

/** Reply with status and body (a string) of the given Content-Type. */
void http_reply(struct evhttp_request *req, int status, const char *type, const char *body);
/**
 * Reply with body as compact JSON and a newline, Cache-Control: no-store; takes body. Returns the
 * body's length in bytes (for the access log).
 */
size_t http_reply_json(struct evhttp_request *req, int status, json_t *body);
/** The request body as a JSON object (new reference), or NULL: empty, over max, not an object. */
json_t *http_body_json(struct evhttp_request *req, size_t max);
/** SHA-256 of the token in "Authorization: Bearer <token>": 0, or -1 without one. */
int http_bearer_sha256(struct evhttp_request *req, unsigned char out[32]) MUST_CHECK;

#endif
