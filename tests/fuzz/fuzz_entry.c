/*
 * libFuzzer target: the checks mandate-audit verify makes of one entry (verify_entry()): the
 * members of each kind and, for an allow, the mandates it lists against a database that stores
 * three real ones (an intent, a payment and its cart; their hashes are in entry.dict and the
 * seeds in tests/fuzz/seeds/entry). Entries are read from a database anyone may have written:
 * nothing may crash or leak, and an allow that passes must name what its mandate says.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "audit/verify.h"
#include "core/sha256.h"
#include "core/sjson.h"

/* Signed with throwaway keys that were not kept: only their text and hashes matter here. */
static const char *const tokens[] = {
    /* intent-mandate+jwt, sha256 7f47681204bd61ccc76fff0094cf974f2a4ade68737446484bdbc35211437d9c
     */
    "eyJhbGciOiJFUzI1NiIsImtpZCI6IncxIiwidHlwIjoiaW50ZW50LW1hbmRhdGUrand0In0.eyJpc3MiOiJ3YWxs"
    "ZXQtMSIsInN1YiI6ImFsaWNlIiwiYWN0Ijp7InN1YiI6ImFnZW50LXBsYW5uZXIifSwiYXVkIjoibHV4LWhvdGVs"
    "cyIsImFjdGlvbiI6InNlYXJjaCIsImlhdCI6MTgwMDAwMDAwMCwiZXhwIjoxODAwMDAwMDYwLCJqdGkiOiJmdXp6"
    "LWludGVudC0wMDAwMDEiLCJ1c2VzIjoyfQ.y7_N2etYTxR44GlM11ZD2OUFYoiwsTllaEblG6-e9h7awBwJOKgFZ"
    "QnvqeWaHRfsuyBRX3ePghszkRYhM-nZbw",
    /* payment-mandate+jwt, sha256 24a0e7ac1a5191a2f53ff890da9c62ed49de80176ebca51253729d5c18b5e15f
     */
    "eyJhbGciOiJFUzI1NiIsImtpZCI6IncxIiwidHlwIjoicGF5bWVudC1tYW5kYXRlK2p3dCJ9.eyJpc3MiOiJ3YWx"
    "sZXQtMSIsInN1YiI6ImFsaWNlIiwiYWN0Ijp7InN1YiI6ImFnZW50LXBsYW5uZXIifSwiYXVkIjoibHV4LWhvdGV"
    "scyIsImFjdGlvbiI6ImJvb2tfcm9vbSIsImlhdCI6MTgwMDAwMDAwMCwiZXhwIjoxODAwMDAwMDYwLCJqdGkiOiJ"
    "mdXp6LXBheW1lbnQtMDAwMDEiLCJjYXJ0IjoiSU4tNEgtMlktZVJCbWVQOThDUUMtREZURTN3Zzk0MVh4eVdzUUQ"
    "tbHJ5byIsInRvdGFsIjp7InZhbHVlIjoxODAwMCwiY3VycmVuY3kiOiJFVVIifSwiY2FwIjp7InZhbHVlIjo1MDA"
    "wMCwiY3VycmVuY3kiOiJFVVIiLCJwZXJpb2QiOiJkYXkifX0.bgVXOJgrBmnEW--KLsHQsX2GfojrIIEVkKUnvbN"
    "MsZdzK3GWyaiuYNnrUNepc75yFCksv71cI3h46FSnLFmyFg",
    /* cart-mandate+jwt, sha256 20dfb81fed98f9e44199e3fdf02402f83153137c20f78d57c725ac403fa5af2a */
    "eyJhbGciOiJFUzI1NiIsImtpZCI6Imx1eDEiLCJ0eXAiOiJjYXJ0LW1hbmRhdGUrand0In0.eyJpc3MiOiJsdXgt"
    "aG90ZWxzIiwic3ViIjoiYWxpY2UiLCJqdGkiOiJmdXp6LWNhcnQtMDAwMDAwMDEiLCJpYXQiOjE4MDAwMDAwMDAs"
    "ImV4cCI6MTgwMDAwMDYwMCwiYWN0aW9uIjoiYm9va19yb29tIiwiaXRlbXMiOlt7InNrdSI6ImRlbHV4ZSIsInF0"
    "eSI6MSwidW5pdCI6eyJ2YWx1ZSI6MTgwMDAsImN1cnJlbmN5IjoiRVVSIn19XSwidG90YWwiOnsidmFsdWUiOjE4"
    "MDAwLCJjdXJyZW5jeSI6IkVVUiJ9fQ.rzb5QDz6lLnp3kg2LQaAs8ZvQrgOIlLC2H3v3Tf7g_YN3-H1Q9ujbIntO"
    "h1JJ5lbTVknWu0qj3pID8j3PWyn3w",
};

static sqlite3 *db;

static void setup(void)
{
    if (sqlite3_open(":memory:", &db) != SQLITE_OK ||
        sqlite3_exec(db, "CREATE TABLE mandates(sha256 TEXT PRIMARY KEY, jws TEXT NOT NULL)", NULL,
                     NULL, NULL) != SQLITE_OK)
        abort();
    for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++) {
        unsigned char h[32];
        char hex[65];
        sha256(tokens[i], strlen(tokens[i]), h);
        hex_encode(h, 32, hex);
        char *sql = sqlite3_mprintf("INSERT INTO mandates VALUES(%Q, %Q)", hex, tokens[i]);
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
            abort();
        sqlite3_free(sql);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!db)
        setup();
    static const struct keyring none;
    static const struct verify_opts o = {.keys = &none, .skew_s = 5};
    struct verify_report rep = {.ok = true, .bad_seq = -1};
    if (verify_entry(db, &o, 7, (const char *)data, size, &rep) == 0) {
        /* Accepted: a JSON object, and an allow names its mandate's principal. */
        char *err = NULL;
        json_t *e = sjson_parse((const char *)data, size, &err);
        free(err);
        if (!json_is_object(e))
            abort();
        const char *d = sjson_str(e, "decision");
        if (d && strcmp(d, "allow") == 0 &&
            (!sjson_str(e, "principal") || strcmp(sjson_str(e, "principal"), "alice") != 0))
            abort();
        json_decref(e);
    } else if (rep.ok || rep.bad_seq != 7 || !rep.violation) {
        abort(); /* a refusal is a violation at this seq */
    }
    return 0;
}
