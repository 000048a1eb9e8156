/*
 * The gateway's shared state with injected clocks: admission consumes exactly what it checks,
 * undo gives it back, revocations reach the cart, and every table is pruned by what expired
 * (wall clock for jtis and ledger periods, monotonic clock for rate buckets), never by a sweep;
 * the lock is never held across an allocator call, and concurrent admissions count every use once.
 */
#include "testkit.h"

#include <dlfcn.h>
#include <pthread.h>

#include "gateway/state.h"

/* This program wraps the allocator and the mutex to see whether the state allocates or frees
 * while its lock is held: it must not (an arena lock, a page fault or an mmap there lengthens a
 * hold that every admission waits on). Not under AddressSanitizer, which owns the allocator. */
#ifndef __SANITIZE_ADDRESS__
#define WRAP_ALLOC 1
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

static _Thread_local int locks_held;
static _Atomic long allocs, allocs_locked;
static int (*real_lock)(pthread_mutex_t *), (*real_unlock)(pthread_mutex_t *);

static void count(void)
{
    allocs++;
    if (locks_held)
        allocs_locked++;
}

void *malloc(size_t n)
{
    count();
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    count();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    count();
    return __libc_realloc(p, n);
}

void free(void *p)
{
    if (p)
        count();
    __libc_free(p);
}

__attribute__((constructor)) static void find_mutex(void)
{
    *(void **)&real_lock = dlsym(RTLD_NEXT, "pthread_mutex_lock");
    *(void **)&real_unlock = dlsym(RTLD_NEXT, "pthread_mutex_unlock");
}

int pthread_mutex_lock(pthread_mutex_t *mu)
{
    int rc = real_lock(mu);
    locks_held++;
    return rc;
}

int pthread_mutex_unlock(pthread_mutex_t *mu)
{
    locks_held--;
    return real_unlock(mu);
}
#endif

#define T0   1795391999 /* a Unix time, 2026-11-22 23:59:59 UTC */
#define SKEW 5

static struct mandate mk(const char *jti, const char *agent, int64_t exp, int64_t uses)
{
    struct mandate m;
    memset(&m, 0, sizeof(m));
    snprintf(m.iss, sizeof(m.iss), "wallet-1");
    snprintf(m.sub, sizeof(m.sub), "alice");
    snprintf(m.agent, sizeof(m.agent), "%s", agent);
    snprintf(m.kid, sizeof(m.kid), "w1");
    snprintf(m.jti, sizeof(m.jti), "%s", jti);
    m.exp = exp;
    m.uses = uses;
    return m;
}

static enum code admit(struct state *st, const struct mandate *m, int64_t mono_us, int64_t unix_s)
{
    struct admit a = {.m = m};
    return state_admit(st, &a, mono_us, unix_s);
}

static size_t njtis(struct state *st)
{
    struct state_counts sc;
    state_counts(st, &sc);
    return sc.jtis;
}

static void test_uses_and_undo(void **state)
{
    (void)state;
    struct state *st = state_new(1000, 1000, SKEW);
    struct mandate m = mk("jti-0000000000000001", "agent-a", T0 + 60, 2);
    struct admit a = {.m = &m};
    assert_int_equal(state_admit(st, &a, 1, T0), CODE_OK);
    assert_int_equal(a.used, 1);
    state_undo(st, &a);
    assert_int_equal(admit(st, &m, 2, T0), CODE_OK);
    assert_int_equal(admit(st, &m, 3, T0), CODE_OK);
    assert_int_equal(admit(st, &m, 4, T0), CODE_MANDATE_USED);
    state_free(st);
}

/* A load with a smaller count than memory holds (out-of-order rows) never gives uses back. */
static void test_load_keeps_the_maximum(void **state)
{
    (void)state;
    struct state *st = state_new(1000, 1000, SKEW);
    struct mandate m = mk("jti-0000000000000002", "agent-a", T0 + 60, 3);
    state_load_jti(st, m.iss, m.jti, m.exp, 3);
    state_load_jti(st, m.iss, m.jti, m.exp, 2);
    assert_int_equal(admit(st, &m, 1, T0), CODE_MANDATE_USED);
    state_free(st);
}

