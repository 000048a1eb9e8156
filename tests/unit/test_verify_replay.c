/*
 * audit/replay: logs written by the real writer with chosen times, replayed alone and together.
 * Together, the entries are merged by ts_ms (not appended log after log): a reservation released
 * on one node before another node spends counts no more, one released after still does; ties go
 * by origin; each log's origin is that of its stored checkpoints, and a held checkpoint goes to
 * the log of its origin. Alone, a log reports its first broken rule as it always did.
 */
#include "testkit.h"

#include <event2/thread.h>
#include <sqlite3.h>

#include "audit/replay.h"
#include "audit/writer.h"
#include "core/sha256.h"

#define T0 1700000000000LL /* ms; every entry falls on the same UTC day */

struct fixture {
    char *dir;
    struct jwk cp, wallet, merchant;
    struct keyring keys;
    int jti; /* the next mandate's number */
};

static int setup(void **state)
{
    struct fixture *fx = xcalloc(1, sizeof(*fx));
    fx->dir = tk_tmpdir();
    assert_int_equal(jwk_generate(JWK_EDDSA, "cp", &fx->cp), 0);
    assert_int_equal(jwk_generate(JWK_ES256, "w1", &fx->wallet), 0);
    assert_int_equal(jwk_generate(JWK_ES256, "lux1", &fx->merchant), 0);
    keyring_add(&fx->keys, "wallet-1", tk_set_of(&fx->wallet));
    keyring_add(&fx->keys, "lux", tk_set_of(&fx->merchant));
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    keyring_clear(&fx->keys);
    jwk_clear(&fx->cp);
    jwk_clear(&fx->wallet);
    jwk_clear(&fx->merchant);
    tk_rmdir(fx->dir);
    free(fx);
    return 0;
}

/* A log being written: its path and its writer. */
struct node {
    char *path;
    struct writer *w;
    int used[256]; /* uses recorded by this node, by mandate number */
};

static struct node node_open(struct fixture *fx, const char *name, const char *origin)
{
    struct node n = {xasprintf("%s/%s.db", fx->dir, name), NULL, {0}};
    char *err = NULL;
    struct store *st = store_open(n.path, STORE_CREATE, &err);
    assert_non_null(st);
    struct merkle_frontier f;
    unsigned char last[32];
    assert_int_equal(store_tail(st, &f, last, &err), 0);
    n.w = writer_start(
        st, &f, last,
        &(struct writer_opts){.key = &fx->cp, .origin = origin, .checkpoint_every = 1000});
    assert_non_null(n.w);
    return n;
}

/* Commit everything and sign the final checkpoint. */
static void node_close(struct node *n)
{
    writer_stop(n->w);
    n->w = NULL;
}

static json_t *listed(const char *typ, const char *iss, const char *kid, const char *jti,
                      const char *jws)
{
    unsigned char h[32];
    char hex[65];
    sha256(jws, strlen(jws), h);
    hex_encode(h, 32, hex);
    return json_pack("{ss ss ss ss ss}", "typ", typ, "iss", iss, "kid", kid, "jti", jti, "sha256",
                     hex);
}

/* Submit entry with its mandate texts and, as the gateway records them, the uses of its jtis:
 * jti0 (of wallet-1) used uses0 times, jti1 (a cart of lux) once. */
static void submit(struct node *n, json_t *entry, const char *jws0, const char *jws1,
                   const char *jti0, int uses0, const char *jti1)
{
    struct writer_item *it = writer_item_new(entry);
    if (jti0)
        writer_item_op(it, WOP_JTI, "wallet-1", jti0, 4000000000LL, uses0);
    if (jti1)
        writer_item_op(it, WOP_JTI, "lux", jti1, 4000000000LL, 1);
    const char *jws[2] = {jws0, jws1};
    for (int i = 0; i < 2 && jws[i]; i++) {
        unsigned char h[32];
        sha256(jws[i], strlen(jws[i]), h);
        writer_item_add_jws(it, jws[i], h);
    }
    assert_true(writer_submit(n->w, it));
}

