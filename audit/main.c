/*
 * mandate-audit: the auditor's tool (SPEC §4): verify, replay, export (JSON lines or CSV), show,
 * prove, and check-receipt (a merchant's receipt against a signed checkpoint, offline). It opens
 * the database read-only and never changes it.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/pem.h>
#include <sqlite3.h>

#include "audit/checkpoint.h"
#include "audit/merkle.h"
#include "audit/replay.h"
#include "audit/store.h"
#include "audit/verify.h"
#include "core/log.h"
#include "core/money.h"
#include "core/sjson.h"
#include "core/version.h"

static const char usage[] =
    "usage: mandate-audit verify --db DB --checkpoint-key PUB [--checkpoint FILE]... "
    "[--jwks ID=FILE]... [--origin ORIGIN]\n"
    "                            [--require-checkpoint | --no-require-checkpoint] [--json]\n"
    "       mandate-audit replay --db DB [--db DB]... [--jwks ID=FILE]... [--checkpoint-key PUB "
    "[--checkpoint FILE]... [--origin ORIGIN]...]\n"
    "                            [--json]\n"
    "       mandate-audit export --db DB [--since SEQ] [--format jsonl|csv]\n"
    "       mandate-audit show --db DB [--principal P] [--agent A] [--merchant M] [--since TIME]\n"
    "       mandate-audit prove --db DB --seq SEQ [--size N]\n"
    "       mandate-audit check-receipt --checkpoint-key PUB --checkpoint FILE --proof FILE\n"
    "                                   --receipt SEQ:HASH [--origin ORIGIN]\n"
    "       mandate-audit --version | --help\n"
    "\n"
    "\n"
    "verify (and replay given --checkpoint-key) requires every entry to be under a signed\n"
    "checkpoint when the log has more than one entry or stores a checkpoint: a gateway signs one\n"
    "every few seconds and at shutdown. --no-require-checkpoint only reports the coverage (a copy\n"
    "of a running gateway's log); --require-checkpoint requires it of any log. --origin: every\n"
    "checkpoint must be for this log.\n"
    "replay with several --db (one log per node of a cluster) verifies each log on its own, then\n"
    "replays them together, merged by ts_ms, and reports every rule broken across them; --origin\n"
    "is then given once per --db, in the same order, or each log's checkpoints name its origin.\n"
    "exit status: 0 intact, 1 violation (or bad input), 2 cannot verify\n";

struct args {
    const char *db, *pub, *since, *principal, *agent, *merchant, *seq, *size, *origin;
    const char **dbs, **origins; /* every --db and --origin (db and origin: the last one) */
    size_t ndb, norigin;
    const char *format, *proof, *receipt;
    int no_db; /* check-receipt: works on files alone */
    enum verify_require require;
    char **held;
    size_t nheld;
    struct keyring keys;
    int json;
};

