/*
 * http: evhttp reply and request helpers.
 */
#include "core/http.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include "core/sha256.h"
#include "core/sjson.h"

void http_reply(struct evhttp_request *req, int status, const char *type, const char *body)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, body, strlen(body));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    evhttp_send_reply(req, status, NULL, b);
    evbuffer_free(b);
}

size_t http_reply_json(struct evhttp_request *req, int status, json_t *body)
{
    char *s = sjson_dump(body);
    json_decref(body);
    char *line = xasprintf("%s\n", s);
    free(s);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    http_reply(req, status, "application/json", line);
    size_t n = strlen(line);
    free(line);
    return n;
}

json_t *http_body_json(struct evhttp_request *req, size_t max)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len == 0 || len > max)
        return NULL;
    char *err = NULL;
    json_t *v = sjson_parse((const char *)evbuffer_pullup(in, -1), len, &err);
    free(err);
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

int http_bearer_sha256(struct evhttp_request *req, unsigned char out[32])
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0 || !h[7])
        return -1;
    sha256(h + 7, strlen(h + 7), out);
    return 0;
}