static json_t *allow(int64_t ts, const char *id, const char *action)
{
    return json_pack("{sI ss ss ss ss ss ss ss ss}", "ts_ms", (json_int_t)ts, "kind", "decision",
                     "request_id", id, "principal", "alice", "agent", "agent-1", "merchant", "lux",
                     "action", action, "decision", "allow", "code", "ok");
}

/* An intent mandate of `uses` uses; *jti receives its jti (caller frees). */
static char *intent(struct fixture *fx, int uses, char **jti)
{
    *jti = xasprintf("intent-%016d", fx->jti++);
    char *payload = xasprintf("{\"iss\":\"wallet-1\",\"sub\":\"alice\",\"act\":{\"sub\":"
                              "\"agent-1\"},\"aud\":\"lux\",\"action\":\"search\",\"iat\":%lld,"
                              "\"exp\":4000000000,\"jti\":\"%s\",\"uses\":%d}",
                              T0 / 1000, *jti, uses);
    char *tok = tk_forge(&fx->wallet,
                         "{\"alg\":\"ES256\",\"kid\":\"w1\",\"typ\":\"intent-"
                         "mandate+jwt\"}",
                         payload);
    free(payload);
    return tok;
}

/* An allowed use of tok at ts. */
static void use(struct node *n, int64_t ts, const char *id, const char *tok, const char *jti)
{
    json_t *e = allow(ts, id, "search");
    sjson_set(e, "mandates",
              json_pack("[o]", listed("intent-mandate+jwt", "wallet-1", "w1", jti, tok)));
    int k = atoi(jti + strlen("intent-")) & 255;
    submit(n, e, tok, NULL, jti, ++n->used[k], NULL);
}

/* A paid allow at ts: a new cart of total, paid under cap (per day). */
static void pay(struct fixture *fx, struct node *n, int64_t ts, const char *id, int64_t total,
                int64_t cap)
{
    int k = fx->jti++;
    char *cjti = xasprintf("cart-%016d", k), *pjti = xasprintf("pay-%016d", k);
    char *cp = xasprintf("{\"iss\":\"lux\",\"sub\":\"alice\",\"jti\":\"%s\",\"iat\":%lld,\"exp\":"
                         "4000000000,\"action\":\"book\",\"items\":[{\"sku\":\"r\",\"qty\":1,"
                         "\"unit\":{\"value\":%lld,\"currency\":\"EUR\"}}],\"total\":{\"value\":"
                         "%lld,\"currency\":\"EUR\"}}",
                         cjti, T0 / 1000, (long long)total, (long long)total);
    char *cart = tk_forge(&fx->merchant,
                          "{\"alg\":\"ES256\",\"kid\":\"lux1\",\"typ\":\"cart-mandate+jwt\"}", cp);
    unsigned char h[32];
    char hash[B64URL_ENC_LEN(32)];
    sha256(cart, strlen(cart), h);
    b64url_encode(h, 32, hash);
    char *pp = xasprintf("{\"iss\":\"wallet-1\",\"sub\":\"alice\",\"act\":{\"sub\":\"agent-1\"},"
                         "\"aud\":\"lux\",\"action\":\"book\",\"iat\":%lld,\"exp\":4000000000,"
                         "\"jti\":\"%s\",\"cart\":\"%s\",\"total\":{\"value\":%lld,\"currency\":"
                         "\"EUR\"},\"cap\":{\"value\":%lld,\"currency\":\"EUR\",\"period\":"
                         "\"day\"}}",
                         T0 / 1000, pjti, hash, (long long)total, (long long)cap);
    char *payment = tk_forge(
        &fx->wallet, "{\"alg\":\"ES256\",\"kid\":\"w1\",\"typ\":\"payment-mandate+jwt\"}", pp);
    json_t *e = allow(ts, id, "book");
    sjson_set(e, "amount", json_pack("{sI ss}", "value", (json_int_t)total, "currency", "EUR"));
    sjson_set(e, "mandates",
              json_pack("[o o]", listed("payment-mandate+jwt", "wallet-1", "w1", pjti, payment),
                        listed("cart-mandate+jwt", "lux", "lux1", cjti, cart)));
    submit(n, e, payment, cart, pjti, 1, cjti);
    free(cjti);
    free(pjti);
    free(cp);
    free(pp);
    free(cart);
    free(payment);
}

