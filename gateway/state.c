/*
 * state: hash tables of used jtis, revocations and rate buckets behind one mutex.
 *
 * Nothing here grows without bound, and nothing is ever swept in one go under the lock:
 * - a used jti is kept until its mandate has been expired for clock_skew_s + STATE_GRACE_S (no
 *   verification can then accept it); tables grow by incremental rehashing; jtis sit in an expiry
 * wheel of one list per second, and each admission frees at most PRUNE_BUDGET of them, so pruning
 * costs O(expired), never O(table);
 * - a rate bucket idle long enough to have refilled completely is identical to a new one: buckets
 *   are kept in least-recently-used order and dropped from the cold end;
 * - ledger periods that have ended are dropped by the ledger (ledger_prune).
 * The lock covers lookups and pointer moves, never the allocator or a page fault: a slot is made
 * (allocated, keyed, hashed) before the lock and freed after it if it was not needed; what a holder
 * unlinks (expired jtis, idle buckets, past ledger periods, a migrated array) is freed after the
 * unlock; a table half full has its next array allocated and its pages touched outside the lock,
 * then put in place under it (struct after). A hold much longer than a few µs is the holder being
 * descheduled, not work (bench/prune.sh measures both).
 * Clocks: jti expiry is Unix seconds (`unix_s`, the clock of exp claims); rate buckets use the
 * monotonic clock (`mono_us`); the two are never compared with each other.
 */
#include "gateway/state.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/sjson.h"

#define WHEEL_SLOTS  4096 /* seconds; a jti expiring further ahead waits for later turns */
#define PRUNE_BUDGET 64   /* slots examined per admission at most: bounds the lock hold */

static const uint64_t lock_bounds[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000};

/* A chained hash table from string keys to a small fixed record. */
struct slot {
    struct slot *next;          /* hash chain */
    struct slot *lnext, *lprev; /* jtis: expiry wheel list (lnext only); buckets: LRU order */
    uint64_t hash;
    int64_t a, b; /* jti: used, exp; bucket: tokens (×1e6), last µs; revocation: unused */
    char key[];
};

/* A slot made before the lock for a key that may need one; the table takes it (s = NULL) or the
 * maker frees it after the unlock. */
struct made {
    struct slot *s;
    size_t len; /* of the key, its inner NUL included */
};

/* Growing rehashes incrementally (as redis does): the old array is moved MIGRATE_STEP chains per
 * insert, so no admission ever rehashes a whole table under the lock (7 ms at 100k entries). */
#define MIGRATE_STEP 64

struct table {
    struct slot **v;
    size_t cap, n;
    struct slot **old; /* being moved into v; NULL when not growing */
    size_t old_cap, moved;
    struct slot **spare; /* the next array (2 × cap, its pages touched), made outside the lock */
    bool spare_asked;    /* a thread is making it */
};

/* What a lock holder leaves for after the unlock (after_run), so that no allocator call and no
 * page fault lengthens a hold. */
struct after {
    struct slot *dead;           /* unlinked slots, chained by next */
    struct slot **arrays;        /* migrated arrays, each linking the next by its first element */
    struct ledger_entry *ledger; /* unlinked ledger periods */
    struct table *spare_for;     /* make this table's spare array, of spare_cap entries */
    size_t spare_cap;
};

/* Jtis by the second their mandate expires (exp mod WHEEL_SLOTS). */
struct wheel {
    struct slot *v[WHEEL_SLOTS];
    struct slot *deferred; /* met in the current list but expiring on a later turn */
    int64_t done_unix_s;   /* every second before this has been pruned; 0: not started */
};

struct state {
    pthread_mutex_t mu;
    struct table jtis, revoked, buckets;
    struct wheel wheel;
    struct slot *lru_head, *lru_tail; /* rate buckets, least recently used first */
    struct ledger *ledger;
    double rate, burst;
    int64_t retain_s; /* a jti is kept until exp + retain_s */
    int64_t horizon;  /* jtis of mandates expiring before it are not known: refused (unix s) */
    bool node_only;   /* uses, carts and spend are kept elsewhere (state_set_node_only) */
    struct hist lock_us;
    _Atomic uint64_t lock_max_us;
};