static int fail(int status, const char *fmt, const char *arg)
{
    fprintf(stderr, "mandate-audit: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return status;
}

static int parse(int argc, char **argv, struct args *a)
{
    static const struct option opts[] = {{"db", required_argument, 0, 'd'},
                                         {"checkpoint-key", required_argument, 0, 'k'},
                                         {"checkpoint", required_argument, 0, 'c'},
                                         {"jwks", required_argument, 0, 'j'},
                                         {"json", no_argument, 0, 'J'},
                                         {"since", required_argument, 0, 's'},
                                         {"principal", required_argument, 0, 'p'},
                                         {"agent", required_argument, 0, 'a'},
                                         {"merchant", required_argument, 0, 'm'},
                                         {"seq", required_argument, 0, 'q'},
                                         {"size", required_argument, 0, 'z'},
                                         {"origin", required_argument, 0, 'o'},
                                         {"require-checkpoint", no_argument, 0, 'r'},
                                         {"no-require-checkpoint", no_argument, 0, 'R'},
                                         {"format", required_argument, 0, 'f'},
                                         {"proof", required_argument, 0, 'P'},
                                         {"receipt", required_argument, 0, 'e'},
                                         {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *err = NULL, *eq;
        size_t len;
        switch (c) {
        case 'd':
            a->dbs = xrealloc(a->dbs, (a->ndb + 1) * sizeof(*a->dbs));
            a->db = a->dbs[a->ndb++] = optarg;
            break;
        case 'k':
            a->pub = optarg;
            break;
        case 'J':
            a->json = 1;
            break;
        case 's':
            a->since = optarg;
            break;
        case 'p':
            a->principal = optarg;
            break;
        case 'a':
            a->agent = optarg;
            break;
        case 'm':
            a->merchant = optarg;
            break;
        case 'q':
            a->seq = optarg;
            break;
        case 'z':
            a->size = optarg;
            break;
        case 'o':
            a->origins = xrealloc(a->origins, (a->norigin + 1) * sizeof(*a->origins));
            a->origin = a->origins[a->norigin++] = optarg;
            break;
        case 'f':
            a->format = optarg;
            break;
        case 'P':
            a->proof = optarg;
            break;
        case 'e':
            a->receipt = optarg;
            break;
        case 'r':
        case 'R':
            if (a->require != VERIFY_REQUIRE_AUTO &&
                a->require != (c == 'r' ? VERIFY_REQUIRE_ALL : VERIFY_REQUIRE_NONE))
                return fail(1, "%s", "--require-checkpoint and --no-require-checkpoint conflict");
            a->require = c == 'r' ? VERIFY_REQUIRE_ALL : VERIFY_REQUIRE_NONE;
            break;
        case 'c':
            a->held = xrealloc(a->held, (a->nheld + 1) * sizeof(char *));
            if (!(a->held[a->nheld] = file_read(optarg, 65536, &len, &err)))
                return fail(1, "%s", err);
            a->nheld++;
            break;
        case 'j':
            eq = strchr(optarg, '=');
            if (!eq || eq == optarg)
                return fail(1, "--jwks %s: expected ID=FILE", optarg);
            *eq = '\0';
            struct jwks *set = jwks_load_file(eq + 1, &err);
            if (!set)
                return fail(1, "%s", err);
            keyring_add(&a->keys, optarg, set);
            break;
        default:
            fputs(usage, stderr);
            return 1;
        }
    }
    if ((!a->db && !a->no_db) || optind != argc) {
        fputs(usage, stderr);
        return 1;
    }
    return 0;
}

static sqlite3 *open_db(const char *path)
{
    char *err = NULL;
    sqlite3 *db = store_open_evidence(path, &err);
    if (!db) {
        fprintf(stderr, "mandate-audit: %s\n", err);
        free(err);
    }
    return db;
}

static EVP_PKEY *load_pub(const char *path)
{
    FILE *f = fopen(path, "r");
    EVP_PKEY *k = f ? PEM_read_PUBKEY(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (k && !EVP_PKEY_is_a(k, "ED25519")) {
        EVP_PKEY_free(k);
        k = NULL;
    }
    return k;
}

static void print_json(json_t *o)
{
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
    puts(s);
    free(s);
    json_decref(o);
}

static void print_report(const struct verify_report *rep, const char *what)
{
    if (rep->ok) {
        printf("%s: intact: %llu entries, %llu checkpoints, %llu allows; mandates verified %llu, "
               "not checked (no key set given) %llu",
               what, (unsigned long long)rep->entries, (unsigned long long)rep->checkpoints,
               (unsigned long long)rep->allows, (unsigned long long)rep->mandates_checked,
               (unsigned long long)rep->mandates_unchecked);
        if (rep->checkpoints_checked)
            printf("; %llu of %llu entries under a signed checkpoint\n",
                   (unsigned long long)rep->covered, (unsigned long long)rep->entries);
        else
            printf("; checkpoints not checked (no --checkpoint-key)\n");
        if (rep->stored_owners[0]) /* no --jwks for them: audit/verify.h */
            printf("%s: mandates of %s checked with the key sets stored in the log\n", what,
                   rep->stored_owners);
    } else {
        printf("%s: VIOLATION at seq %lld: %s: %s\n", what, (long long)rep->bad_seq, rep->violation,
               rep->detail);
    }
}

static int report(const struct verify_report *rep, int json, const char *what)
{
    if (json)
        print_json(verify_report_json(rep));
    else
        print_report(rep, what);
    return rep->ok ? 0 : 1;
}

/* Each log's own report, then every rule broken across them, naming the log and the entry. */
static void print_several(const struct replay_report *rr)
{
    for (size_t i = 0; i < rr->nlogs; i++) {
        const struct replay_source *src = &rr->logs[i];
        char *what = src->origin ? xasprintf("replay: %s (origin %s)", src->path, src->origin)
                                 : xasprintf("replay: %s", src->path);
        print_report(&src->rep, what);
        free(what);
    }
    if (!rr->replayed) {
        printf("replay: the logs were not replayed together: not every one is intact\n");
        return;
    }
    for (size_t i = 0; i < rr->nfound; i++) {
        const struct replay_finding *f = &rr->found[i];
        const struct replay_source *src = &rr->logs[f->log];
        printf("replay: VIOLATION in %s%s%s%s at seq %lld, request_id %s: %s: %s", src->path,
               src->origin ? " (origin " : "", src->origin ? src->origin : "",
               src->origin ? ")" : "", (long long)f->seq, f->request_id, f->rule, f->detail);
        if (f->first_seq >= 0)
            printf("; the first in %s at seq %lld", rr->logs[f->first_log].path,
                   (long long)f->first_seq);
        putchar('\n');
    }
    printf("replay: %zu logs replayed together: %llu allows, ", rr->nlogs,
           (unsigned long long)rr->allows);
    size_t bad = 0;
    for (size_t i = 0; i < rr->nlogs; i++)
        bad += !rr->logs[i].rep.ok; /* a state behind its log's entries, reported above */
    if (rr->nfound)
        printf("%zu broken rule%s\n", rr->nfound, rr->nfound == 1 ? "" : "s");
    else if (bad)
        printf("no broken rule; %zu log%s with a violation above\n", bad, bad == 1 ? "" : "s");
    else
        printf("no broken rule\n");
}

/* replay with several --db (SPEC §6). */
static int replay_several(const struct args *a, const struct verify_opts *o)
{
    struct replay_report rr;
    char *err = NULL;
    int rc = replay_files(a->dbs, a->norigin ? a->origins : NULL, a->ndb, o, &rr, &err);
    if (err) {
        rc = fail(rc, "%s", err);
        free(err);
    } else if (a->json) {
        print_json(replay_report_json(&rr));
    } else {
        print_several(&rr);
    }
    replay_report_clear(&rr);
    return rc;
}

static int cmd_check(struct args *a, int replay)
{
    EVP_PKEY *pub = NULL;
    if (!replay && !a->pub)
        return fail(1, "%s", "verify needs --checkpoint-key PUB");
    /* Replay checks checkpoints only with a key: held ones or an origin without it prove nothing.
     */
    if (!a->pub && (a->nheld || a->origin || a->require == VERIFY_REQUIRE_ALL))
        return fail(1, "%s",
                    "--checkpoint, --origin and --require-checkpoint need --checkpoint-key");
    if (a->ndb > 1 && a->norigin && a->norigin != a->ndb)
        return fail(1, "%s", "with several --db, give --origin once per --db or not at all");
    if (a->pub && !(pub = load_pub(a->pub)))
        return fail(2, "%s: not an Ed25519 public key (PEM)", a->pub);
    struct verify_opts o = {.checkpoint_key = pub,
                            .held = a->held,
                            .nheld = a->nheld,
                            .keys = &a->keys,
                            .skew_s = 5,
                            .origin = a->origin,
                            .require = a->require};
    int rc;
    if (a->ndb > 1) {
        rc = replay_several(a, &o);
    } else {
        struct verify_report rep;
        char *err = NULL;
        rc = verify_file(a->db, &o, replay, &rep, &err);
        if (rc == 2) {
            rc = fail(2, "%s", err);
            free(err);
        } else {
            rc = report(&rep, a->json, replay ? "replay" : "verify");
        }
    }
    EVP_PKEY_free(pub);
    return rc;
}

/* A decimal number and nothing else (strtoull alone takes "-1", " 7" and "7abc"). */
static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 19)
        return -1;
    *out = strtoull(s, NULL, 10);
    return 0;
}

static void csv_rows(sqlite3_stmt *s);

static int cmd_export(struct args *a)
{
    uint64_t since = 0;
    if (a->since && parse_u64(a->since, &since) != 0)
        return fail(1, "--since %s: expected a seq number", a->since);
    bool csv = a->format && strcmp(a->format, "csv") == 0;
    if (a->format && !csv && strcmp(a->format, "jsonl") != 0)
        return fail(1, "--format %s: expected jsonl or csv", a->format);
    sqlite3 *db = open_db(a->db);
    if (!db)
        return 2;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "SELECT entry FROM entries WHERE seq >= ? ORDER BY seq", -1, &s,
                           NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return 2;
    }
    sqlite3_bind_int64(s, 1, (sqlite3_int64)since);
    if (csv)
        csv_rows(s);
    while (!csv && sqlite3_step(s) == SQLITE_ROW) {
        fwrite(sqlite3_column_blob(s, 0), 1, (size_t)sqlite3_column_bytes(s, 0), stdout);
        fputc('\n', stdout);
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return 0;
}

/*
 * --since: seconds since the epoch, or an ISO date "YYYY-MM-DD[THH:MM:SS[Z]]" in UTC, into
 * milliseconds. Anything else is an error: a filter that silently shows everything misleads.
 */
static int parse_since(const char *s, int64_t *ms)
{
    uint64_t secs;
    *ms = 0;
    if (!s)
        return 0;
    if (parse_u64(s, &secs) == 0) {
        if (secs > INT64_MAX / 1000)
            return -1;
        *ms = (int64_t)secs * 1000;
        return 0;
    }
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end && *end == 'Z')
        end++;
    if (!end || *end) {
        memset(&tm, 0, sizeof(tm));
        end = strptime(s, "%Y-%m-%d", &tm);
    }
    if (!end || *end || strspn(s, "0123456789") != 4 || s[4] != '-')
        return -1;
    *ms = (int64_t)timegm(&tm) * 1000;
    return 0;
}