static void outcome(struct node *n, int64_t ts, const char *id, int status, const char *spend)
{
    submit(n,
           json_pack("{sI ss ss ss si ss}", "ts_ms", (json_int_t)ts, "kind", "outcome",
                     "request_id", id, "result", status < 400 ? "ok" : "upstream_error", "status",
                     status, "spend", spend),
           NULL, NULL, NULL, 0, NULL);
}

static struct verify_opts opts(struct fixture *fx)
{
    return (struct verify_opts){.checkpoint_key = fx->cp.pkey, .keys = &fx->keys, .skew_s = 5};
}

/* Replay the two logs together; returns the exit status, rr filled. */
static int together(struct fixture *fx, struct node *a, struct node *b, struct replay_report *rr)
{
    const char *paths[] = {a->path, b->path};
    struct verify_opts o = opts(fx);
    char *err = NULL;
    int rc = replay_files(paths, NULL, 2, &o, rr, &err);
    if (err)
        fail_msg("replay_files: %s", err);
    return rc;
}

/* Each log replays clean on its own. */
static void assert_alone_clean(struct fixture *fx, struct node *n)
{
    struct verify_opts o = opts(fx);
    struct verify_report rep;
    char *err = NULL;
    int rc = verify_file(n->path, &o, true, &rep, &err);
    if (rc != 0)
        fail_msg("%s alone: %d %s %s", n->path, rc, rep.violation ? rep.violation : "",
                 err ? err : rep.detail);
}

static void free_nodes(struct node *a, struct node *b)
{
    free(a->path);
    free(b->path);
}

/* A reservation released on a before b's spend (by ts_ms) no longer counts; written the other
 * way round in time, the same entries exceed the cap at b's allow. */
static void run_release(struct fixture *fx, int64_t b_at, size_t want_found)
{
    struct node a = node_open(fx, "a", "a.test/log"), b = node_open(fx, "b", "b.test/log");
    pay(fx, &a, T0 + 1000, "ra1", 18000, 30000);
    outcome(&a, T0 + 3000, "ra1", 500, "released");
    pay(fx, &b, T0 + b_at, "rb1", 18000, 30000);
    outcome(&b, T0 + b_at + 10, "rb1", 200, "committed");
    node_close(&a);
    node_close(&b);
    assert_alone_clean(fx, &a);
    assert_alone_clean(fx, &b);
    struct replay_report rr;
    assert_int_equal(together(fx, &a, &b, &rr), want_found ? 1 : 0);
    assert_true(rr.replayed);
    assert_int_equal(rr.allows, 2);
    assert_int_equal(rr.nfound, want_found);
    if (want_found) {
        assert_string_equal(rr.found[0].rule, "cap exceeded");
        assert_int_equal(rr.found[0].log, 1);
        assert_int_equal(rr.found[0].seq, 0);
        assert_string_equal(rr.found[0].request_id, "rb1");
        assert_non_null(strstr(rr.found[0].detail, "36000 spent, cap 30000"));
    }
    replay_report_clear(&rr);
    free_nodes(&a, &b);
}

static void test_release_before_spend(void **state)
{
    run_release(*state, 4000, 0);
}

static void test_release_after_spend(void **state)
{
    run_release(*state, 2000, 1);
}