/* Revoking the merchant's cart key or the cart's jti stops payments that use it. */
static void test_cart_revocation(void **state)
{
    (void)state;
    const char *what[][2] = {{"kid", "lux1"}, {"jti", "cart-00000000000000001"}};
    for (size_t i = 0; i < ARRAY_LEN(what); i++) {
        struct state *st = state_new(1000, 1000, SKEW);
        struct mandate pay = mk("pay-00000000000000001", "agent-a", T0 + 60, 1);
        struct mandate cart = mk("cart-00000000000000001", "", T0 + 600, 1);
        snprintf(cart.iss, sizeof(cart.iss), "lux-hotels");
        snprintf(cart.kid, sizeof(cart.kid), "lux1");
        cart.sub[0] = 0;
        enum revoke_kind k;
        assert_int_equal(revoke_kind_parse(what[i][0], &k), 0);
        assert_int_equal(state_revoke(st, k, what[i][1]), 1);
        struct admit a = {.m = &pay, .cart = &cart, .amount = 100, .cap = 1000};
        snprintf(a.spend_key, sizeof(a.spend_key), "wallet-1|alice|EUR|total");
        assert_int_equal(state_admit(st, &a, 1, T0), CODE_MANDATE_REVOKED);
        state_free(st);
    }
}

/* 100,000 distinct mandates expiring over 100 s: once they are past exp + skew + grace, the
 * table is empty again, pruned a bounded number at a time by later admissions. */
static void test_jtis_are_pruned_by_wall_clock(void **state)
{
    (void)state;
    struct state *st = state_new(1e9, 1e9, SKEW);
    char jti[40];
    for (int i = 0; i < 100000; i++) {
        snprintf(jti, sizeof(jti), "jti-%016d", i);
        struct mandate m = mk(jti, "agent-a", T0 + 10 + i / 1000, 1);
        assert_int_equal(admit(st, &m, i, T0), CODE_OK);
    }
    assert_int_equal(njtis(st), 100000);
    /* Still inside exp + skew + grace for the last ones: none of those may go. */
    int64_t later = T0 + 110 + SKEW + STATE_GRACE_S - 1;
    for (int i = 0; i < 5000; i++) {
        snprintf(jti, sizeof(jti), "new-%016d", i);
        struct mandate m = mk(jti, "agent-a", later + 60, 1);
        assert_int_equal(admit(st, &m, i, later), CODE_OK);
    }
    size_t n = njtis(st);
    assert_true(n < 105000 && n > 5000);
    /* The same mandate presented again is still refused: its jti was not forgotten early. */
    struct mandate last = mk("jti-0000000000099999", "agent-a", T0 + 109, 1);
    assert_int_equal(admit(st, &last, 1, T0 + 109 + SKEW), CODE_MANDATE_USED);
    /* Past every grace: admissions drain the old ones, PRUNE_BUDGET at a time. */
    int64_t past = T0 + 200 + SKEW + STATE_GRACE_S;
    for (int i = 0; i < 3000 && njtis(st) > 5000 + (size_t)i + 1; i++) {
        snprintf(jti, sizeof(jti), "more-%015d", i);
        struct mandate m = mk(jti, "agent-a", past + 60, 1);
        assert_int_equal(admit(st, &m, i, past), CODE_OK);
    }
    assert_true(njtis(st) <= 5000 + 3000);
    state_free(st);
}

/* A jti whose exp lies beyond one turn of the wheel is kept over the turn, then freed. */
static void test_far_expiry_survives_wheel_turns(void **state)
{
    (void)state;
    struct state *st = state_new(1e9, 1e9, SKEW);
    struct mandate far = mk("far-0000000000000001", "agent-a", T0 + 5000, 1);
    assert_int_equal(admit(st, &far, 1, T0), CODE_OK);
    char jti[40];
    for (int64_t t = T0; t < T0 + 5000; t += 50) {
        snprintf(jti, sizeof(jti), "tick-%015lld", (long long)t);
        struct mandate m = mk(jti, "agent-a", t + 10, 1);
        assert_int_equal(admit(st, &m, 1, t), CODE_OK);
    }
    assert_int_equal(admit(st, &far, 2, T0 + 4999), CODE_MANDATE_USED);
    state_free(st);
}