static const char *const kind_names[] = {"jti", "agent", "principal", "kid"};

const char *revoke_kind_name(enum revoke_kind k)
{
    return kind_names[k];
}

int revoke_kind_parse(const char *s, enum revoke_kind *out)
{
    int i = name_index(s, kind_names, ARRAY_LEN(kind_names));
    if (i < 0)
        return -1;
    *out = (enum revoke_kind)i;
    return 0;
}

static uint64_t fnv(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 1099511628211ULL;
    return h;
}

/* Keys join two strings with a NUL so "a"+"bc" and "ab"+"c" differ. For lookups; a key that may
 * be inserted is built in its slot by made_new. */
static size_t make_key(char *buf, size_t cap, const char *x, const char *y)
{
    size_t xl = strlen(x), yl = strlen(y);
    if (xl + yl + 2 > cap)
        abort(); /* callers bound both by MANDATE_ID_MAX */
    memcpy(buf, x, xl + 1);
    memcpy(buf + xl + 1, y, yl + 1);
    return xl + yl + 1;
}

/* A slot keyed x NUL y and hashed, made before the lock. */
static struct made made_new(const char *x, const char *y)
{
    size_t xl = strlen(x), yl = strlen(y);
    struct slot *s = xcalloc(1, sizeof(*s) + xl + yl + 2);
    memcpy(s->key, x, xl + 1);
    memcpy(s->key + xl + 1, y, yl + 1);
    s->hash = fnv(s->key, xl + yl + 1);
    return (struct made){s, xl + yl + 1};
}

static struct slot *find_in(struct slot **v, size_t cap, const char *key, size_t len, uint64_t h)
{
    for (struct slot *s = v[h & (cap - 1)]; s; s = s->next)
        if (s->hash == h && memcmp(s->key, key, len + 1) == 0)
            return s;
    return NULL;
}

static struct slot *find(struct table *t, const char *key, size_t len, uint64_t h)
{
    struct slot *s = find_in(t->v, t->cap, key, len, h);
    return s || !t->old ? s : find_in(t->old, t->old_cap, key, len, h);
}

/* The slot with mk's key, if the table has one. */
static struct slot *find_made(struct table *t, const struct made *mk)
{
    return find(t, mk->s->key, mk->len, mk->s->hash);
}

/* Leave a migrated (all NULL) array for after_run, or free it now when af is NULL (state_free). */
static void drop_array(struct after *af, struct slot **v)
{
    if (!af) {
        free(v);
        return;
    }
    v[0] = (struct slot *)(void *)af->arrays;
    af->arrays = v;
}

/* Move up to steps chains of the old array into the new one. */
static void migrate(struct table *t, size_t steps, struct after *af)
{
    for (; t->old && steps > 0; steps--) {
        for (struct slot *s = t->old[t->moved], *next; s; s = next) {
            next = s->next;
            s->next = t->v[s->hash & (t->cap - 1)];
            t->v[s->hash & (t->cap - 1)] = s;
        }
        t->old[t->moved] = NULL;
        if (++t->moved == t->old_cap) {
            drop_array(af, t->old);
            t->old = NULL;
        }
    }
}

/* Double the array: the spare one if it was made in time, else allocated here, under the lock. */
static void grow(struct table *t, struct after *af)
{
    migrate(t, SIZE_MAX, af); /* a previous growth is long finished in practice */
    t->old = t->v;
    t->old_cap = t->cap;
    t->moved = 0;
    t->cap *= 2;
    t->v = t->spare ? t->spare : xcalloc(t->cap, sizeof(*t->v));
    t->spare = NULL;
}

/* Half full: ask for the next array (one thread at a time), due at three quarters. */
static void ask_spare(struct table *t, struct after *af)
{
    if (t->spare || t->spare_asked || af->spare_for || t->n < t->cap / 2)
        return;
    t->spare_asked = true;
    af->spare_for = t;
    af->spare_cap = t->cap * 2;
}