/* uses:2 allowed once on b, then twice on a: the third use, in time, is the one named, with the
 * first (on b) beside it. Each log alone is within the uses. */
static void test_uses_across_logs(void **state)
{
    struct fixture *fx = *state;
    struct node a = node_open(fx, "a", "a.test/log"), b = node_open(fx, "b", "b.test/log");
    char *jti, *tok = intent(fx, 2, &jti);
    use(&a, T0 + 2000, "ra1", tok, jti);
    use(&a, T0 + 3000, "ra2", tok, jti);
    use(&b, T0 + 1000, "rb1", tok, jti);
    node_close(&a);
    node_close(&b);
    assert_alone_clean(fx, &a);
    assert_alone_clean(fx, &b);
    struct replay_report rr;
    assert_int_equal(together(fx, &a, &b, &rr), 1);
    assert_int_equal(rr.nfound, 1);
    const struct replay_finding *f = &rr.found[0];
    assert_string_equal(f->rule, "reused jti");
    assert_int_equal(f->log, 0);
    assert_int_equal(f->seq, 1);
    assert_string_equal(f->request_id, "ra2");
    assert_int_equal(f->first_log, 1);
    assert_int_equal(f->first_seq, 0);
    /* The origins come from each log's own checkpoints. */
    assert_string_equal(rr.logs[0].origin, "a.test/log");
    assert_string_equal(rr.logs[1].origin, "b.test/log");
    json_t *j = replay_report_json(&rr);
    json_t *v = json_array_get(json_object_get(j, "violations"), 0);
    assert_string_equal(sjson_str(v, "db"), a.path);
    assert_string_equal(sjson_str(json_object_get(v, "first"), "db"), b.path);
    assert_int_equal(json_array_size(json_object_get(j, "logs")), 2);
    json_decref(j);
    replay_report_clear(&rr);
    free(tok);
    free(jti);
    free_nodes(&a, &b);
}

/* Each log's state is checked against its own entries, as alone: a mandate used on both nodes
 * within its uses is no finding (each node's state counts its own uses), and a snapshot that
 * lost its uses is named in its log's report. */
