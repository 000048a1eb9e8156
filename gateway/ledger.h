/*
 * ledger: the principals' spend per cap period, in memory. Keys are (issuer, principal,
 * currency, period), periods being UTC calendar periods: a day, an ISO week (from Monday), a
 * month, or all time. Amounts are reserved at the decision and then committed (2xx), released
 * (4xx/5xx, or never forwarded) or kept as unknown (timeout, broken connection): all but
 * released count against the cap. Not thread-safe: state.c calls it under its lock.
 */
#ifndef GATEWAY_LEDGER_H
#define GATEWAY_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/mandate.h"
#include "core/money.h"

#define LEDGER_KEY_MAX CAP_KEY_MAX /* keys are made by cap_key() in core/mandate.h */

struct ledger;

struct ledger *ledger_new(void);
void ledger_free(struct ledger *l);
/** The amount counted against key now. */
int64_t ledger_spent(struct ledger *l, const char *key);
/** Add amount to key if spent + amount <= cap: 0, or -1 (nothing changed). */
int ledger_reserve(struct ledger *l, const char *key, int64_t amount, int64_t cap) MUST_CHECK;

/* One period's total. A caller holding a lock makes a new one before taking the lock and frees
 * what it was handed (or did not use) after releasing it, so that the allocator never runs under
 * the lock. */
struct ledger_entry;

/** A total for key, for ledger_reserve_made(); free it with ledger_entries_free() unless taken. */
struct ledger_entry *ledger_entry_new(const char *key);
/**
 * ledger_reserve() for (*made)'s key, without allocating: if the key is new, the ledger takes
 * *made (and sets it to NULL).
 */
int ledger_reserve_made(struct ledger *l, struct ledger_entry **made, int64_t amount,
                        int64_t cap) MUST_CHECK;
/** Take back a reservation (released, or its commit failed). */
void ledger_release(struct ledger *l, const char *key, int64_t amount);
/**
 * Forget periods that ended over a day before now_unix_s, at most budget of them (oldest first):
 * no reservation can fall into them any more. They are unlinked and chained onto *dead, for
 * ledger_entries_free().
 */
void ledger_prune(struct ledger *l, int64_t now_unix_s, int budget, struct ledger_entry **dead);
/** Free a chain from ledger_prune(), or one unused ledger_entry_new(); NULL is a no-op. */
void ledger_entries_free(struct ledger_entry *list);
/** How many (key, period) totals are held. */
size_t ledger_size(const struct ledger *l);
/** Count amount under key unconditionally (start-up from the database). */
void ledger_load(struct ledger *l, const char *key, int64_t amount);
/**
 * Call fn(arg, key, spent) for every total whose key (cap_key()'s "issuer|principal|currency|
 * period") names principal and whose period has not ended at now_unix_s. Visits every entry:
 * for the admin API, not the request path.
 */
void ledger_each_principal(struct ledger *l, const char *principal, int64_t now_unix_s,
                           void (*fn)(void *arg, const char *key, int64_t spent), void *arg);

#endif
