/*
 * flood: one entry per (client address, UTC second) that saw a denial, in a hash table and in a
 * list in order of creation, so that a flush pops finished seconds from the front: O(finished),
 * never a scan of the table.
 */
#include "gateway/flood.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define FLOOD_BUCKETS 16384 /* a power of two */

struct entry {
    struct entry *next;  /* hash chain */
    struct entry *later; /* creation order */
    int64_t individual;  /* written one by one this second */
    struct flood_summary s;
};

struct flood {
    pthread_mutex_t mu;
    struct entry *v[FLOOD_BUCKETS];
    struct entry *first, *last;
    size_t n;
    int64_t per_s;
};

struct flood *flood_new(int64_t per_s)
{
    struct flood *f = xcalloc(1, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    f->per_s = per_s;
    return f;
}

void flood_free(struct flood *f)
{
    if (!f)
        return;
    for (struct entry *e = f->first, *next; e; e = next) {
        next = e->later;
        free(e);
    }
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void flood_set_rate(struct flood *f, int64_t per_s)
{
    pthread_mutex_lock(&f->mu);
    f->per_s = per_s;
    pthread_mutex_unlock(&f->mu);
}

static size_t bucket(const char *client, int64_t unix_s)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)unix_s;
    for (const char *p = client; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h & (FLOOD_BUCKETS - 1);
}

static struct entry *find(struct flood *f, const char *whole, int64_t unix_s, bool create)
{
    /* Hashed and compared as stored: an entry is found again (and unlinked) by its copy. */
    char client[FLOOD_ADDR_MAX];
    snprintf(client, sizeof(client), "%s", whole);
    struct entry **b = &f->v[bucket(client, unix_s)];
    for (struct entry *e = *b; e; e = e->next)
        if (e->s.unix_s == unix_s && strcmp(e->s.client, client) == 0)
            return e;
    if (!create)
        return NULL;
    struct entry *e = xcalloc(1, sizeof(*e));
    snprintf(e->s.client, sizeof(e->s.client), "%s", client);
    e->s.unix_s = unix_s;
    e->next = *b;
    *b = e;
    *(f->last ? &f->last->later : &f->first) = e;
    f->last = e;
    f->n++;
    return e;
}

bool flood_denial(struct flood *f, const char *client, enum code code, int64_t now_unix_s,
                  bool summarise_all)
{
    pthread_mutex_lock(&f->mu);
    struct entry *e = find(f, client, now_unix_s, false);
    if (!e)
        e = find(f, f->n < FLOOD_MAX_CLIENTS ? client : "other", now_unix_s, true);
    bool individual = !summarise_all && e->individual < f->per_s;
    if (individual) {
        e->individual++;
    } else {
        e->s.count++;
        e->s.codes[code]++;
    }
    pthread_mutex_unlock(&f->mu);
    return individual;
}

static void unlink_first(struct flood *f)
{
    struct entry *e = f->first;
    struct entry **pp = &f->v[bucket(e->s.client, e->s.unix_s)];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    f->first = e->later;
    if (!f->first)
        f->last = NULL;
    f->n--;
}

void flood_flush(struct flood *f, int64_t now_unix_s,
                 void (*emit)(const struct flood_summary *s, void *arg), void *arg)
{
    pthread_mutex_lock(&f->mu);
    while (f->first && f->first->s.unix_s < now_unix_s) {
        struct entry *e = f->first;
        unlink_first(f);
        if (e->s.count)
            emit(&e->s, arg);
        free(e);
    }
    pthread_mutex_unlock(&f->mu);
}
