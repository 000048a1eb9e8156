/*
 * httpsig: RFC 8941 dictionaries, RFC 9421 signature bases, sign and verify, RFC 9530 digests
 * and RFC 7638 thumbprints. Signing and verifying raw signatures is jws.c's (jws_sign_raw,
 * jws_verify_raw: the r||s ↔ DER conversion lives there); key parsing is jwk.c's.
 */
#include "core/httpsig.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>

#include "core/b64url.h"
#include "core/jws.h"
#include "core/sha256.h"
#include "core/sjson.h"

/* ---- a growing string ---- */

struct sb {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sb *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(struct sb *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_ch(struct sb *b, char c)
{
    sb_add(b, &c, 1);
}

/* ---- standard base64 with padding (RFC 4648 §4), as Byte Sequences use it ---- */

static void sb_b64(struct sb *b, const unsigned char *in, size_t n)
{
    char *enc = xmalloc(4 * ((n + 2) / 3) + 1);
    int len = EVP_EncodeBlock((unsigned char *)enc, in, (int)n);
    sb_add(b, enc, (size_t)len);
    free(enc);
}

/* ---- RFC 8941 parsing ---- */

struct parser {
    const char *s;
    size_t n, i;
    struct httpsig_sf_dict *d;
    const char *why;
};

static int peek(const struct parser *p)
{
    return p->i < p->n ? (unsigned char)p->s[p->i] : -1;
}

static int fail(struct parser *p, const char *why)
{
    p->why = why;
    return -1;
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_lcalpha(int c)
{
    return c >= 'a' && c <= 'z';
}

static bool is_alpha(int c)
{
    return is_lcalpha(c) || (c >= 'A' && c <= 'Z');
}

/* RFC 9110 tchar. */
static bool is_tchar(int c)
{
    return c > 0 && (is_alpha(c) || is_digit(c) || strchr("!#$%&'*+-.^_`|~", c));
}

/* Room for n bytes and a NUL in the arena, or NULL. The arena is sized so this cannot fail on
 * any input (every stored piece is shorter than twice its source), but it is checked anyway. */
static char *arena_take(struct httpsig_sf_dict *d, size_t n)
{
    if (n + 1 > d->cap - d->used)
        return NULL;
    char *r = d->arena + d->used;
    d->used += n + 1;
    r[n] = '\0';
    return r;
}

static int parse_key(struct parser *p, const char **out)
{
    int c = peek(p);
    if (!is_lcalpha(c) && c != '*')
        return fail(p, "expected a key (lcalpha or '*')");
    size_t start = p->i;
    while (c = peek(p), is_lcalpha(c) || is_digit(c) || (c > 0 && strchr("_-.*", c)))
        p->i++;
    size_t len = p->i - start;
    if (len > HTTPSIG_SF_MAX_KEY)
        return fail(p, "key too long");
    char *k = arena_take(p->d, len);
    if (!k)
        return fail(p, "out of room");
    memcpy(k, p->s + start, len);
    *out = k;
    return 0;
}

static int parse_number(struct parser *p, struct httpsig_sf_bare *v)
{
    int64_t sign = 1, ip = 0, frac = 0;
    if (peek(p) == '-') {
        sign = -1;
        p->i++;
    }
    if (!is_digit(peek(p)))
        return fail(p, "expected a digit");
    size_t nd = 0;
    while (is_digit(peek(p))) {
        if (++nd > 15)
            return fail(p, "integer has more than 15 digits");
        ip = ip * 10 + (peek(p) - '0');
        p->i++;
    }
    if (peek(p) != '.') {
        v->type = HTTPSIG_SF_INTEGER;
        v->num = sign * ip;
        return 0;
    }
    if (nd > 12)
        return fail(p, "decimal has more than 12 integer digits");
    p->i++;
    size_t fd = 0;
    while (is_digit(peek(p))) {
        if (++fd > 3)
            return fail(p, "decimal has more than 3 fractional digits");
        frac = frac * 10 + (peek(p) - '0');
        p->i++;
    }
    if (fd == 0)
        return fail(p, "decimal ends with '.'");
    for (; fd < 3; fd++)
        frac *= 10;
    v->type = HTTPSIG_SF_DECIMAL;
    v->num = sign * (ip * 1000 + frac);
    return 0;
}

static int parse_string(struct parser *p, struct httpsig_sf_bare *v)
{
    p->i++; /* '"' */
    /* The unescaped string is no longer than what is left of the input. */
    size_t room = p->n - p->i;
    char *out = arena_take(p->d, room);
    if (!out)
        return fail(p, "out of room");
    size_t len = 0;
    for (;;) {
        int c = peek(p);
        if (c < 0)
            return fail(p, "unterminated string");
        p->i++;
        if (c == '"')
            break;
        if (c == '\\') {
            c = peek(p);
            if (c != '"' && c != '\\')
                return fail(p, "a string may only escape '\"' and '\\'");
            p->i++;
        } else if (c < 0x20 || c > 0x7e) {
            return fail(p, "string has a byte outside %x20-7E");
        }
        if (len == HTTPSIG_SF_MAX_STRING)
            return fail(p, "string too long");
        out[len++] = (char)c;
    }
    out[len] = '\0';
    /* Give back what the string did not use. */
    p->d->used -= room - len;
    v->type = HTTPSIG_SF_STRING;
    v->str = out;
    v->len = len;
    return 0;
}

static int parse_token(struct parser *p, struct httpsig_sf_bare *v)
{
    size_t start = p->i;
    p->i++; /* ALPHA or '*', checked by the caller */
    int c;
    while (c = peek(p), is_tchar(c) || c == ':' || c == '/')
        p->i++;
    size_t len = p->i - start;
    if (len > HTTPSIG_SF_MAX_STRING)
        return fail(p, "token too long");
    char *t = arena_take(p->d, len);
    if (!t)
        return fail(p, "out of room");
    memcpy(t, p->s + start, len);
    v->type = HTTPSIG_SF_TOKEN;
    v->str = t;
    v->len = len;
    return 0;
}

static int parse_bytes(struct parser *p, struct httpsig_sf_bare *v)
{
    p->i++; /* ':' */
    size_t start = p->i;
    while (peek(p) != ':') {
        if (peek(p) < 0)
            return fail(p, "unterminated byte sequence");
        p->i++;
    }
    size_t len = p->i - start;
    p->i++;
    if (len > HTTPSIG_SF_MAX_BYTES)
        return fail(p, "byte sequence too long");
    char *out = arena_take(p->d, len / 4 * 3);
    if (!out)
        return fail(p, "out of room");
    long got = b64_decode(p->s + start, len, (unsigned char *)out);
    if (got < 0)
        return fail(p, "byte sequence is not canonical padded base64");
    v->type = HTTPSIG_SF_BYTES;
    v->str = out;
    v->len = (size_t)got;
    return 0;
}

static int parse_bare(struct parser *p, struct httpsig_sf_bare *v)
{
    int c = peek(p);
    if (c == '-' || is_digit(c))
        return parse_number(p, v);
    if (c == '"')
        return parse_string(p, v);
    if (c == ':')
        return parse_bytes(p, v);
    if (c == '*' || is_alpha(c))
        return parse_token(p, v);
    if (c == '?') {
        p->i++;
        c = peek(p);
        if (c != '0' && c != '1')
            return fail(p, "a boolean is ?0 or ?1");
        p->i++;
        v->type = HTTPSIG_SF_BOOLEAN;
        v->num = c == '1';
        return 0;
    }
    return fail(p, "expected an item");
}

static int parse_params(struct parser *p, size_t *p0, size_t *np)
{
    struct httpsig_sf_dict *d = p->d;
    *p0 = d->nparams;
    *np = 0;
    while (peek(p) == ';') {
        p->i++;
        while (peek(p) == ' ')
            p->i++;
        const char *key;
        if (parse_key(p, &key) != 0)
            return -1;
        for (size_t j = *p0; j < d->nparams; j++)
            if (strcmp(d->params[j].key, key) == 0)
                return fail(p, "duplicate parameter");
        struct httpsig_sf_bare v = {.type = HTTPSIG_SF_BOOLEAN, .num = 1};
        if (peek(p) == '=') {
            p->i++;
            if (parse_bare(p, &v) != 0)
                return -1;
        }
        if (d->nparams == HTTPSIG_SF_MAX_PARAMS)
            return fail(p, "too many parameters");
        d->params[d->nparams].key = key;
        d->params[d->nparams].v = v;
        d->nparams++;
        (*np)++;
    }
    return 0;
}

static int parse_item(struct parser *p, struct httpsig_sf_item *it)
{
    if (parse_bare(p, &it->v) != 0)
        return -1;
    return parse_params(p, &it->p0, &it->np);
}

static int parse_inner_list(struct parser *p, struct httpsig_sf_member *m)
{
    struct httpsig_sf_dict *d = p->d;
    p->i++; /* '(' */
    m->inner = true;
    m->i0 = d->nitems;
    m->ni = 0;
    for (;;) {
        while (peek(p) == ' ')
            p->i++;
        if (peek(p) == ')') {
            p->i++;
            return parse_params(p, &m->item.p0, &m->item.np);
        }
        if (d->nitems == HTTPSIG_SF_MAX_ITEMS || m->ni == HTTPSIG_SF_MAX_LIST)
            return fail(p, "too many inner-list items");
        if (parse_item(p, &d->items[d->nitems]) != 0)
            return -1;
        d->nitems++;
        m->ni++;
        if (peek(p) != ' ' && peek(p) != ')')
            return fail(p, "inner-list items are separated by spaces and closed by ')'");
    }
}

int httpsig_sf_parse_dict(const char *s, size_t len, struct httpsig_sf_dict *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (len > HTTPSIG_SF_MAX_INPUT) {
        *why = "field value too long";
        return -1;
    }
    out->cap = 2 * len + 1;
    out->arena = xmalloc(out->cap);
    struct parser p = {.s = s, .n = len, .d = out};
    while (peek(&p) == ' ')
        p.i++;
    while (p.i < p.n) {
        if (out->n == HTTPSIG_SF_MAX_MEMBERS) {
            fail(&p, "too many dictionary members");
            goto fail;
        }
        struct httpsig_sf_member *m = &out->m[out->n];
        if (parse_key(&p, &m->key) != 0)
            goto fail;
        if (httpsig_sf_get(out, m->key)) {
            fail(&p, "duplicate dictionary key");
            goto fail;
        }
        int rc;
        if (peek(&p) == '=') {
            p.i++;
            rc = peek(&p) == '(' ? parse_inner_list(&p, m) : parse_item(&p, &m->item);
        } else {
            m->item.v.type = HTTPSIG_SF_BOOLEAN;
            m->item.v.num = 1;
            rc = parse_params(&p, &m->item.p0, &m->item.np);
        }
        if (rc != 0)
            goto fail;
        out->n++;
        while (peek(&p) == ' ' || peek(&p) == '\t')
            p.i++;
        if (p.i == p.n)
            break;
        if (peek(&p) != ',') {
            fail(&p, "expected ',' between dictionary members");
            goto fail;
        }
        p.i++;
        while (peek(&p) == ' ' || peek(&p) == '\t')
            p.i++;
        if (p.i == p.n) {
            fail(&p, "trailing ',' in dictionary");
            goto fail;
        }
    }
    return 0;
fail:
    *why = p.why;
    httpsig_sf_dict_clear(out);
    return -1;
}

const struct httpsig_sf_member *httpsig_sf_get(const struct httpsig_sf_dict *d, const char *key)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->m[i].key, key) == 0)
            return &d->m[i];
    return NULL;
}