/* Add mk's slot (its key is not in t); the table takes it. */
static struct slot *add(struct table *t, struct made *mk, struct after *af)
{
    if (t->n + 1 > t->cap * 3 / 4)
        grow(t, af);
    migrate(t, MIGRATE_STEP, af);
    struct slot *s = mk->s;
    mk->s = NULL;
    s->next = t->v[s->hash & (t->cap - 1)];
    t->v[s->hash & (t->cap - 1)] = s;
    t->n++;
    ask_spare(t, af);
    return s;
}

/* Tables start with an array, so that even the first insert does not allocate under the lock. */
static void table_init(struct table *t)
{
    t->cap = 64;
    t->v = xcalloc(t->cap, sizeof(*t->v));
}

static void table_clear(struct table *t)
{
    migrate(t, SIZE_MAX, NULL);
    for (size_t i = 0; i < t->cap; i++)
        for (struct slot *s = t->v[i], *next; s; s = next) {
            next = s->next;
            free(s);
        }
    free(t->v);
    free(t->spare);
}

/* Unlink s from t's chain (it is there), to be freed after the unlock. */
static void table_remove(struct table *t, struct slot *s, struct after *af)
{
    struct slot **pp = &t->v[s->hash & (t->cap - 1)];
    while (*pp && *pp != s)
        pp = &(*pp)->next;
    if (!*pp) /* not moved yet: still in the old array */
        for (pp = &t->old[s->hash & (t->old_cap - 1)]; *pp != s;)
            pp = &(*pp)->next;
    *pp = s->next;
    t->n--;
    s->next = af->dead;
    af->dead = s;
}

static void wheel_add(struct wheel *w, struct slot *s)
{
    struct slot **list = &w->v[(uint64_t)s->b % WHEEL_SLOTS];
    s->lnext = *list;
    *list = s;
}

/* Unlink jtis whose exp is before unix_s - retain_s, at most PRUNE_BUDGET examined. */
static void prune_jtis(struct state *st, int64_t now_unix_s, struct after *af)
{
    struct wheel *w = &st->wheel;
    int64_t horizon = now_unix_s - st->retain_s;
    if (!w->done_unix_s || horizon - w->done_unix_s > WHEEL_SLOTS)
        w->done_unix_s = horizon - WHEEL_SLOTS; /* one turn visits every list */
    int budget = PRUNE_BUDGET;
    while (w->done_unix_s < horizon && budget > 0) {
        struct slot **list = &w->v[(uint64_t)w->done_unix_s % WHEEL_SLOTS];
        while (*list && budget-- > 0) {
            struct slot *s = *list;
            *list = s->lnext;
            if (s->b < horizon) {
                table_remove(&st->jtis, s, af);
            } else {
                s->lnext = w->deferred;
                w->deferred = s;
            }
        }
        if (*list)
            return; /* out of budget: the next admission goes on here */
        *list = w->deferred;
        w->deferred = NULL;
        w->done_unix_s++;
    }
}

static void lru_unlink(struct state *st, struct slot *b)
{
    *(b->lprev ? &b->lprev->lnext : &st->lru_head) = b->lnext;
    *(b->lnext ? &b->lnext->lprev : &st->lru_tail) = b->lprev;
}

static void lru_append(struct state *st, struct slot *b)
{
    b->lnext = NULL;
    b->lprev = st->lru_tail;
    *(st->lru_tail ? &st->lru_tail->lnext : &st->lru_head) = b;
    st->lru_tail = b;
}

/* Drop rate buckets idle long enough to be full again (they equal a new bucket). */
static void prune_buckets(struct state *st, int64_t now_mono_us, struct after *af)
{
    int64_t refill_us = (int64_t)(st->burst / st->rate * 1e6);
    for (int budget = PRUNE_BUDGET; budget > 0 && st->lru_head; budget--) {
        struct slot *b = st->lru_head;
        if (now_mono_us - b->b < refill_us)
            return;
        lru_unlink(st, b);
        table_remove(&st->buckets, b, af);
    }
}

/* Allocate a table's next array and touch its pages here, where page faults hold no one up, then
 * put it in place unless the table grew meanwhile (it then allocated one under the lock). */