static void test_state_of_each_log(void **state)
{
    struct fixture *fx = *state;
    struct node a = node_open(fx, "a", "a.test/log"), b = node_open(fx, "b", "b.test/log");
    char *jti, *tok = intent(fx, 3, &jti);
    use(&a, T0 + 1000, "ra1", tok, jti);
    use(&b, T0 + 2000, "rb1", tok, jti);
    use(&a, T0 + 3000, "ra2", tok, jti);
    node_close(&a); /* each with a snapshot at stop */
    node_close(&b);
    struct replay_report rr;
    assert_int_equal(together(fx, &a, &b, &rr), 0);
    replay_report_clear(&rr);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(b.path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE snapshots SET uses = x''", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(together(fx, &a, &b, &rr), 1);
    assert_true(rr.replayed);
    assert_int_equal(rr.nfound, 0);
    assert_true(rr.logs[0].rep.ok);
    assert_false(rr.logs[1].rep.ok);
    assert_string_equal(rr.logs[1].rep.violation, "state behind the log");
    assert_non_null(strstr(rr.logs[1].rep.detail, "unknown to the state"));
    replay_report_clear(&rr);
    free(tok);
    free(jti);
    free_nodes(&a, &b);
}

/* Two uses of a single-use mandate in the same millisecond: the log whose origin sorts first
 * had the first, whatever the order of --db. */
static void test_ties_by_origin(void **state)
{
    struct fixture *fx = *state;
    struct node a = node_open(fx, "a", "z.test/log"), b = node_open(fx, "b", "m.test/log");
    char *jti, *tok = intent(fx, 1, &jti);
    use(&a, T0 + 1000, "ra1", tok, jti);
    use(&b, T0 + 1000, "rb1", tok, jti);
    node_close(&a);
    node_close(&b);
    struct replay_report rr;
    assert_int_equal(together(fx, &a, &b, &rr), 1);
    assert_int_equal(rr.nfound, 1);
    assert_int_equal(rr.found[0].log, 0); /* z.test/log comes after m.test/log */
    assert_int_equal(rr.found[0].first_log, 1);
    replay_report_clear(&rr);
    free(tok);
    free(jti);
    free_nodes(&a, &b);
}

/* One log replays as it always did: the first broken rule, its seq and its words. */
static void test_one_log_first_rule(void **state)
{
    struct fixture *fx = *state;
    struct node a = node_open(fx, "a", "a.test/log");
    char *jti, *tok = intent(fx, 1, &jti);
    use(&a, T0 + 1000, "r1", tok, jti);
    use(&a, T0 + 2000, "r2", tok, jti);
    use(&a, T0 + 3000, "r3", tok, jti);
    node_close(&a);
    struct verify_opts o = opts(fx);
    struct verify_report rep;
    char *err = NULL;
    assert_int_equal(verify_file(a.path, &o, true, &rep, &err), 1);
    assert_int_equal(rep.bad_seq, 1);
    assert_string_equal(rep.violation, "reused jti");
    char want[128];
    snprintf(want, sizeof(want), "jti %s allowed 2 times; it allows 1", jti);
    assert_string_equal(rep.detail, want);
    assert_int_equal(rep.allows, 3);
    free(tok);
    free(jti);
    free(a.path);
}

/* A held checkpoint goes to the log of its origin; one of no log's origin is refused. */
static void test_held_checkpoints(void **state)
{
    struct fixture *fx = *state;
    struct node a = node_open(fx, "a", "a.test/log"), b = node_open(fx, "b", "b.test/log");
    char *jti, *tok = intent(fx, 1, &jti), *jti2, *tok2 = intent(fx, 1, &jti2);
    use(&a, T0 + 1000, "ra1", tok, jti);
    use(&b, T0 + 2000, "rb1", tok2, jti2);
    node_close(&a);
    node_close(&b);
    char *err = NULL;
    struct store *st = store_open(a.path, STORE_READONLY, &err);
    assert_non_null(st);
    char *note = store_last_checkpoint(st);
    store_close(st);
    assert_non_null(note);
    const char *paths[] = {a.path, b.path};
    struct verify_opts o = opts(fx);
    o.held = &note;
    o.nheld = 1;
    struct replay_report rr;
    assert_int_equal(replay_files(paths, NULL, 2, &o, &rr, &err), 0);
    assert_null(err);
    assert_int_equal(rr.logs[0].rep.checkpoints, 2); /* its stored one and the held copy */
    assert_int_equal(rr.logs[1].rep.checkpoints, 1);
    replay_report_clear(&rr);
    /* Named for a and b the other way round: each log's checkpoints name the other origin. */
    const char *swapped[] = {"b.test/log", "a.test/log"};
    o.nheld = 0;
    assert_int_equal(replay_files(paths, swapped, 2, &o, &rr, &err), 1);
    assert_false(rr.replayed);
    assert_string_equal(rr.logs[0].rep.violation, "wrong origin");
    replay_report_clear(&rr);
    char *other = xasprintf("c.test/log%s", strchr(note, '\n'));
    o.held = &other;
    o.nheld = 1;
    assert_int_equal(replay_files(paths, NULL, 2, &o, &rr, &err), 1);
    assert_non_null(err);
    assert_non_null(strstr(err, "none of the logs"));
    free(err);
    replay_report_clear(&rr);
    free(other);
    free(note);
    free(tok);
    free(jti);
    free(tok2);
    free(jti2);
    free_nodes(&a, &b);
}

int main(void)
{
    assert_int_equal(evthread_use_pthreads(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_release_before_spend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_after_spend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uses_across_logs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_of_each_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ties_by_origin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_log_first_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_checkpoints, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
