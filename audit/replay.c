/*
 * replay: the replay rules over verified entries, for one log or for several merged by time.
 * The state is re-derived in tallies keyed like the gateway's (issuer and jti, merchant and cart
 * id, cap_key()); a rule broken is a finding, and replay goes on counting what was forwarded
 * anyway, so that the merged replay of several logs names every allow that broke a rule. One
 * log stops at its first finding, as verify does.
 */
#include "audit/replay.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/snap.h"
#include "audit/store.h"
#include "core/mandate.h"
#include "core/money.h"
#include "core/sjson.h"

/* Counts by key, each with where it was first counted: jansson's object is the hash table. */
struct tally {
    struct used {
        char *key;
        int64_t count;
        int64_t exp; /* the mandate's (uses and carts) */
        size_t log;  /* where the key was first counted */
        int64_t seq;
        char *cap; /* a reservation's cap_key() */
    } * v;
    size_t n, size;
    json_t *index; /* key → its position in v */
};

/* The uses of mandates ("iss\njti") and carts that entries record: what a gateway's state must
 * know at least. */
struct derived {
    struct tally uses, carts;
};

struct replay {
    struct tally uses, carts, spend, reserved;
    struct derived *own; /* several logs: each log's own uses (its state knows only those) */
    size_t nown;
    int64_t skew_s;
    struct replay_finding *found;
    size_t nfound;
};

static bool str_eq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static struct used *tally_find(const struct tally *t, const char *key)
{
    json_t *at = t->index ? json_object_get(t->index, key) : NULL;
    return at ? &t->v[json_integer_value(at)] : NULL;
}

/* The count of key, created at zero (first counted at log and seq) when it is new. */
static struct used *tally_at(struct tally *t, const char *key, size_t log, int64_t seq)
{
    struct used *u = tally_find(t, key);
    if (u)
        return u;
    if (t->n == t->size)
        t->v = xrealloc(t->v, (t->size = t->size ? 2 * t->size : 64) * sizeof(*t->v));
    if (!t->index)
        t->index = json_object();
    /* The keys are claims of parsed JSON (valid UTF-8) and our own separators: no check. */
    if (json_object_set_new_nocheck(t->index, key, json_integer((json_int_t)t->n)) != 0)
        abort(); /* out of memory */
    t->v[t->n] = (struct used){xstrdup(key), 0, 0, log, seq, NULL};
    return &t->v[t->n++];
}

static void tally_clear(struct tally *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].key);
        free(t->v[i].cap);
    }
    free(t->v);
    json_decref(t->index);
    memset(t, 0, sizeof(*t));
}

static void free_found(struct replay_finding *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(f[i].request_id);
    free(f);
}

static void replay_clear(struct replay *rp)
{
    tally_clear(&rp->uses);
    tally_clear(&rp->carts);
    for (size_t i = 0; i < rp->nown; i++) {
        tally_clear(&rp->own[i].uses);
        tally_clear(&rp->own[i].carts);
    }
    free(rp->own);
    rp->own = NULL;
    rp->nown = 0;
    tally_clear(&rp->spend);
    tally_clear(&rp->reserved);
    free_found(rp->found, rp->nfound);
    rp->found = NULL;
    rp->nfound = 0;
}

static void broke(struct replay *rp, size_t log, const struct verify_step *st, const char *rule,
                  const struct used *first, const char *fmt, ...) PRINTF(6, 7);

/* A rule the allow at st (of log) broke; first: the earlier allow it repeats, or NULL. */
static void broke(struct replay *rp, size_t log, const struct verify_step *st, const char *rule,
                  const struct used *first, const char *fmt, ...)
{
    rp->found = xrealloc(rp->found, (rp->nfound + 1) * sizeof(*rp->found));
    struct replay_finding *f = &rp->found[rp->nfound++];
    const char *id = sjson_str(st->entry, "request_id");
    *f = (struct replay_finding){.log = log,
                                 .seq = st->seq,
                                 .request_id = xstrdup(id ? id : ""),
                                 .rule = rule,
                                 .first_log = first ? first->log : 0,
                                 .first_seq = first ? first->seq : -1};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->detail, sizeof(f->detail), fmt, ap);
    va_end(ap);
}

/* One more use of key in a log's own tally t. */
static void own_use(struct tally *t, const char *key, size_t log, int64_t seq, int64_t exp)
{
    struct used *u = tally_at(t, key, log, seq);
    u->count++;
    u->exp = exp;
}