static void make_spare(struct state *st, struct table *t, size_t cap)
{
    struct slot **v = xcalloc(cap, sizeof(*v));
    for (size_t i = 0; i < cap; i += 4096 / sizeof(*v))
        ((struct slot *volatile *)v)[i] = NULL;
    pthread_mutex_lock(&st->mu);
    bool fits = t->cap * 2 == cap;
    if (fits)
        t->spare = v;
    t->spare_asked = false;
    pthread_mutex_unlock(&st->mu);
    if (!fits)
        free(v);
}

/* After the unlock: free what the holder unlinked, make the spare array it asked for. */
static void after_run(struct state *st, struct after *af)
{
    for (struct slot *s = af->dead, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    for (struct slot **v = af->arrays, **next; v; v = next) {
        next = (struct slot **)(void *)v[0];
        free(v);
    }
    ledger_entries_free(af->ledger);
    if (af->spare_for)
        make_spare(st, af->spare_for, af->spare_cap);
}

struct state *state_new(double rate, double burst, int64_t clock_skew_s)
{
    struct state *st = xcalloc(1, sizeof(*st));
    pthread_mutex_init(&st->mu, NULL);
    table_init(&st->jtis);
    table_init(&st->revoked);
    table_init(&st->buckets);
    st->rate = rate;
    st->burst = burst;
    st->retain_s = clock_skew_s + STATE_GRACE_S;
    st->horizon = INT64_MIN;
    hist_init(&st->lock_us, lock_bounds, ARRAY_LEN(lock_bounds));
    st->ledger = ledger_new();
    return st;
}

int64_t state_retain_s(const struct state *st)
{
    return st->retain_s;
}

void state_set_node_only(struct state *st)
{
    st->node_only = true;
}

void state_free(struct state *st)
{
    if (!st)
        return;
    table_clear(&st->jtis);
    table_clear(&st->revoked);
    table_clear(&st->buckets);
    ledger_free(st->ledger);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

void state_set_rate(struct state *st, double rate, double burst)
{
    pthread_mutex_lock(&st->mu);
    st->rate = rate;
    st->burst = burst;
    pthread_mutex_unlock(&st->mu);
}

/* The jti slot with mk's key, added with expiry exp if it is new. */
static struct slot *jti_slot(struct state *st, struct made *mk, int64_t exp, struct after *af)
{
    struct slot *j = find_made(&st->jtis, mk);
    if (!j) {
        j = add(&st->jtis, mk, af);
        j->b = exp;
        wheel_add(&st->wheel, j);
    }
    return j;
}

void state_reserve_jtis(struct state *st, size_t n)
{
    struct table *t = &st->jtis;
    pthread_mutex_lock(&st->mu);
    if (t->n == 0 && !t->old && !t->spare && t->cap * 3 / 4 < n) {
        while (t->cap * 3 / 4 < n)
            t->cap *= 2;
        free(t->v);
        t->v = xcalloc(t->cap, sizeof(*t->v));
    }
    pthread_mutex_unlock(&st->mu);
}

void state_set_horizon(struct state *st, int64_t horizon)
{
    st->horizon = horizon;
}

void state_load_jti(struct state *st, const char *iss, const char *jti, int64_t exp, int64_t used)
{
    struct made mk = made_new(iss, jti);
    struct after af = {0};
    pthread_mutex_lock(&st->mu);
    struct slot *s = jti_slot(st, &mk, exp, &af);
    if (used > s->a)
        s->a = used;
    pthread_mutex_unlock(&st->mu);
    after_run(st, &af);
    free(mk.s);
}

int state_revoke(struct state *st, enum revoke_kind kind, const char *value)
{
    if (strlen(value) > MANDATE_ID_MAX)
        return 0; /* cannot match any mandate */
    struct made mk = made_new(kind_names[kind], value);
    struct after af = {0};
    pthread_mutex_lock(&st->mu);
    int added = !find_made(&st->revoked, &mk);
    if (added)
        add(&st->revoked, &mk, &af);
    pthread_mutex_unlock(&st->mu);
    after_run(st, &af);
    free(mk.s);
    return added;
}

json_t *state_revocations(struct state *st)
{
    json_t *arr = json_array();
    struct after af = {0};
    pthread_mutex_lock(&st->mu);
    migrate(&st->revoked, SIZE_MAX, &af); /* so that one array holds them all */
    for (size_t i = 0; i < st->revoked.cap; i++)
        for (struct slot *s = st->revoked.v[i]; s; s = s->next) {
            const char *value = s->key + strlen(s->key) + 1;
            sjson_append(arr, json_pack("{ss}", s->key, value));
        }
    pthread_mutex_unlock(&st->mu);
    after_run(st, &af);
    return arr;
}

static int revoked_locked(struct state *st, enum revoke_kind kind, const char *value)
{
    char key[2 * MANDATE_ID_MAX + 4];
    size_t len = make_key(key, sizeof(key), kind_names[kind], value);
    return find(&st->revoked, key, len, fnv(key, len)) != NULL;
}

/* Is the mandate, its agent, its principal or its key revoked? Also for the cart (SPEC §2.3: a
 * kid of any issuer, and the cart's jti): agent and principal are empty in a cart. */
static int any_revoked_locked(struct state *st, const struct mandate *m)
{
    return revoked_locked(st, REVOKE_JTI, m->jti) || revoked_locked(st, REVOKE_KID, m->kid) ||
           (m->agent[0] && revoked_locked(st, REVOKE_AGENT, m->agent)) ||
           (m->sub[0] && revoked_locked(st, REVOKE_PRINCIPAL, m->sub));
}

/* Rate bucket of an agent (mk's key): take one token, or say how long until there is one. */
static bool take_token(struct state *st, struct made *mk, int64_t now_mono_us,
                       int64_t *retry_after_s, struct after *af)
{
    struct slot *b = find_made(&st->buckets, mk);
    if (!b) {
        b = add(&st->buckets, mk, af);
        b->a = (int64_t)(st->burst * 1e6);
        b->b = now_mono_us;
    } else {
        lru_unlink(st, b);
    }
    lru_append(st, b);
    double tokens = (double)b->a / 1e6 + (double)(now_mono_us - b->b) / 1e6 * st->rate;
    if (tokens > st->burst)
        tokens = st->burst;
    b->b = now_mono_us;
    if (tokens < 1.0) {
        b->a = (int64_t)(tokens * 1e6);
        *retry_after_s = (int64_t)ceil((1.0 - tokens) / st->rate);
        return false;
    }
    b->a = (int64_t)((tokens - 1.0) * 1e6);
    return true;
}

int state_nonce(struct state *st, const char *keyid, const char *nonce, int64_t until_unix_s,
                int64_t now_unix_s)
{
    char scope[MANDATE_ID_MAX + 1];
    if (snprintf(scope, sizeof(scope), "nonce:%s", keyid) >= (int)sizeof(scope) ||
        strlen(nonce) > MANDATE_ID_MAX)
        return 0; /* never the case for a verified signature: refuse rather than truncate */
    struct made mk = made_new(scope, nonce);
    struct after af = {0};
    pthread_mutex_lock(&st->mu);
    int fresh = ++jti_slot(st, &mk, until_unix_s, &af)->a == 1;
    prune_jtis(st, now_unix_s, &af);
    pthread_mutex_unlock(&st->mu);
    after_run(st, &af);
    free(mk.s);
    return fresh;
}

static int64_t uses_of(struct state *st, const struct made *mk)
{
    struct slot *j = find_made(&st->jtis, mk);
    return j ? j->a : 0;
}

enum code state_admit(struct state *st, struct admit *a, int64_t now_mono_us, int64_t now_unix_s)
{
    const struct mandate *m = a->m;
    bool local = !st->node_only, paid = local && a->cart;
    struct made jti = local ? made_new(m->iss, m->jti) : (struct made){0};
    struct made cart = paid ? made_new(a->cart->iss, a->cart->jti) : (struct made){0};
    struct made bucket = made_new(m->iss, m->agent);
    struct ledger_entry *spend = paid ? ledger_entry_new(a->spend_key) : NULL;
    struct after af = {0};
    enum code rc = CODE_OK;

    pthread_mutex_lock(&st->mu);
    int64_t locked_us = mono_us();
    if (st->revoked.n &&
        (any_revoked_locked(st, m) || (a->cart && any_revoked_locked(st, a->cart))))
        rc = CODE_MANDATE_REVOKED;
    else if (local && m->exp < st->horizon)
        rc = CODE_MANDATE_EXPIRED; /* its uses may be among those the snapshot dropped */
    else if (paid && a->cart->exp < st->horizon)
        rc = CODE_CART_EXPIRED;
    else if (local && uses_of(st, &jti) >= m->uses)
        rc = CODE_MANDATE_USED;
    else if (paid && uses_of(st, &cart) >= 1)
        rc = CODE_CART_USED;
    else if (!take_token(st, &bucket, now_mono_us, &a->retry_after_s, &af))
        rc = CODE_RATE_LIMITED;
    else if (paid && ledger_reserve_made(st->ledger, &spend, a->amount, a->cap) != 0)
        rc = CODE_SPEND_CAP_EXCEEDED;
    if (rc == CODE_OK && local) {
        a->used = ++jti_slot(st, &jti, m->exp, &af)->a;
        if (paid)
            jti_slot(st, &cart, a->cart->exp, &af)->a++;
    }
    prune_jtis(st, now_unix_s, &af);
    prune_buckets(st, now_mono_us, &af);
    ledger_prune(st->ledger, now_unix_s, PRUNE_BUDGET, &af.ledger);
    uint64_t held_us = (uint64_t)(mono_us() - locked_us);
    pthread_mutex_unlock(&st->mu);
    after_run(st, &af);
    free(jti.s);
    free(cart.s);
    free(bucket.s);
    ledger_entries_free(spend);
    hist_observe(&st->lock_us, held_us);
    uint64_t max = atomic_load_explicit(&st->lock_max_us, memory_order_relaxed);
    while (held_us > max && !atomic_compare_exchange_weak(&st->lock_max_us, &max, held_us))
        ;
    return rc;
}

static void unuse(struct state *st, const char *iss, const char *jti)
{
    char key[2 * MANDATE_ID_MAX + 4];
    size_t len = make_key(key, sizeof(key), iss, jti);
    struct slot *j = find(&st->jtis, key, len, fnv(key, len));
    if (j && j->a > 0)
        j->a--;
}

void state_undo(struct state *st, const struct admit *a)
{
    pthread_mutex_lock(&st->mu);
    unuse(st, a->m->iss, a->m->jti);
    if (a->cart) {
        unuse(st, a->cart->iss, a->cart->jti);
        ledger_release(st->ledger, a->spend_key, a->amount);
    }
    pthread_mutex_unlock(&st->mu);
}

void state_release(struct state *st, const char *spend_key, int64_t amount)
{
    pthread_mutex_lock(&st->mu);
    ledger_release(st->ledger, spend_key, amount);
    pthread_mutex_unlock(&st->mu);
}

void state_load_spend(struct state *st, const char *key, int64_t amount)
{
    pthread_mutex_lock(&st->mu);
    ledger_load(st->ledger, key, amount);
    pthread_mutex_unlock(&st->mu);
}

void state_counts(struct state *st, struct state_counts *out)
{
    pthread_mutex_lock(&st->mu);
    out->jtis = st->jtis.n;
    out->buckets = st->buckets.n;
    out->revocations = st->revoked.n;
    out->ledger = ledger_size(st->ledger);
    pthread_mutex_unlock(&st->mu);
    out->lock_us = &st->lock_us;
    out->lock_max_us = atomic_load(&st->lock_max_us);
}

void state_spend_row(void *arg, const char *key, int64_t spent)
{
    const char *first = strchr(key, '|'), *period = strrchr(key, '|');
    const char *cur = period - 1;
    while (cur > first && *cur != '|')
        cur--;
    char *iss = xstrndup(key, (size_t)(first - key));
    char *currency = xstrndup(cur + 1, (size_t)(period - cur - 1));
    json_t *row = json_pack("{ss ss ss s{sI ss}}", "issuer", iss, "currency", currency, "period",
                            period + 1, "spent", "value", (json_int_t)spent, "currency", currency);
    if (row)
        json_array_append_new(arg, row);
    free(iss);
    free(currency);
}

json_t *state_spend(struct state *st, const char *principal, int64_t now_unix_s)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&st->mu);
    ledger_each_principal(st->ledger, principal, now_unix_s, state_spend_row, arr);
    pthread_mutex_unlock(&st->mu);
    return arr;
}
