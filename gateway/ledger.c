/*
 * ledger: per-period spend totals.
 */
#include "gateway/ledger.h"

#include <stdlib.h>
#include <string.h>

struct ledger_entry {
    struct ledger_entry *next;  /* hash chain */
    struct ledger_entry *older; /* ending periods, in order of creation */
    int64_t spent;
    int64_t end_unix_s; /* when its period ends (INT64_MAX: all time) */
    char key[];
};

#define LEDGER_BUCKETS 1024

struct ledger {
    struct ledger_entry *v[LEDGER_BUCKETS];
    struct ledger_entry *oldest, *newest; /* entries whose period ends, first created first */
    size_t n;
};

struct ledger *ledger_new(void)
{
    return xcalloc(1, sizeof(struct ledger));
}

void ledger_free(struct ledger *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < LEDGER_BUCKETS; i++)
        for (struct ledger_entry *e = l->v[i], *n; e; e = n) {
            n = e->next;
            free(e);
        }
    free(l);
}

static struct ledger_entry **chain(struct ledger *l, const char *key)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return &l->v[h % LEDGER_BUCKETS];
}

struct ledger_entry *ledger_entry_new(const char *key)
{
    size_t n = strlen(key);
    struct ledger_entry *e = xcalloc(1, sizeof(*e) + n + 1);
    memcpy(e->key, key, n + 1);
    e->end_unix_s = cap_key_end(key);
    return e;
}

static struct ledger_entry *find(struct ledger *l, const char *key)
{
    for (struct ledger_entry *e = *chain(l, key); e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

/* The entry for (*made)'s key: the one held, or *made, which the ledger then takes. */
static struct ledger_entry *find_or_take(struct ledger *l, struct ledger_entry **made)
{
    struct ledger_entry *e = find(l, (*made)->key);
    if (e)
        return e;
    e = *made;
    *made = NULL;
    struct ledger_entry **b = chain(l, e->key);
    e->next = *b;
    *b = e;
    if (e->end_unix_s != INT64_MAX) {
        *(l->newest ? &l->newest->older : &l->oldest) = e;
        l->newest = e;
    }
    l->n++;
    return e;
}

/* The entry for key, made here if it is new. */
static struct ledger_entry *find_or_make(struct ledger *l, const char *key)
{
    struct ledger_entry *e = find(l, key);
    if (e)
        return e;
    struct ledger_entry *made = ledger_entry_new(key);
    return find_or_take(l, &made);
}

int64_t ledger_spent(struct ledger *l, const char *key)
{
    struct ledger_entry *e = find(l, key);
    return e ? e->spent : 0;
}

static int reserve(struct ledger_entry *e, int64_t amount, int64_t cap)
{
    int64_t sum;
    if (amount < 0 || __builtin_add_overflow(e->spent, amount, &sum) || sum > cap)
        return -1;
    e->spent = sum;
    return 0;
}

int ledger_reserve(struct ledger *l, const char *key, int64_t amount, int64_t cap)
{
    return reserve(find_or_make(l, key), amount, cap);
}

int ledger_reserve_made(struct ledger *l, struct ledger_entry **made, int64_t amount, int64_t cap)
{
    return reserve(find_or_take(l, made), amount, cap);
}

void ledger_release(struct ledger *l, const char *key, int64_t amount)
{
    struct ledger_entry *e = find(l, key);
    if (e)
        e->spent -= amount;
}

void ledger_load(struct ledger *l, const char *key, int64_t amount)
{
    find_or_make(l, key)->spent += amount;
}

void ledger_prune(struct ledger *l, int64_t now_unix_s, int budget, struct ledger_entry **dead)
{
    /* A period ended a day ago takes no more reservations; a late release of one is a no-op. */
    while (l->oldest && l->oldest->end_unix_s + 86400 < now_unix_s && budget-- > 0) {
        struct ledger_entry *e = l->oldest;
        l->oldest = e->older;
        if (!l->oldest)
            l->newest = NULL;
        struct ledger_entry **pp = chain(l, e->key);
        while (*pp != e)
            pp = &(*pp)->next;
        *pp = e->next;
        l->n--;
        e->next = *dead;
        *dead = e;
    }
}

void ledger_entries_free(struct ledger_entry *list)
{
    for (struct ledger_entry *next; list; list = next) {
        next = list->next;
        free(list);
    }
}

size_t ledger_size(const struct ledger *l)
{
    return l->n;
}

/* Does key "issuer|principal|currency|period" name principal? The currency and the period hold
 * no '|', so the principal is what lies between the first '|' and the second-to-last one. */
static bool key_names(const char *key, const char *principal)
{
    const char *first = strchr(key, '|'), *last = strrchr(key, '|');
    if (!first || last == first)
        return false;
    const char *cur = last - 1;
    while (cur > first && *cur != '|')
        cur--;
    if (cur == first)
        return false;
    size_t n = (size_t)(cur - first - 1);
    return strlen(principal) == n && strncmp(first + 1, principal, n) == 0;
}

void ledger_each_principal(struct ledger *l, const char *principal, int64_t now_unix_s,
                           void (*fn)(void *arg, const char *key, int64_t spent), void *arg)
{
    for (size_t i = 0; i < LEDGER_BUCKETS; i++)
        for (struct ledger_entry *e = l->v[i]; e; e = e->next)
            if (e->end_unix_s > now_unix_s && key_names(e->key, principal))
                fn(arg, e->key, e->spent);
}
