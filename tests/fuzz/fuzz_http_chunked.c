/*
 * libFuzzer target: the chunked decoder. The first two bytes choose a piece size and a body limit;
 * the rest is fed once whole and once in pieces (each its own exact-size buffer). Both runs must
 * agree on the result, where the body ended and every data byte; data spans must lie inside the
 * piece they were found in and never exceed the limit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/http_parse.h"

struct run {
    int rc;
    size_t end;    /* input bytes consumed */
    size_t n_data; /* body bytes reported */
};

static struct run feed(const char *in, size_t size, size_t step, uint64_t max_body, char *out)
{
    static const struct hp_limits lim = {256, 4};
    struct hp_chunked d;
    hp_chunked_init(&d, max_body, &lim);
    struct run r = {HP_INCOMPLETE, 0, 0};
    while (r.end < size) {
        size_t piece = size - r.end < step ? size - r.end : step;
        char *buf = malloc(piece);
        memcpy(buf, in + r.end, piece);
        size_t used = 0;
        while (used < piece) {
            size_t c;
            struct hp_str data;
            r.rc = hp_chunked_feed(&d, buf + used, piece - used, &c, &data);
            if (c > piece - used)
                abort();
            if (r.rc == HP_CHUNK_DATA) {
                if (data.n == 0 || data.p < buf + used || data.p + data.n != buf + used + c)
                    abort();
                memcpy(out + r.n_data, data.p, data.n);
                r.n_data += data.n;
            } else if (data.n || data.p) {
                abort();
            }
            used += c;
            if (r.rc == HP_CHUNK_DONE || r.rc < 0)
                break;
            r.rc = HP_INCOMPLETE;
        }
        free(buf);
        r.end += used;
        if (r.rc == HP_CHUNK_DONE || r.rc < 0)
            break;
    }
    if (r.n_data > max_body || (r.rc < 0 && -r.rc >= HP__ERROR_COUNT))
        abort();
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t step = (size_t)(data[0] % 16) + 1;
    uint64_t max_body = data[1] < 200 ? (uint64_t)data[1] * 4 : UINT64_MAX;
    const char *in = (const char *)data + 2;
    size -= 2;
    char *a = malloc(size + 1), *b = malloc(size + 1);
    struct run whole = feed(in, size, size ? size : 1, max_body, a);
    struct run parts = feed(in, size, step, max_body, b);
    if (whole.rc != parts.rc || whole.end != parts.end || whole.n_data != parts.n_data ||
        memcmp(a, b, whole.n_data) != 0)
        abort();
    free(a);
    free(b);
    return 0;
}