/* ISO 4217 currencies whose minor unit is not the cent; every other code has two decimals. */
static int currency_decimals(const char *code)
{
    static const char *const zero[] = {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY",
                                       "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
                                       "VND", "VUV", "XAF", "XOF", "XPF"};
    static const char *const three[] = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"};
    static const char *const four[] = {"CLF", "UYW"};
    if (name_index(code, zero, ARRAY_LEN(zero)) >= 0)
        return 0;
    if (name_index(code, three, ARRAY_LEN(three)) >= 0)
        return 3;
    return name_index(code, four, ARRAY_LEN(four)) >= 0 ? 4 : 2;
}

/* "180.00 EUR" for {"value": 18000, "currency": "EUR"}: major units, as people read prices. */
static void format_major(const struct money *m, char *buf, size_t n)
{
    int d = currency_decimals(m->currency);
    int64_t div = 1;
    for (int i = 0; i < d; i++)
        div *= 10;
    if (d == 0)
        snprintf(buf, n, "%lld %s", (long long)m->value, m->currency);
    else
        snprintf(buf, n, "%lld.%0*lld %s", (long long)(m->value / div), d,
                 (long long)(m->value % div), m->currency);
}

/* A denial_summary as one cell: "57 denials from 10.0.0.7: mandate_missing=50,...". */
static void format_summary(const json_t *e, char *buf, size_t n)
{
    int64_t count = 0;
    if (sjson_int(e, "count", &count) != 0)
        count = 0;
    const char *client = sjson_str(e, "client");
    int w = snprintf(buf, n, "%lld denials from %s:", (long long)count, client ? client : "?");
    const char *code;
    json_t *c;
    const char *sep = " ";
    json_object_foreach((json_t *)json_object_get(e, "codes"), code, c)
    {
        if (w < 0 || (size_t)w >= n)
            break;
        w += snprintf(buf + w, n - (size_t)w, "%s%s=%lld", sep, code,
                      (long long)json_integer_value(c));
        sep = ",";
    }
}