/* Rate buckets: an agent idle long enough to refill is forgotten (it equals a new bucket). */
static void test_rate_buckets_are_pruned(void **state)
{
    (void)state;
    struct state *st = state_new(10, 20, SKEW); /* refills from empty in 2 s */
    char jti[40], agent[40];
    for (int i = 0; i < 1000; i++) {
        snprintf(jti, sizeof(jti), "jti-%016d", i);
        snprintf(agent, sizeof(agent), "agent-%d", i);
        struct mandate m = mk(jti, agent, T0 + 60, 1);
        assert_int_equal(admit(st, &m, 1000 + i, T0), CODE_OK);
    }
    struct state_counts sc;
    state_counts(st, &sc);
    assert_int_equal(sc.buckets, 1000);
    for (int i = 0; i < 16; i++) { /* 16 × PRUNE_BUDGET ≥ 1000, within agent-late's burst */
        snprintf(jti, sizeof(jti), "late-%015d", i);
        struct mandate m = mk(jti, "agent-late", T0 + 60, 1);
        assert_int_equal(admit(st, &m, 3000000 + i, T0), CODE_OK);
    }
    state_counts(st, &sc);
    assert_int_equal(sc.buckets, 1); /* only agent-late */
    /* The rate limit itself still holds: 20 burst, then refused. */
    int ok = 0;
    for (int i = 0; i < 30; i++) {
        snprintf(jti, sizeof(jti), "burst-%014d", i);
        struct mandate m = mk(jti, "agent-b", T0 + 60, 1);
        ok += admit(st, &m, 4000000, T0) == CODE_OK;
    }
    assert_int_equal(ok, 20);
    assert_true(sc.lock_max_us < 1000000);
    state_free(st);
}

/* Ledger periods that ended over a day ago are dropped; all-time totals never are. */
static void test_ledger_periods_are_pruned(void **state)
{
    (void)state;
    struct state *st = state_new(1e9, 1e9, SKEW);
    state_load_spend(st, "wallet-1|alice|EUR|d2026-11-20", 500);
    state_load_spend(st, "wallet-1|alice|EUR|m2026-10", 500);
    state_load_spend(st, "wallet-1|alice|EUR|total", 500);
    state_load_spend(st, "wallet-1|alice|EUR|d2026-11-22", 500);
    struct mandate m = mk("jti-0000000000000003", "agent-a", T0 + 60, 1);
    assert_int_equal(admit(st, &m, 1, T0), CODE_OK);
    struct state_counts sc;
    state_counts(st, &sc);
    assert_int_equal(sc.ledger, 2); /* today's and the total */
    state_free(st);
}

/* No allocator call under the lock on any admission path: a single-use stream through six table
 * growths and its own pruning, a priced admission (cart, new spend period) that also prunes an
 * old period, node-only admissions of many agents whose idle buckets are pruned, nonces. */