void httpsig_sf_dict_clear(struct httpsig_sf_dict *d)
{
    free(d->arena);
    d->arena = NULL;
    d->n = d->nitems = d->nparams = d->used = d->cap = 0;
}

/* ---- RFC 8941 serialisation ---- */

static void ser_bare(struct sb *b, const struct httpsig_sf_bare *v)
{
    char num[48];
    switch (v->type) {
    case HTTPSIG_SF_INTEGER:
        snprintf(num, sizeof(num), "%" PRId64, v->num);
        sb_str(b, num);
        break;
    case HTTPSIG_SF_DECIMAL: {
        uint64_t a = v->num < 0 ? (uint64_t)0 - (uint64_t)v->num : (uint64_t)v->num;
        int n = snprintf(num, sizeof(num), "%s%" PRIu64 ".%03" PRIu64, v->num < 0 ? "-" : "",
                         a / 1000, a % 1000);
        while (n > 2 && num[n - 1] == '0' && num[n - 2] != '.') /* RFC 8941: no trailing zeros */
            num[--n] = '\0';
        sb_str(b, num);
        break;
    }
    case HTTPSIG_SF_STRING:
        sb_ch(b, '"');
        for (size_t i = 0; i < v->len; i++) {
            if (v->str[i] == '"' || v->str[i] == '\\')
                sb_ch(b, '\\');
            sb_ch(b, v->str[i]);
        }
        sb_ch(b, '"');
        break;
    case HTTPSIG_SF_TOKEN:
        sb_add(b, v->str, v->len);
        break;
    case HTTPSIG_SF_BYTES:
        sb_ch(b, ':');
        sb_b64(b, (const unsigned char *)v->str, v->len);
        sb_ch(b, ':');
        break;
    case HTTPSIG_SF_BOOLEAN:
        sb_str(b, v->num ? "?1" : "?0");
        break;
    }
}