static const char *str_or(const json_t *e, const char *k, const char *dflt)
{
    const char *s = sjson_str(e, k);
    return s && *s ? s : dflt;
}

/* One CSV field (RFC 4180): quoted when it holds a comma, a quote, CR or LF; quotes doubled. */
static void csv_field(const char *v, bool last)
{
    if (v[strcspn(v, ",\"\r\n")] == '\0') {
        fputs(v, stdout);
    } else {
        fputc('"', stdout);
        for (const char *p = v; *p; p++) {
            if (*p == '"')
                fputc('"', stdout);
            fputc(*p, stdout);
        }
        fputc('"', stdout);
    }
    fputs(last ? "\r\n" : ",", stdout);
}

/*
 * export --format csv: one row per entry under a header row (RFC 4180, CRLF line ends), for a
 * spreadsheet or an accounting import: the time in ISO 8601 UTC with milliseconds, amounts in
 * major units ("180.00") with the currency in its own column, and the receipt (seq:leaf hash) a
 * merchant was given. The entry's exact bytes stay the JSON export's business.
 */
static void csv_rows(sqlite3_stmt *s)
{
    static const char *const cols[] = {"seq",    "time",      "kind",       "decision", "code",
                                       "status", "principal", "agent",      "merchant", "action",
                                       "amount", "currency",  "request_id", "receipt"};
    for (size_t i = 0; i < ARRAY_LEN(cols); i++)
        csv_field(cols[i], i + 1 == ARRAY_LEN(cols));
    while (sqlite3_step(s) == SQLITE_ROW) {
        char *err = NULL;
        json_t *e =
            sjson_parse(sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0), &err);
        free(err);
        if (!e)
            continue;
        int64_t seq = 0, ts = 0, status;
        if (sjson_int(e, "seq", &seq) != 0 || sjson_int(e, "ts_ms", &ts) != 0)
            seq = ts = 0;
        char num[24], when[40], stat[16] = "", amount[80] = "", currency[8] = "", what[512];
        char receipt[96] = "";
        snprintf(num, sizeof(num), "%lld", (long long)seq);
        time_t t = (time_t)(ts / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, 24, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(when + strlen(when), sizeof(when) - strlen(when), ".%03dZ", (int)(ts % 1000));
        const char *kind = str_or(e, "kind", ""), *code = str_or(e, "code", "");
        if (strcmp(kind, "outcome") == 0)
            code = str_or(e, "result", "");
        if (sjson_int(e, "status", &status) == 0)
            snprintf(stat, sizeof(stat), "%lld", (long long)status);
        struct money mo;
        const char *why;
        if (money_from_json(json_object_get(e, "amount"), false, &mo, &why) == 0) {
            format_major(&mo, amount, sizeof(amount));
            amount[strcspn(amount, " ")] = '\0'; /* the currency has its own column */
            snprintf(currency, sizeof(currency), "%s", mo.currency);
        }
        if (strcmp(kind, "denial_summary") == 0) {
            format_summary(e, what, sizeof(what));
            code = what;
        }
        unsigned char leaf[32];
        char hex[65];
        merkle_leaf_hash(sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0), leaf);
        hex_encode(leaf, 32, hex);
        snprintf(receipt, sizeof(receipt), "%lld:%s", (long long)seq, hex);
        const char *decision = str_or(e, "decision", "");
        if (strcmp(kind, "denial_summary") == 0)
            decision = "deny";
        const char *row[] = {num,
                             when,
                             kind,
                             decision,
                             code,
                             stat,
                             str_or(e, "principal", ""),
                             str_or(e, "agent", ""),
                             str_or(e, "merchant", ""),
                             str_or(e, "action", ""),
                             amount,
                             currency,
                             str_or(e, "request_id", ""),
                             receipt};
        for (size_t i = 0; i < ARRAY_LEN(row); i++)
            csv_field(row[i], i + 1 == ARRAY_LEN(row));
        json_decref(e);
    }
}

