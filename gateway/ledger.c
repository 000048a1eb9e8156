/*
 * ledger: per-period spend totals.
 */
#include "gateway/ledger.h"

#include <stdlib.h>
#include <string.h>

struct entry {
    struct entry *next;
    int64_t spent;
    char key[];
};

#define LEDGER_BUCKETS 1024

struct ledger {
    struct entry *v[LEDGER_BUCKETS];
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
        for (struct entry *e = l->v[i], *n; e; e = n) {
            n = e->next;
            free(e);
        }
    free(l);
}

static struct entry *find(struct ledger *l, const char *key, bool create)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    struct entry **b = &l->v[h % LEDGER_BUCKETS];
    for (struct entry *e = *b; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    if (!create)
        return NULL;
    size_t n = strlen(key);
    struct entry *e = xcalloc(1, sizeof(*e) + n + 1);
    memcpy(e->key, key, n + 1);
    e->next = *b;
    *b = e;
    return e;
}

int64_t ledger_spent(struct ledger *l, const char *key)
{
    struct entry *e = find(l, key, false);
    return e ? e->spent : 0;
}

int ledger_reserve(struct ledger *l, const char *key, int64_t amount, int64_t cap)
{
    struct entry *e = find(l, key, true);
    int64_t sum;
    if (amount < 0 || __builtin_add_overflow(e->spent, amount, &sum) || sum > cap)
        return -1;
    e->spent = sum;
    return 0;
}

void ledger_release(struct ledger *l, const char *key, int64_t amount)
{
    struct entry *e = find(l, key, false);
    if (e)
        e->spent -= amount;
}

void ledger_load(struct ledger *l, const char *key, int64_t amount)
{
    find(l, key, true)->spent += amount;
}