static void ser_params(struct sb *b, const struct httpsig_sf_dict *d, size_t p0, size_t np)
{
    for (size_t i = p0; i < p0 + np; i++) {
        sb_ch(b, ';');
        sb_str(b, d->params[i].key);
        const struct httpsig_sf_bare *v = &d->params[i].v;
        if (v->type == HTTPSIG_SF_BOOLEAN && v->num == 1)
            continue;
        sb_ch(b, '=');
        ser_bare(b, v);
    }
}

static void ser_inner(struct sb *b, const struct httpsig_sf_dict *d,
                      const struct httpsig_sf_member *m)
{
    sb_ch(b, '(');
    for (size_t i = m->i0; i < m->i0 + m->ni; i++) {
        if (i > m->i0)
            sb_ch(b, ' ');
        ser_bare(b, &d->items[i].v);
        ser_params(b, d, d->items[i].p0, d->items[i].np);
    }
    sb_ch(b, ')');
    ser_params(b, d, m->item.p0, m->item.np);
}

char *httpsig_sf_inner_list(const struct httpsig_sf_dict *d, const struct httpsig_sf_member *mem)
{
    struct sb b = {0};
    sb_str(&b, "");
    ser_inner(&b, d, mem);
    return b.p;
}

char *httpsig_sf_dict_serialize(const struct httpsig_sf_dict *d)
{
    struct sb b = {0};
    sb_str(&b, "");
    for (size_t i = 0; i < d->n; i++) {
        const struct httpsig_sf_member *m = &d->m[i];
        if (i)
            sb_str(&b, ", ");
        sb_str(&b, m->key);
        if (m->inner) {
            sb_ch(&b, '=');
            ser_inner(&b, d, m);
            continue;
        }
        if (m->item.v.type != HTTPSIG_SF_BOOLEAN || m->item.v.num != 1) {
            sb_ch(&b, '=');
            ser_bare(&b, &m->item.v);
        }
        ser_params(&b, d, m->item.p0, m->item.np);
    }
    return b.p;
}

/* ---- the message ---- */

/* All lines of a field joined with ", ", each trimmed of OWS (RFC 9421 §2.1); 0 absent, 1
 * present, -1 malformed. A control byte (CR, LF, NUL...) would let a value forge base lines. */