static void test_no_allocation_under_the_lock(void **state)
{
    (void)state;
#ifndef WRAP_ALLOC
    skip();
#else
    struct state *st = state_new(1e9, 1e9, SKEW);
    state_load_spend(st, "wallet-1|alice|EUR|d2026-11-20", 500);
    allocs = allocs_locked = 0;
    char jti[40], agent[40];
    for (int i = 0; i < 40000; i++) { /* exp T0+10..T0+50, now T0..T0+80: the first expire */
        snprintf(jti, sizeof(jti), "jti-%016d", i);
        struct mandate m = mk(jti, "agent-a", T0 + 10 + i / 1000, 1);
        assert_int_equal(admit(st, &m, i, T0 + i / 500), CODE_OK);
    }
    assert_true(njtis(st) < 40000);
    struct mandate pay = mk("pay-00000000000000001", "agent-b", T0 + 200, 1);
    struct mandate cart = mk("cart-00000000000000001", "", T0 + 600, 1);
    struct admit a = {.m = &pay, .cart = &cart, .amount = 600, .cap = 1000};
    snprintf(a.spend_key, sizeof(a.spend_key), "wallet-1|alice|EUR|d2026-11-23");
    assert_int_equal(state_admit(st, &a, 1, T0 + 80), CODE_OK);
    struct state_counts sc;
    state_counts(st, &sc);
    assert_int_equal(sc.ledger, 1); /* the new period; the old one pruned */
    for (int i = 0; i < 100; i++) {
        snprintf(jti, sizeof(jti), "nonce-%014d", i);
        assert_int_equal(state_nonce(st, "key-1", jti, T0 + 90, T0 + 80), 1);
    }
    assert_int_equal(state_nonce(st, "key-1", jti, T0 + 90, T0 + 80), 0);
    state_free(st);

    st = state_new(10, 20, SKEW); /* buckets refill in 2 s */
    state_set_node_only(st);
    for (int i = 0; i < 5000; i++) {
        snprintf(jti, sizeof(jti), "jti-%016d", i);
        snprintf(agent, sizeof(agent), "agent-%d", i);
        struct mandate m = mk(jti, agent, T0 + 60, 1);
        assert_int_equal(admit(st, &m, (int64_t)i * 1000, T0), CODE_OK);
    }
    state_counts(st, &sc);
    assert_true(sc.buckets < 5000 && sc.jtis == 0);
    state_free(st);
    assert_true(allocs > 40000); /* the wrappers saw the slots made outside the lock */
    assert_int_equal(allocs_locked, 0);
#endif
}

/* Four threads admit distinct mandates at once through several table growths (the spare array
 * made outside the lock races with growth under it): every use is counted exactly once. */
#define RACE_THREADS 4
#define RACE_EACH    20000

static void *race_admit(void *arg)
{
    struct state *st = ((void **)arg)[0];
    int t = (int)(intptr_t)((void **)arg)[1], refused = 0;
    char jti[40];
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < RACE_EACH; i++) {
            snprintf(jti, sizeof(jti), "t%d-%016d", t, i);
            struct mandate m = mk(jti, "agent-a", T0 + 60, 1);
            refused += admit(st, &m, 1, T0) == CODE_MANDATE_USED;
        }
    return (void *)(intptr_t)refused;
}

static void test_concurrent_admissions_through_growth(void **state)
{
    (void)state;
    struct state *st = state_new(1e9, 1e9, SKEW);
    pthread_t th[RACE_THREADS];
    void *args[RACE_THREADS][2];
    for (int t = 0; t < RACE_THREADS; t++) {
        args[t][0] = st;
        args[t][1] = (void *)(intptr_t)t;
        assert_int_equal(pthread_create(&th[t], NULL, race_admit, args[t]), 0);
    }
    for (int t = 0; t < RACE_THREADS; t++) {
        void *refused;
        assert_int_equal(pthread_join(th[t], &refused), 0);
        assert_int_equal((intptr_t)refused, RACE_EACH); /* the second round, all of it */
    }
    assert_int_equal(njtis(st), RACE_THREADS * RACE_EACH);
    state_free(st);
}

static void test_cap_key_end(void **state)
{
    (void)state;
    assert_int_equal(cap_key_end("w|a|EUR|d2026-11-22"), 1795392000);
    assert_int_equal(cap_key_end("w|a|EUR|w2026-11-16"), 1795392000);
    assert_int_equal(cap_key_end("w|a|EUR|m2026-12"), 1798761600); /* 2027-01-01 */
    assert_true(cap_key_end("w|a|EUR|total") == INT64_MAX);
    assert_true(cap_key_end("garbage") == INT64_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uses_and_undo),
        cmocka_unit_test(test_load_keeps_the_maximum),
        cmocka_unit_test(test_cart_revocation),
        cmocka_unit_test(test_jtis_are_pruned_by_wall_clock),
        cmocka_unit_test(test_far_expiry_survives_wheel_turns),
        cmocka_unit_test(test_rate_buckets_are_pruned),
        cmocka_unit_test(test_ledger_periods_are_pruned),
        cmocka_unit_test(test_no_allocation_under_the_lock),
        cmocka_unit_test(test_concurrent_admissions_through_growth),
        cmocka_unit_test(test_cap_key_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