/* The cart: paid once. The payment: its spend, in its cap period, within its cap; reserved
 * under the request's id until an outcome releases it. */
static void replay_priced(struct replay *rp, size_t log, const struct verify_step *st,
                          const json_t *pay, const json_t *cart)
{
    const char *ciss = sjson_str(cart, "iss"), *cjti = sjson_str(cart, "jti");
    char *ckey = xasprintf("%s\n%s", ciss ? ciss : "", cjti ? cjti : "");
    struct used *paid = tally_at(&rp->carts, ckey, log, st->seq);
    if (sjson_int(cart, "exp", &paid->exp) != 0)
        paid->exp = 0;
    if (rp->own)
        own_use(&rp->own[log].carts, ckey, log, st->seq, paid->exp);
    free(ckey);
    if (++paid->count > 1)
        broke(rp, log, st, "reused cart", paid, "cart %s paid %lld times", cjti ? cjti : "?",
              (long long)paid->count);
    struct money total, cap;
    const char *why, *iss = sjson_str(pay, "iss"), *sub = sjson_str(pay, "sub");
    enum cap_period period;
    json_t *capj = json_object_get(pay, "cap");
    int64_t ts;
    if (!iss || !sub || money_from_json(json_object_get(pay, "total"), false, &total, &why) ||
        money_from_json(capj, true, &cap, &why) ||
        cap_period_parse(sjson_str(capj, "period"), &period) ||
        sjson_int(st->entry, "ts_ms", &ts)) {
        broke(rp, log, st, "malformed allow", NULL, "a priced allow without total or cap");
        return;
    }
    char key[CAP_KEY_MAX];
    cap_key(iss, sub, &cap, period, ts / 1000, key);
    struct used *spent = tally_at(&rp->spend, key, log, st->seq);
    spent->count += total.value;
    if (spent->count > cap.value)
        broke(rp, log, st, "cap exceeded", NULL, "%s: %lld spent, cap %lld", key,
              (long long)spent->count, (long long)cap.value);
    /* Request ids are each gateway's own: keyed by log too. */
    char *rkey = xasprintf("%zu\n%s", log, sjson_str(st->entry, "request_id"));
    struct used *r = tally_at(&rp->reserved, rkey, log, st->seq);
    free(rkey);
    r->count = total.value;
    free(r->cap);
    r->cap = xstrdup(key);
}

/* A released reservation stops counting; committed and unknown ones count on (SPEC §2.1). */
static void replay_outcome(struct replay *rp, size_t log, const json_t *entry)
{
    const char *id = sjson_str(entry, "request_id");
    if (!id || !str_eq(sjson_str(entry, "spend"), "released"))
        return;
    char *rkey = xasprintf("%zu\n%s", log, id);
    struct used *r = tally_find(&rp->reserved, rkey);
    free(rkey);
    if (!r || !r->cap)
        return;
    tally_at(&rp->spend, r->cap, r->log, r->seq)->count -= r->count;
    r->count = 0;
}

/* One entry of log, in replay order: an outcome settles, an allow consumes. */
static void replay_entry(struct replay *rp, size_t log, const struct verify_step *st)
{
    const json_t *entry = st->entry, *m = st->claims[0];
    if (str_eq(sjson_str(entry, "kind"), "outcome"))
        replay_outcome(rp, log, entry);
    if (!m)
        return;
    const char *iss = sjson_str(m, "iss"), *jti = sjson_str(m, "jti");
    int64_t uses = 1, exp = 0, ts = 0;
    if (sjson_int(m, "uses", &uses) != 0)
        uses = 1;
    if (!iss || !jti || sjson_int(m, "exp", &exp) || sjson_int(entry, "ts_ms", &ts)) {
        broke(rp, log, st, "malformed allow", NULL, "an allow without issuer, jti, exp or time");
        return;
    }
    if (exp + rp->skew_s < ts / 1000)
        broke(rp, log, st, "expired mandate", NULL, "allowed %lld s after its mandate expired",
              (long long)(ts / 1000 - exp));
    char *key = xasprintf("%s\n%s", iss, jti);
    struct used *count = tally_at(&rp->uses, key, log, st->seq);
    if (rp->own)
        own_use(&rp->own[log].uses, key, log, st->seq, exp);
    free(key);
    count->exp = exp;
    if (++count->count > uses)
        broke(rp, log, st, "reused jti", count, "jti %s allowed %lld times; it allows %lld", jti,
              (long long)count->count, (long long)uses);
    if (st->claims[1])
        replay_priced(rp, log, st, m, st->claims[1]);
}