static int field_value(const struct httpsig_msg *m, const char *name, struct sb *out,
                       const char **why)
{
    const char *vals[HTTPSIG_MAX_FIELD_LINES];
    size_t n = m->field ? m->field(m->ctx, name, vals, HTTPSIG_MAX_FIELD_LINES) : 0;
    if (n == 0)
        return 0;
    if (n > HTTPSIG_MAX_FIELD_LINES) {
        *why = "too many lines of one field";
        return -1;
    }
    sb_str(out, "");
    for (size_t i = 0; i < n; i++) {
        const char *v = vals[i], *e = v + strlen(v);
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        for (const char *c = v; c < e; c++)
            if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f) {
                *why = "field value has a control character";
                return -1;
            }
        if (i)
            sb_str(out, ", ");
        sb_add(out, v, (size_t)(e - v));
    }
    return 1;
}

static const char *scheme_of(const struct httpsig_msg *m)
{
    return m->scheme ? m->scheme : "http";
}

/* RFC 9421 §2.2.3: host lower-cased, the scheme's default port removed. */
static int authority(const struct httpsig_msg *m, struct sb *out, const char **why)
{
    const char *a = m->authority;
    if (!a || !*a) {
        *why = "the request has no authority";
        return -1;
    }
    size_t n = strlen(a), hostlen = n;
    const char *port = NULL;
    if (n > 262) {
        *why = "authority too long";
        return -1;
    }
    if (a[0] == '[') {
        const char *close = strchr(a, ']');
        if (!close || (close[1] && close[1] != ':')) {
            *why = "malformed IP literal in authority";
            return -1;
        }
        if (close[1] == ':')
            port = close + 2;
    } else if ((port = strchr(a, ':')) != NULL) {
        port++;
    }
    if (port)
        hostlen = (size_t)(port - 1 - a);
    if (hostlen == 0) {
        *why = "authority has an empty host";
        return -1;
    }
    for (size_t i = 0; i < hostlen; i++) {
        int c = (unsigned char)a[i];
        bool literal = a[0] == '[' && (c == '[' || c == ']' || c == ':');
        if (!literal && !is_alpha(c) && !is_digit(c) && !strchr("-._~%!$&'()*+,;=", c)) {
            *why = "authority has a character a host cannot have";
            return -1;
        }
    }
    size_t plen = port ? strlen(port) : 0;
    for (size_t i = 0; i < plen; i++)
        if (!is_digit(port[i]) || plen > 5) {
            *why = "authority has a malformed port";
            return -1;
        }
    for (size_t i = 0; i < hostlen; i++) {
        char c = a[i];
        sb_ch(out, (char)(c >= 'A' && c <= 'Z' ? c + 32 : c));
    }
    const char *dflt = strcmp(scheme_of(m), "https") == 0 ? "443" : "80";
    if (plen && strcmp(port, dflt) != 0) {
        sb_ch(out, ':');
        sb_add(out, port, plen);
    }
    return 0;
}

/* A request-target piece: printable ASCII without spaces; '?' only where allowed. */
static bool target_ok(const char *s, bool allow_qmark)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || *s == '#' ||
            (*s == '?' && !allow_qmark))
            return false;
    return true;
}

static int derived_path(const struct httpsig_msg *m, struct sb *out, const char **why)
{
    const char *path = m->path ? m->path : "";
    if ((*path && *path != '/') || !target_ok(path, false)) {
        *why = "malformed path";
        return -1;
    }
    sb_str(out, *path ? path : "/");
    return 0;
}

static int derived_query(const struct httpsig_msg *m, struct sb *out, const char **why)
{
    if (m->query && !target_ok(m->query, true)) {
        *why = "malformed query";
        return -1;
    }
    sb_ch(out, '?');
    if (m->query)
        sb_str(out, m->query);
    return 0;
}

/* The value of one component into out: 0, or -1 with *why. */
static int component(const struct httpsig_msg *m, const char *name, struct sb *out, bool *absent,
                     const char **why)
{
    *absent = false;
    out->len = 0;
    sb_str(out, "");
    if (name[0] != '@') {
        for (const char *c = name; *c; c++)
            if (!is_tchar(*c) || (*c >= 'A' && *c <= 'Z')) {
                *why = "a field name must be a lower-case token";
                return -1;
            }
        int rc = field_value(m, name, out, why);
        if (rc == 0) {
            *absent = true;
            *why = "not in the message";
        }
        return rc > 0 ? 0 : -1;
    }
    if (strcmp(name, "@method") == 0) {
        if (!m->method || !*m->method) {
            *absent = true;
            *why = "not in the message";
            return -1;
        }
        for (const char *c = m->method; *c; c++)
            if (!is_tchar(*c)) {
                *why = "malformed method";
                return -1;
            }
        sb_str(out, m->method);
        return 0;
    }
    if (strcmp(name, "@authority") == 0)
        return authority(m, out, why);
    if (strcmp(name, "@scheme") == 0) {
        for (const char *c = scheme_of(m); *c; c++)
            sb_ch(out, (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c));
        return 0;
    }
    if (strcmp(name, "@path") == 0)
        return derived_path(m, out, why);
    if (strcmp(name, "@query") == 0)
        return derived_query(m, out, why);
    if (strcmp(name, "@request-target") == 0) {
        if (derived_path(m, out, why) != 0)
            return -1;
        if (m->query) {
            struct sb q = {0};
            int rc = derived_query(m, &q, why);
            if (rc == 0)
                sb_str(out, q.p);
            free(q.p);
            return rc;
        }
        return 0;
    }
    if (strcmp(name, "@target-uri") == 0) {
        struct sb part = {0};
        int rc = component(m, "@scheme", &part, absent, why);
        if (rc == 0) {
            sb_str(out, part.p);
            sb_str(out, "://");
            part.len = 0;
            rc = authority(m, &part, why);
        }
        if (rc == 0) {
            sb_str(out, part.p);
            part.len = 0;
            rc = component(m, "@request-target", &part, absent, why);
        }
        if (rc == 0)
            sb_str(out, part.p);
        free(part.p);
        return rc;
    }
    if (strcmp(name, "@status") == 0) {
        if (m->status < 100 || m->status > 999) {
            *absent = true;
            *why = "@status is for responses";
            return -1;
        }
        char st[8];
        snprintf(st, sizeof(st), "%d", m->status);
        sb_str(out, st);
        return 0;
    }
    *why = "unknown derived component";
    return -1;
}

