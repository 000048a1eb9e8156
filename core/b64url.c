/*
 * b64url: strict, canonical base64url without padding, and standard padded base64.
 */
#include "core/b64url.h"

#include <pthread.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t b64url_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

char *b64url_encode_new(const unsigned char *in, size_t n)
{
    char *out = xmalloc(B64URL_ENC_LEN(n));
    b64url_encode(in, n, out);
    return out;
}

/* The value of c in the alphabet whose last two digits are c62 and c63, or -1. */
static int val(unsigned char c, char c62, char c63)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == c62)
        return 62;
    if (c == c63)
        return 63;
    return -1;
}

/* val() for the URL alphabet as a table, filled once: the decoder looks each character up. */
static signed char url_val[256];
static pthread_once_t url_once = PTHREAD_ONCE_INIT;

static void url_init(void)
{
    for (int c = 0; c < 256; c++)
        url_val[c] = (signed char)val((unsigned char)c, '-', '_');
}

static int url(const char *in, size_t i)
{
    return url_val[(unsigned char)in[i]];
}

long b64url_decode(const char *in, size_t n, unsigned char *out)
{
    if (n % 4 == 1)
        return -1;
    pthread_once(&url_once, url_init);
    size_t o = 0, i = 0;
    for (; i + 4 <= n; i += 4) { /* four characters, three bytes */
        int a = url(in, i), b = url(in, i + 1), c = url(in, i + 2), d = url(in, i + 3);
        if ((a | b | c | d) < 0)
            return -1;
        unsigned v = (unsigned)a << 18 | (unsigned)b << 12 | (unsigned)c << 6 | (unsigned)d;
        out[o++] = (unsigned char)(v >> 16);
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    /* Two or three characters left: one or two bytes. The leftover bits must be zero, or two
     * encodings would decode alike. */
    if (n - i == 2) {
        int a = url(in, i), b = url(in, i + 1);
        if ((a | b) < 0 || (b & 0xf))
            return -1;
        out[o++] = (unsigned char)(a << 2 | b >> 4);
    } else if (n - i == 3) {
        int a = url(in, i), b = url(in, i + 1), c = url(in, i + 2);
        if ((a | b | c) < 0 || (c & 0x3))
            return -1;
        unsigned v = (unsigned)a << 12 | (unsigned)b << 6 | (unsigned)c;
        out[o++] = (unsigned char)(v >> 10);
        out[o++] = (unsigned char)(v >> 2);
    }
    return (long)o;
}

long b64_decode(const char *in, size_t n, unsigned char *out)
{
    if (n % 4)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        unsigned v = 0;
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            unsigned char c = (unsigned char)in[i + j];
            int x = 0;
            if (c == '=' && i + 4 == n && j >= 2)
                pad++;
            else if (pad || (x = val(c, '+', '/')) < 0)
                return -1;
            v = v << 6 | (unsigned)x;
        }
        /* The bits the padding leaves unused must be zero: one encoding per byte string. */
        if ((pad == 1 && (v & 0xff)) || (pad == 2 && (v & 0xffff)))
            return -1;
        out[o++] = (unsigned char)(v >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(v >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)v;
    }
    return (long)o;
}