static int cmd_show(struct args *a)
{
    sqlite3 *db = open_db(a->db);
    if (!db)
        return 2;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "SELECT entry FROM entries ORDER BY seq", -1, &s, NULL) !=
        SQLITE_OK) {
        sqlite3_close(db);
        return 2;
    }
    int64_t since;
    if (parse_since(a->since, &since) != 0) {
        sqlite3_finalize(s);
        sqlite3_close(db);
        return fail(1, "--since %s: expected seconds since the epoch or YYYY-MM-DD[THH:MM:SS]",
                    a->since);
    }
    printf("%-6s %-20s %-10s %-6s %-24s %-12s %-16s %-12s %-12s %-14s %s\n", "SEQ", "TIME (UTC)",
           "KIND", "RESULT", "CODE", "PRINCIPAL", "AGENT", "MERCHANT", "ACTION", "AMOUNT",
           "REQUEST");
    while (sqlite3_step(s) == SQLITE_ROW) {
        char *err = NULL;
        json_t *e =
            sjson_parse(sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0), &err);
        free(err);
        if (!e)
            continue;
        int64_t seq = 0, ts = 0;
        if (sjson_int(e, "seq", &seq) != 0 || sjson_int(e, "ts_ms", &ts) != 0)
            seq = ts = 0;
        const char *p = str_or(e, "principal", "-"), *ag = str_or(e, "agent", "-"),
                   *m = str_or(e, "merchant", "-"), *kind = str_or(e, "kind", "?");
        /* What a revocation revoked: {"revoke": {"<kind>": "<value>"}}. A revoked principal or
         * agent also shows in (and is found by a filter on) its own column. */
        json_t *rv = strcmp(kind, "revocation") == 0 ? json_object_get(e, "revoke") : NULL;
        const char *rkind = rv ? json_object_iter_key(json_object_iter(rv)) : NULL;
        const char *rval =
            rkind ? json_string_value(json_object_iter_value(json_object_iter(rv))) : NULL;
        if (rkind && rval && strcmp(rkind, "principal") == 0)
            p = rval;
        if (rkind && rval && strcmp(rkind, "agent") == 0)
            ag = rval;
        if (ts < since || (a->principal && strcmp(p, a->principal)) ||
            (a->agent && strcmp(ag, a->agent)) || (a->merchant && strcmp(m, a->merchant))) {
            json_decref(e);
            continue;
        }
        char when[32], amount[40] = "-", result[16] = "-", what[512];
        time_t t = (time_t)(ts / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
        struct money mo;
        const char *why;
        if (money_from_json(json_object_get(e, "amount"), false, &mo, &why) == 0)
            format_major(&mo, amount, sizeof(amount));
        int64_t status;
        if (strcmp(kind, "outcome") == 0 && sjson_int(e, "status", &status) == 0)
            snprintf(result, sizeof(result), "%lld", (long long)status);
        else
            snprintf(result, sizeof(result), "%s", str_or(e, "decision", "-"));
        const char *code =
            strcmp(kind, "outcome") == 0 ? str_or(e, "result", "-") : str_or(e, "code", "-");
        if (rkind && rval) {
            snprintf(what, sizeof(what), "revoked %s %s", rkind, rval);
            code = what;
        } else if (strcmp(kind, "denial_summary") == 0) {
            snprintf(result, sizeof(result), "deny");
            format_summary(e, what, sizeof(what));
            code = what;
        }
        printf("%-6lld %-20s %-10s %-6s %-24s %-12s %-16s %-12s %-12s %-14s %s\n", (long long)seq,
               when, kind, result, code, p, ag, m, str_or(e, "action", "-"), amount,
               str_or(e, "request_id", "-"));
        json_decref(e);
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return 0;
}