/* The signature base (RFC 9421 §2.5) for the inner list mem of d into base; -1 with a reason. */
static int build_base(const struct httpsig_msg *m, const struct httpsig_sf_dict *d,
                      const struct httpsig_sf_member *mem, struct sb *base, char *reason,
                      size_t rlen)
{
    struct sb val = {0};
    int ret = -1;
    sb_str(base, "");
    for (size_t i = mem->i0; i < mem->i0 + mem->ni; i++) {
        const struct httpsig_sf_item *it = &d->items[i];
        const char *name = it->v.str;
        if (it->v.type != HTTPSIG_SF_STRING || it->v.len == 0 || it->v.len > 64 ||
            strlen(name) != it->v.len) {
            snprintf(reason, rlen, "Signature-Input: a component is not a short non-empty string");
            goto out;
        }
        if (it->np) {
            snprintf(reason, rlen, "component \"%s\": parameters are not supported", name);
            goto out;
        }
        if (strcmp(name, "@signature-params") == 0) {
            snprintf(reason, rlen, "\"@signature-params\" cannot be a covered component");
            goto out;
        }
        for (size_t j = mem->i0; j < i; j++)
            if (strcmp(d->items[j].v.str, name) == 0) {
                snprintf(reason, rlen, "component \"%s\" is listed twice", name);
                goto out;
            }
        const char *why = "";
        bool absent;
        if (component(m, name, &val, &absent, &why) != 0) {
            snprintf(reason, rlen, "component \"%s\": %s", name, why);
            goto out;
        }
        sb_ch(base, '"');
        sb_str(base, name);
        sb_str(base, "\": ");
        sb_add(base, val.p, val.len);
        sb_ch(base, '\n');
    }
    sb_str(base, "\"@signature-params\": ");
    ser_inner(base, d, mem);
    ret = 0;
out:
    free(val.p);
    return ret;
}

/* Parse a signature field (all its lines) into d: 0 absent, 1 parsed, -1 malformed. */
static int parse_field(const struct httpsig_msg *m, const char *name, struct httpsig_sf_dict *d,
                       char *reason, size_t rlen)
{
    struct sb v = {0};
    const char *why = "";
    memset(d, 0, sizeof(*d));
    int rc = field_value(m, name, &v, &why);
    if (rc > 0 && httpsig_sf_parse_dict(v.p, v.len, d, &why) != 0)
        rc = -1;
    if (rc < 0)
        snprintf(reason, rlen, "%s: %s", name, why);
    free(v.p);
    return rc;
}

/* Signature-Input is a dictionary of inner lists of strings (RFC 9421 §4.1). */
static int check_input_shape(const struct httpsig_sf_dict *d, char *reason, size_t rlen)
{
    for (size_t i = 0; i < d->n; i++) {
        if (!d->m[i].inner) {
            snprintf(reason, rlen, "signature-input: member \"%s\" is not an inner list",
                     d->m[i].key);
            return -1;
        }
        for (size_t j = d->m[i].i0; j < d->m[i].i0 + d->m[i].ni; j++)
            if (d->items[j].v.type != HTTPSIG_SF_STRING) {
                snprintf(reason, rlen, "signature-input: member \"%s\" lists a non-string",
                         d->m[i].key);
                return -1;
            }
    }
    return 0;
}

char *httpsig_base(const struct httpsig_msg *m, const char *label, size_t *len, char **err)
{
    struct httpsig_sf_dict d;
    char reason[HTTPSIG_REASON_MAX];
    struct sb base = {0};
    int rc = parse_field(m, "signature-input", &d, reason, sizeof(reason));
    if (rc == 0)
        snprintf(reason, sizeof(reason), "no signature-input field");
    const struct httpsig_sf_member *mem = rc > 0 ? httpsig_sf_get(&d, label) : NULL;
    if (rc > 0 && !mem)
        snprintf(reason, sizeof(reason), "signature-input: no label \"%s\"", label);
    if (mem && check_input_shape(&d, reason, sizeof(reason)) == 0 &&
        build_base(m, &d, mem, &base, reason, sizeof(reason)) == 0) {
        httpsig_sf_dict_clear(&d);
        *len = base.len;
        return base.p;
    }
    httpsig_sf_dict_clear(&d);
    free(base.p);
    *err = xstrdup(reason);
    return NULL;
}

/* ---- verification ---- */