/* The second walk's violation (its checks are the first walk's: not expected) into rep. */
static void take_violation(struct verify_report *rep, const struct verify_report *pass)
{
    rep->ok = false;
    rep->bad_seq = pass->bad_seq;
    rep->violation = pass->violation;
    memcpy(rep->detail, pass->detail, sizeof(rep->detail));
}

/* The tally of "iss\njti" in d's uses or carts, or NULL. */
static const struct used *derived(const struct derived *d, const struct snap_use *u)
{
    char *key = xasprintf("%.*s\n%.*s", (int)u->iss_len, u->iss, (int)u->jti_len, u->jti);
    const struct used *found = tally_find(&d->uses, key);
    if (!found)
        found = tally_find(&d->carts, key);
    free(key);
    return found;
}

static void state_finding(struct verify_report *rep, uint64_t seq, const char *fmt, ...)
    PRINTF(3, 4);

static void state_finding(struct verify_report *rep, uint64_t seq, const char *fmt, ...)
{
    rep->ok = false;
    rep->bad_seq = (int64_t)seq;
    rep->violation = "state behind the log";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->detail, sizeof(rep->detail), fmt, ap);
    va_end(ap);
}

/*
 * What a restarted gateway would load (audit/snap.h: the newest snapshot and the uses recorded
 * after it) against the uses the entries say. A jti it knows with fewer uses, or does not know
 * although its mandate expires after the snapshot's horizon (the gateway refuses those before
 * it), could be used again after a restart. More uses than the entries say is no finding: an allow
 * the log refused keeps its use (fails closed). Logs from before the uses column are not checked.
 */
static void check_state(sqlite3 *db, const struct derived *dv, struct verify_report *rep)
{
    if (!store_has_column(db, "uses"))
        return;
    struct snap sn;
    char *err = NULL;
    if (snap_load(db, INT64_MIN, &sn, &err) != 0) {
        state_finding(rep, 0, "the used jtis cannot be read: %s", err);
        free(err);
        return;
    }
    size_t known = 0;
    for (size_t i = 0; i < sn.n && rep->ok; i++) {
        const struct used *d = derived(dv, &sn.v[i]);
        if (d)
            known++;
        if (d && sn.v[i].used < d->count)
            state_finding(rep, sn.base_seq, "jti %.*s: the state says %lld uses, the entries %lld",
                          (int)sn.v[i].jti_len, sn.v[i].jti, (long long)sn.v[i].used,
                          (long long)d->count);
    }
    const struct tally *ts[] = {&dv->uses, &dv->carts};
    for (size_t t = 0; t < 2 && rep->ok && known < ts[0]->n + ts[1]->n; t++)
        for (size_t i = 0; i < ts[t]->n && rep->ok; i++) {
            const struct used *d = &ts[t]->v[i];
            const char *nl = strchr(d->key, '\n');
            struct snap_use u = {.iss = d->key,
                                 .iss_len = (size_t)(nl - d->key),
                                 .jti = nl + 1,
                                 .jti_len = strlen(nl + 1)};
            if (!snap_find(&sn, &u) && d->exp >= sn.horizon)
                state_finding(rep, sn.base_seq,
                              "jti %s: used %lld times by the entries, unknown to the state", u.jti,
                              (long long)d->count);
        }
    snap_free(&sn);
}

int replay_log(sqlite3 *db, const struct verify_opts *o, struct verify_report *rep)
{
    struct verify_walk *w;
    if (verify_walk_open(db, o, rep, &w) != 0)
        return -1;
    /* Replaying a log that is not the gateway's own would only re-derive the forger's story. */
    if (rep->ok) {
        /* The second walk re-reads the mandates the first one checked: counted once. */
        struct verify_report pass = *rep;
        struct replay rp = {.skew_s = o->skew_s};
        struct verify_step st;
        while (pass.ok && rp.nfound == 0 && verify_walk_next(w, &pass, &st))
            if (pass.ok)
                replay_entry(&rp, 0, &st);
        if (!pass.ok) {
            take_violation(rep, &pass);
        } else if (rp.nfound) {
            rep->ok = false;
            rep->bad_seq = rp.found[0].seq;
            rep->violation = rp.found[0].rule;
            memcpy(rep->detail, rp.found[0].detail, sizeof(rep->detail));
        } else {
            check_state(db, &(struct derived){rp.uses, rp.carts}, rep);
        }
        replay_clear(&rp);
    }
    verify_walk_free(w);
    return 0;
}