/* The size of the newest stored checkpoint and its note (caller frees), or 0. */
static uint64_t newest_checkpoint(sqlite3 *db, char **note)
{
    sqlite3_stmt *s;
    uint64_t size = 0;
    *note = NULL;
    if (sqlite3_prepare_v2(db, "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1", -1,
                           &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
        size = (uint64_t)sqlite3_column_int64(s, 0);
        *note = xstrdup((const char *)sqlite3_column_text(s, 1));
    }
    sqlite3_finalize(s);
    return size;
}

/*
 * prove: the RFC 6962 inclusion proof of entry SEQ in the tree of the newest checkpoint (or of
 * --size entries), from stored subtree roots in O(log n) reads. With the checkpoint's signed root
 * and the leaf hash from a Mandate-Receipt, anyone can check that the entry is in the log.
 */
static int cmd_prove(struct args *a)
{
    char *err = NULL, *note = NULL;
    if (!a->seq)
        return fail(1, "%s", "prove needs --seq SEQ");
    struct store *st = store_open(a->db, STORE_READONLY, &err);
    if (!st) {
        int rc = fail(2, "%s", err);
        free(err);
        return rc;
    }
    uint64_t seq = 0, size = 0;
    if (parse_u64(a->seq, &seq) != 0 || (a->size && parse_u64(a->size, &size) != 0)) {
        store_close(st);
        return fail(1, "%s", "prove: --seq and --size take a decimal number");
    }
    if (!a->size)
        size = newest_checkpoint(store_db(st), &note);
    unsigned char leaf[32], root[32], proof[MERKLE_MAX_HEIGHT][32];
    int len = seq < size ? store_inclusion_proof(st, seq, size, proof) : -1;
    int rc = 1;
    /* The proof is checked here before it is printed, as its reader will check it. */
    if (len < 0 || store_range_root(st, seq, 1, leaf) != 0 ||
        store_range_root(st, 0, size, root) != 0 ||
        !merkle_verify_inclusion(leaf, seq, size, (const unsigned char(*)[32])proof, (size_t)len,
                                 root)) {
        fprintf(stderr, "mandate-audit: no proof for seq %s in a tree of %llu entries\n", a->seq,
                (unsigned long long)size);
    } else {
        char hex[65];
        json_t *p = json_array();
        for (int i = 0; i < len; i++) {
            hex_encode(proof[i], 32, hex);
            sjson_append(p, json_string(hex));
        }
        json_t *o =
            json_pack("{sI sI so}", "seq", (json_int_t)seq, "size", (json_int_t)size, "proof", p);
        hex_encode(leaf, 32, hex);
        sjson_set(o, "leaf", json_string(hex));
        hex_encode(root, 32, hex);
        sjson_set(o, "root", json_string(hex));
        if (note && !a->size)
            sjson_set(o, "checkpoint", json_string(note));
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
        puts(s);
        free(s);
        json_decref(o);
        rc = 0;
    }
    free(note);
    store_close(st);
    return rc;
}

/*
 * check-receipt: is the entry a Mandate-Receipt names in the log a signed checkpoint commits to?
 * Offline, from three things a merchant can keep: the receipt ("SEQ:HEX leaf hash"), the
 * inclusion proof `prove` printed (its JSON), and the checkpoint note, checked with the gateway's
 * public checkpoint key (GET /.well-known/mandate-log-key). 0 included, 1 not, 2 cannot check.
 */
static int cmd_check_receipt(struct args *a)
{
    if (!a->pub || a->nheld != 1 || !a->proof || !a->receipt)
        return fail(1, "%s",
                    "check-receipt needs --checkpoint-key PUB, one --checkpoint FILE, "
                    "--proof FILE and --receipt SEQ:HASH");
    uint64_t seq, size, psize, pseq;
    unsigned char leaf[32], root[32], proof[MERKLE_MAX_HEIGHT][32];
    const char *colon = strchr(a->receipt, ':'), *why = NULL;
    char seqbuf[24];
    if (!colon || (size_t)(colon - a->receipt) >= sizeof(seqbuf) || strlen(colon + 1) != 64 ||
        hex_decode(colon + 1, leaf, 32) != 0)
        return fail(1, "--receipt %s: expected SEQ:<64 hex digits>", a->receipt);
    snprintf(seqbuf, sizeof(seqbuf), "%.*s", (int)(colon - a->receipt), a->receipt);
    if (parse_u64(seqbuf, &seq) != 0)
        return fail(1, "--receipt %s: expected SEQ:<64 hex digits>", a->receipt);
    EVP_PKEY *pub = load_pub(a->pub);
    if (!pub)
        return fail(2, "%s: not an Ed25519 public key (PEM)", a->pub);
    char *origin = NULL, *err = NULL;
    int rc = checkpoint_verify(a->held[0], pub, &size, root, &origin, &why);
    EVP_PKEY_free(pub);
    if (rc != 0)
        return fail(1, "checkpoint: %s", why ? why : "does not verify");
    size_t plen;
    char *text = file_read(a->proof, 1 << 20, &plen, &err);
    json_t *p = text ? sjson_parse(text, plen, &err) : NULL;
    free(text);
    json_t *arr = json_object_get(p, "proof");
    int64_t v;
    rc = 1;
    if (!p || !json_is_array(arr) || json_array_size(arr) > MERKLE_MAX_HEIGHT ||
        sjson_int(p, "seq", &v) != 0 || v < 0 || ((pseq = (uint64_t)v), 0) ||
        sjson_int(p, "size", &v) != 0 || v < 0) {
        fprintf(stderr, "mandate-audit: %s: %s\n", a->proof,
                err ? err : "not a proof from `mandate-audit prove`");
        rc = 2;
        goto out;
    }
    psize = (uint64_t)v;
    size_t i;
    json_t *h;
    json_array_foreach(arr, i, h)
    {
        if (!json_is_string(h) || json_string_length(h) != 64 ||
            hex_decode(json_string_value(h), proof[i], 32) != 0) {
            fprintf(stderr, "mandate-audit: %s: proof[%zu] is not a hex hash\n", a->proof, i);
            rc = 2;
            goto out;
        }
    }
    if (a->origin && strcmp(origin, a->origin) != 0)
        printf("receipt %s: NOT CHECKED: the checkpoint is for %s, not %s\n", a->receipt, origin,
               a->origin);
    else if (psize != size)
        printf("receipt %s: NOT CHECKED: the proof is for a tree of %llu entries, the checkpoint "
               "of %llu\n",
               a->receipt, (unsigned long long)psize, (unsigned long long)size);
    else if (pseq != seq)
        printf("receipt %s: NOT INCLUDED: the proof is for seq %llu\n", a->receipt,
               (unsigned long long)pseq);
    else if (!merkle_verify_inclusion(leaf, seq, size, (const unsigned char(*)[32])proof,
                                      json_array_size(arr), root))
        printf("receipt %s: NOT INCLUDED in the checkpoint of %s at size %llu\n", a->receipt,
               origin, (unsigned long long)size);
    else {
        printf("receipt %s: included in the checkpoint of %s at size %llu\n", a->receipt, origin,
               (unsigned long long)size);
        rc = 0;
    }
out:
    free(err);
    free(origin);
    json_decref(p);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("mandate-audit %s\n", MANDATE_VERSION);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc < 2) {
        fputs(usage, stderr);
        return 1;
    }
    struct args a = {0};
    const char *cmd = argv[1];
    a.no_db = strcmp(cmd, "check-receipt") == 0;
    int rc = parse(argc - 1, argv + 1, &a);
    if (rc == 0 && a.ndb > 1 && strcmp(cmd, "replay") != 0)
        rc = fail(1, "%s: only replay takes several --db", cmd);
    if (rc == 0) {
        if (strcmp(cmd, "verify") == 0)
            rc = cmd_check(&a, 0);
        else if (strcmp(cmd, "replay") == 0)
            rc = cmd_check(&a, 1);
        else if (strcmp(cmd, "export") == 0)
            rc = cmd_export(&a);
        else if (strcmp(cmd, "show") == 0)
            rc = cmd_show(&a);
        else if (strcmp(cmd, "prove") == 0)
            rc = cmd_prove(&a);
        else if (strcmp(cmd, "check-receipt") == 0)
            rc = cmd_check_receipt(&a);
        else
            rc = fail(1, "unknown command %s", cmd);
    }
    for (size_t i = 0; i < a.nheld; i++)
        free(a.held[i]);
    free(a.held);
    free(a.dbs);
    free(a.origins);
    keyring_clear(&a.keys);
    return rc;
}