const char *httpsig_alg_name(const struct jwk *key)
{
    return key->alg == JWK_EDDSA ? "ed25519" : "ecdsa-p256-sha256";
}

static bool nonce_ok(const char *s, size_t len)
{
    if (len < HTTPSIG_NONCE_MIN || len > HTTPSIG_NONCE_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_alpha(s[i]) && !is_digit(s[i]) && s[i] != '-' && s[i] != '_')
            return false;
    return true;
}

/* Read the parameters of mem into out, checking their types; -1 with a reason. */
static int read_params(const struct httpsig_sf_dict *d, const struct httpsig_sf_member *mem,
                       struct httpsig_result *out, const char **alg)
{
    static const char *const ints[] = {"created", "expires"};
    static const char *const strs[] = {"nonce", "keyid", "alg", "tag"};
    for (size_t i = mem->item.p0; i < mem->item.p0 + mem->item.np; i++) {
        const char *k = d->params[i].key;
        const struct httpsig_sf_bare *v = &d->params[i].v;
        bool is_int = name_index(k, ints, ARRAY_LEN(ints)) >= 0;
        bool is_str = name_index(k, strs, ARRAY_LEN(strs)) >= 0;
        if ((is_int && v->type != HTTPSIG_SF_INTEGER) || (is_str && v->type != HTTPSIG_SF_STRING)) {
            snprintf(out->reason, sizeof(out->reason), "parameter %s has the wrong type", k);
            return -1;
        }
        if (is_int && v->num < 0) {
            snprintf(out->reason, sizeof(out->reason), "parameter %s is negative", k);
            return -1;
        }
        if (strcmp(k, "created") == 0) {
            out->created = v->num;
        } else if (strcmp(k, "expires") == 0) {
            out->expires = v->num;
        } else if (strcmp(k, "nonce") == 0) {
            if (!nonce_ok(v->str, v->len)) {
                snprintf(out->reason, sizeof(out->reason),
                         "nonce is not %d to %d base64url characters", HTTPSIG_NONCE_MIN,
                         HTTPSIG_NONCE_MAX);
                return -1;
            }
            memcpy(out->nonce, v->str, v->len + 1);
        } else if (strcmp(k, "keyid") == 0) {
            if (v->len > HTTPSIG_KEYID_MAX) {
                snprintf(out->reason, sizeof(out->reason), "keyid is too long");
                return -1;
            }
            memcpy(out->keyid, v->str, v->len + 1);
        } else if (strcmp(k, "alg") == 0) {
            *alg = v->str;
        }
    }
    return 0;
}

/* The policy's checks of the parameters and of the covered components; -1 with a reason. */
static int check_policy(const struct httpsig_sf_dict *d, const struct httpsig_sf_member *mem,
                        const struct jwk *key, const struct httpsig_policy *p, int64_t now,
                        const char *alg, struct httpsig_result *out)
{
    char *r = out->reason;
    size_t rl = sizeof(out->reason);
    for (size_t i = 0; i < p->n_required; i++) {
        bool found = false;
        for (size_t j = mem->i0; j < mem->i0 + mem->ni && !found; j++)
            found = strcmp(d->items[j].v.str, p->required[i]) == 0;
        if (!found) {
            snprintf(r, rl, "required component \"%s\" is not covered", p->required[i]);
            return -1;
        }
    }
    static const char *const names[] = {"created", "expires", "nonce", "keyid"};
    bool have[] = {out->created >= 0, out->expires >= 0, out->nonce[0] != '\0',
                   out->keyid[0] != '\0'};
    for (size_t i = 0; i < ARRAY_LEN(names); i++)
        if ((p->need & (1u << i)) && !have[i]) {
            snprintf(r, rl, "required parameter %s is missing", names[i]);
            return -1;
        }
    const char *want = p->keyid ? p->keyid : key->kid;
    if (out->keyid[0] && strcmp(out->keyid, want) != 0) {
        snprintf(r, rl, "keyid does not name the key");
        return -1;
    }
    if (alg && strcmp(alg, httpsig_alg_name(key)) != 0) {
        snprintf(r, rl, "alg \"%.40s\" does not match the key (%s)", alg, httpsig_alg_name(key));
        return -1;
    }
    if (out->created >= 0 && out->created > now + p->skew_s) {
        snprintf(r, rl, "created is in the future");
        return -1;
    }
    if (out->expires >= 0 && out->expires < now - p->skew_s) {
        snprintf(r, rl, "expired");
        return -1;
    }
    if (out->created >= 0 && out->expires >= 0) {
        if (out->expires < out->created) {
            snprintf(r, rl, "expires is before created");
            return -1;
        }
        if (out->expires - out->created > p->max_window_s) {
            snprintf(r, rl, "expires - created exceeds %" PRId64 " s", p->max_window_s);
            return -1;
        }
    }
    return 0;
}