/* --- several logs ------------------------------------------------------------------------- */

/* The origin line of a checkpoint note (its first line), as a new string. */
static char *note_origin(const char *note)
{
    return xstrndup(note, strcspn(note, "\n"));
}

/* The origin of the log's first stored checkpoint, or NULL when it has none. */
static char *stored_origin(sqlite3 *db)
{
    sqlite3_stmt *s;
    char *origin = NULL;
    if (sqlite3_prepare_v2(db, "SELECT note FROM checkpoints ORDER BY size LIMIT 1", -1, &s,
                           NULL) != SQLITE_OK)
        return NULL; /* no table: verify says what that means */
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
        origin = note_origin((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return origin;
}

/*
 * Each log's options: o's, with the log's own origin and the held notes that name it (each
 * note must name exactly one log's). 0, or -1 with *err.
 */
static int log_opts(const struct verify_opts *o, const struct replay_report *rr,
                    struct verify_opts *opts, char **err)
{
    for (size_t i = 0; i < rr->nlogs; i++) {
        opts[i] = *o;
        opts[i].origin = rr->logs[i].origin;
        opts[i].held = xcalloc(o->nheld + 1, sizeof(char *));
        opts[i].nheld = 0;
    }
    for (size_t h = 0; h < o->nheld; h++) {
        char *origin = note_origin(o->held[h]);
        size_t match = 0, at = 0;
        for (size_t i = 0; i < rr->nlogs; i++)
            if (str_eq(rr->logs[i].origin, origin))
                match++, at = i;
        if (match == 1)
            opts[at].held[opts[at].nheld++] = o->held[h];
        else
            *err = xasprintf("a held checkpoint is for origin \"%.80s\", which %s", origin,
                             match ? "several of the logs have" : "none of the logs has");
        free(origin);
        if (match != 1)
            return -1;
    }
    return 0;
}

/* A log's place in the merge: its walk and the entry it is at. */
struct head {
    struct verify_walk *w;
    struct verify_report pass; /* the second walk's report (verify_walk_next) */
    struct verify_step st;
    bool live;
    int64_t ts;
    const char *label; /* its origin (its path without one) */
};

static void head_next(struct head *h)
{
    h->live = verify_walk_next(h->w, &h->pass, &h->st) && h->pass.ok;
    if (h->live && sjson_int(h->st.entry, "ts_ms", &h->ts) != 0)
        h->ts = 0; /* not for an entry that was verified: every entry has ts_ms */
}

/* Merge order (SPEC §6): ts_ms, then origin, then seq; equal heads keep the order of --db. */
static bool before(const struct head *a, const struct head *b)
{
    if (a->ts != b->ts)
        return a->ts < b->ts;
    int c = strcmp(a->label, b->label);
    return c ? c < 0 : a->st.seq < b->st.seq;
}

/*
 * Replay the intact logs' walks together, into rr; then, with no rule broken, check each log's
 * state (dbs[i]) against the uses its own entries record, as replaying it alone does.
 */
static void replay_merged(struct replay_report *rr, struct verify_walk **walks, sqlite3 **dbs,
                          int64_t skew_s)
{
    struct head *h = xcalloc(rr->nlogs, sizeof(*h));
    for (size_t i = 0; i < rr->nlogs; i++) {
        struct replay_source *src = &rr->logs[i];
        h[i] = (struct head){
            .w = walks[i], .pass = src->rep, .label = src->origin ? src->origin : src->path};
        head_next(&h[i]);
    }
    struct replay rp = {
        .skew_s = skew_s, .own = xcalloc(rr->nlogs, sizeof(*rp.own)), .nown = rr->nlogs};
    for (;;) {
        size_t k = rr->nlogs;
        for (size_t i = 0; i < rr->nlogs; i++)
            if (h[i].live && (k == rr->nlogs || before(&h[i], &h[k])))
                k = i;
        if (k == rr->nlogs)
            break;
        replay_entry(&rp, k, &h[k].st);
        head_next(&h[k]);
    }
    for (size_t i = 0; i < rr->nlogs; i++)
        if (!h[i].pass.ok) {
            take_violation(&rr->logs[i].rep, &h[i].pass);
            rr->ok = false;
        }
    rr->replayed = true;
    rr->found = rp.found;
    rr->nfound = rp.nfound;
    rr->ok = rr->ok && rp.nfound == 0;
    bool clean = rr->ok;
    for (size_t i = 0; i < rr->nlogs && clean; i++) {
        check_state(dbs[i], &rp.own[i], &rr->logs[i].rep);
        rr->ok = rr->ok && rr->logs[i].rep.ok;
    }
    rp.found = NULL;
    rp.nfound = 0;
    replay_clear(&rp);
    free(h);
}

int replay_files(const char *const *paths, const char *const *origins, size_t n,
                 const struct verify_opts *o, struct replay_report *rr, char **err)
{
    sqlite3 **dbs = xcalloc(n, sizeof(*dbs));
    struct verify_opts *opts = xcalloc(n, sizeof(*opts));
    struct verify_walk **walks = xcalloc(n, sizeof(*walks));
    int rc = 2;
    memset(rr, 0, sizeof(*rr));
    *err = NULL;
    rr->logs = xcalloc(n, sizeof(*rr->logs));
    rr->nlogs = n;
    for (size_t i = 0; i < n; i++) {
        rr->logs[i].path = paths[i];
        if (!(dbs[i] = store_open_evidence(paths[i], err)))
            goto out;
        rr->logs[i].origin = origins ? xstrdup(origins[i]) : stored_origin(dbs[i]);
    }
    rc = 1;
    if (log_opts(o, rr, opts, err) != 0)
        goto out;
    rc = 2;
    rr->ok = true;
    for (size_t i = 0; i < n; i++) {
        struct verify_report *rep = &rr->logs[i].rep;
        if (verify_walk_open(dbs[i], &opts[i], rep, &walks[i]) != 0) {
            *err = xasprintf("%s: cannot read the log: %s", paths[i], sqlite3_errmsg(dbs[i]));
            goto out;
        }
        rr->ok = rr->ok && rep->ok;
        rr->allows += rep->allows;
    }
    if (rr->ok)
        replay_merged(rr, walks, dbs, o->skew_s);
    rc = rr->ok ? 0 : 1;
out:
    for (size_t i = 0; i < n; i++) {
        verify_walk_free(walks[i]);
        sqlite3_close(dbs[i]);
        free(opts[i].held);
    }
    free(walks);
    free(opts);
    free(dbs);
    return rc;
}

void replay_report_clear(struct replay_report *rr)
{
    for (size_t i = 0; i < rr->nlogs; i++)
        free(rr->logs[i].origin);
    free(rr->logs);
    free_found(rr->found, rr->nfound);
    memset(rr, 0, sizeof(*rr));
}

static json_t *origin_json(const struct replay_source *src)
{
    return src->origin ? sjson_text(src->origin) : json_null();
}

json_t *replay_report_json(const struct replay_report *rr)
{
    json_t *o = json_pack("{sb sb sI}", "ok", rr->ok, "replayed", rr->replayed, "allows",
                          (json_int_t)rr->allows);
    json_t *logs = json_array(), *found = json_array();
    for (size_t i = 0; i < rr->nlogs; i++) {
        json_t *l = verify_report_json(&rr->logs[i].rep);
        sjson_set(l, "db", sjson_text(rr->logs[i].path));
        sjson_set(l, "origin", origin_json(&rr->logs[i]));
        sjson_append(logs, l);
    }
    for (size_t i = 0; i < rr->nfound; i++) {
        const struct replay_finding *f = &rr->found[i];
        const struct replay_source *src = &rr->logs[f->log];
        json_t *v = json_pack("{so sI so ss so}", "db", sjson_text(src->path), "seq",
                              (json_int_t)f->seq, "request_id", sjson_text(f->request_id),
                              "violation", f->rule, "detail", sjson_text(f->detail));
        sjson_set(v, "origin", origin_json(src));
        if (f->first_seq >= 0)
            sjson_set(v, "first",
                      json_pack("{so sI}", "db", sjson_text(rr->logs[f->first_log].path), "seq",
                                (json_int_t)f->first_seq));
        sjson_append(found, v);
    }
    sjson_set(o, "logs", logs);
    sjson_set(o, "violations", found);
    return o;
}