enum httpsig_status httpsig_verify(const struct httpsig_msg *m, const char *label,
                                   const struct jwk *key, const struct httpsig_policy *p,
                                   int64_t now_s, struct httpsig_result *out)
{
    enum httpsig_status st = HTTPSIG_INVALID;
    struct httpsig_sf_dict in, sig;
    struct sb base = {0};
    char *r = out->reason;
    size_t rl = sizeof(out->reason);
    memset(out, 0, sizeof(*out));
    out->created = out->expires = -1;

    int rin = parse_field(m, "signature-input", &in, r, rl);
    int rsig = parse_field(m, "signature", &sig, r, rl);
    if (rin < 0 || rsig < 0)
        goto out;
    const struct httpsig_sf_member *mi = rin ? httpsig_sf_get(&in, label) : NULL;
    const struct httpsig_sf_member *ms = rsig ? httpsig_sf_get(&sig, label) : NULL;
    if (!mi && !ms) {
        snprintf(r, rl, "no signature labelled \"%s\"", label);
        st = HTTPSIG_MISSING;
        goto out;
    }
    if (!mi || !ms) {
        snprintf(r, rl, "label \"%s\" is in %s only", label, mi ? "signature-input" : "signature");
        goto out;
    }
    if (check_input_shape(&in, r, rl) != 0)
        goto out;
    for (size_t i = 0; i < sig.n; i++)
        if (sig.m[i].inner || sig.m[i].item.v.type != HTTPSIG_SF_BYTES) {
            snprintf(r, rl, "signature: member \"%s\" is not a byte sequence", sig.m[i].key);
            goto out;
        }
    const char *alg = NULL;
    if (read_params(&in, mi, out, &alg) != 0 || check_policy(&in, mi, key, p, now_s, alg, out))
        goto out;
    for (size_t j = mi->i0; j < mi->i0 + mi->ni; j++)
        if (strcmp(in.items[j].v.str, "content-digest") == 0)
            out->covers_digest = true;
    if (build_base(m, &in, mi, &base, r, rl) != 0)
        goto out;
    if (jws_verify_raw(key, (const unsigned char *)base.p, base.len,
                       (const unsigned char *)ms->item.v.str, ms->item.v.len) != 0) {
        snprintf(r, rl, "signature does not verify with the %s key", httpsig_alg_name(key));
        goto out;
    }
    r[0] = '\0';
    st = HTTPSIG_OK;
out:
    httpsig_sf_dict_clear(&in);
    httpsig_sf_dict_clear(&sig);
    free(base.p);
    return st;
}

/* ---- signing ---- */

static void add_str_param(struct sb *b, const char *key, const char *val)
{
    if (!val)
        return;
    struct httpsig_sf_bare v = {.type = HTTPSIG_SF_STRING, .str = val, .len = strlen(val)};
    sb_ch(b, ';');
    sb_str(b, key);
    sb_ch(b, '=');
    ser_bare(b, &v);
}

int httpsig_sign(const struct httpsig_msg *m, const char *label, const struct jwk *key,
                 const struct httpsig_sign_params *p, char **sig_input, char **signature,
                 char **err)
{
    int ret = -1;
    struct sb in = {0}, base = {0}, sig = {0};
    struct httpsig_sf_dict d;
    memset(&d, 0, sizeof(d));
    char reason[HTTPSIG_REASON_MAX] = "";
    const char *why = "";

    /* Written as text and parsed back, so that what is signed is exactly what a verifier will
     * rebuild from the field, and a label or name that does not serialise is refused here. */
    sb_str(&in, label);
    sb_str(&in, "=(");
    for (size_t i = 0; i < p->n_components; i++) {
        struct httpsig_sf_bare v = {
            .type = HTTPSIG_SF_STRING, .str = p->components[i], .len = strlen(p->components[i])};
        if (i)
            sb_ch(&in, ' ');
        ser_bare(&in, &v);
    }
    sb_ch(&in, ')');
    char num[32];
    if (p->created >= 0) {
        snprintf(num, sizeof(num), ";created=%" PRId64, p->created);
        sb_str(&in, num);
    }
    if (p->expires >= 0) {
        snprintf(num, sizeof(num), ";expires=%" PRId64, p->expires);
        sb_str(&in, num);
    }
    add_str_param(&in, "nonce", p->nonce);
    add_str_param(&in, "alg", p->alg);
    add_str_param(&in, "keyid", p->keyid);
    add_str_param(&in, "tag", p->tag);
    if (httpsig_sf_parse_dict(in.p, in.len, &d, &why) != 0 || d.n != 1 ||
        check_input_shape(&d, reason, sizeof(reason)) != 0) {
        *err = xasprintf("cannot write Signature-Input: %s", reason[0] ? reason : why);
        goto out;
    }
    if (build_base(m, &d, &d.m[0], &base, reason, sizeof(reason)) != 0) {
        *err = xstrdup(reason);
        goto out;
    }
    unsigned char raw[JWS_SIG_LEN];
    if (jws_sign_raw(key, (const unsigned char *)base.p, base.len, raw) != 0) {
        *err = xstrdup("the key cannot sign");
        goto out;
    }
    sb_str(&sig, label);
    sb_str(&sig, "=:");
    sb_b64(&sig, raw, sizeof(raw));
    sb_ch(&sig, ':');
    *sig_input = in.p;
    *signature = sig.p;
    in.p = sig.p = NULL;
    ret = 0;
out:
    httpsig_sf_dict_clear(&d);
    free(in.p);
    free(base.p);
    free(sig.p);
    return ret;
}

void httpsig_nonce(char out[33])
{
    unsigned char raw[24];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        abort(); /* no randomness: nothing safe to do */
    b64url_encode(raw, sizeof(raw), out);
}

/* ---- RFC 9530 Content-Digest ---- */

static const char *const digest_names[] = {"sha-256", "sha-512"};
static const size_t digest_lens[] = {32, 64};

static const EVP_MD *digest_md(int i)
{
    return i == HTTPSIG_SHA256 ? EVP_sha256() : EVP_sha512();
}

int httpsig_digest_begin(struct httpsig_digest *d, const char *value, size_t len, const char **why)
{
    struct httpsig_sf_dict dict;
    memset(d, 0, sizeof(*d));
    if (httpsig_sf_parse_dict(value, len, &dict, why) != 0)
        return -1;
    int ret = -1;
    for (size_t i = 0; i < dict.n; i++) {
        const struct httpsig_sf_member *mem = &dict.m[i];
        if (mem->inner || mem->item.v.type != HTTPSIG_SF_BYTES) {
            *why = "a Content-Digest member is not a byte sequence";
            goto out;
        }
        int a = name_index(mem->key, digest_names, ARRAY_LEN(digest_names));
        if (a < 0)
            continue;
        if (mem->item.v.len != digest_lens[a]) {
            *why = "a Content-Digest digest has the wrong length for its algorithm";
            goto out;
        }
        memcpy(d->want[a], mem->item.v.str, digest_lens[a]);
        d->ctx[a] = EVP_MD_CTX_new();
        if (!d->ctx[a] || EVP_DigestInit_ex(d->ctx[a], digest_md(a), NULL) != 1)
            abort(); /* allocation failure */
    }
    if (!d->ctx[0] && !d->ctx[1]) {
        *why = "Content-Digest has neither sha-256 nor sha-512";
        goto out;
    }
    ret = 0;
out:
    httpsig_sf_dict_clear(&dict);
    if (ret != 0)
        httpsig_digest_clear(d);
    return ret;
}

void httpsig_digest_update(struct httpsig_digest *d, const void *data, size_t len)
{
    for (int a = 0; a < 2; a++)
        if (d->ctx[a] && EVP_DigestUpdate(d->ctx[a], data, len) != 1)
            abort(); /* cannot fail with a software digest */
}

int httpsig_digest_end(struct httpsig_digest *d)
{
    int ret = d->ctx[0] || d->ctx[1] ? 0 : -1;
    for (int a = 0; a < 2; a++) {
        unsigned char got[64];
        if (!d->ctx[a])
            continue;
        if (EVP_DigestFinal_ex(d->ctx[a], got, NULL) != 1 ||
            !ct_equal(got, d->want[a], digest_lens[a]))
            ret = -1;
    }
    httpsig_digest_clear(d);
    return ret;
}

void httpsig_digest_clear(struct httpsig_digest *d)
{
    for (int a = 0; a < 2; a++) {
        EVP_MD_CTX_free(d->ctx[a]);
        d->ctx[a] = NULL;
    }
}

char *httpsig_digest_value(enum httpsig_digest_alg alg, const void *body, size_t len)
{
    unsigned char md[64];
    if (alg == HTTPSIG_SHA256)
        sha256(body, len, md);
    else if (EVP_Digest(body, len, md, NULL, EVP_sha512(), NULL) != 1)
        abort();
    struct sb b = {0};
    sb_str(&b, digest_names[alg]);
    sb_str(&b, "=:");
    sb_b64(&b, md, digest_lens[alg]);
    sb_ch(&b, ':');
    return b.p;
}

/* ---- RFC 7638 ---- */

static void coord_b64(const EVP_PKEY *pkey, const char *param, char out[B64URL_ENC_LEN(32)])
{
    BIGNUM *bn = NULL;
    unsigned char buf[32];
    if (!EVP_PKEY_get_bn_param(pkey, param, &bn) || BN_bn2binpad(bn, buf, 32) != 32)
        abort(); /* a parsed P-256 public key always has both coordinates */
    BN_free(bn);
    b64url_encode(buf, 32, out);
}

void httpsig_thumbprint(const struct jwk *k, char out[HTTPSIG_THUMBPRINT_LEN + 1])
{
    /* RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace. All
     * values are base64url or fixed names, so nothing needs JSON escaping. */
    char json[160], x[B64URL_ENC_LEN(32)], y[B64URL_ENC_LEN(32)];
    if (k->alg == JWK_ES256) {
        coord_b64(k->pkey, OSSL_PKEY_PARAM_EC_PUB_X, x);
        coord_b64(k->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, y);
        snprintf(json, sizeof(json), "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                 x, y);
    } else {
        unsigned char raw[32];
        size_t len = sizeof(raw);
        if (!EVP_PKEY_get_raw_public_key(k->pkey, raw, &len) || len != 32)
            abort();
        b64url_encode(raw, 32, x);
        snprintf(json, sizeof(json), "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"%s\"}", x);
    }
    unsigned char md[32];
    sha256(json, strlen(json), md);
    b64url_encode(md, sizeof(md), out);
}

int httpsig_jwk_from_cnf(const json_t *jwk, struct jwk *out, char **err)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(jwk)) {
        *err = xstrdup("not an object");
        return -1;
    }
    /* jwk_from_json() wants a kid, which a cnf key need not have: lend it one, then replace
     * it with the thumbprint, which is what a signature's keyid names. */
    json_t *copy = json_copy((json_t *)jwk);
    sjson_set(copy, "kid", json_string("cnf"));
    int rc = jwk_from_json(copy, out, err);
    json_decref(copy);
    if (rc != 0)
        return -1;
    httpsig_thumbprint(out, out->kid);
    return 0;
}
