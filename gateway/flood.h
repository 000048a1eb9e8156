/*
 * flood: the per-client-address denial budget of SPEC §5. A client address may have up to
 * `denials_per_s` denials a second written to the audit log one by one; beyond that they are
 * counted, and one `denial_summary` entry per address and UTC second records how many and with
 * which codes. A flood of garbage tokens then costs a bounded number of entries a second instead
 * of one each (the disk of wave 1 filled at ~28 GB/hour). Answers to the client do not change.
 *
 * Thread-safe (one short lock). Bounded: at most FLOOD_MAX_CLIENTS addresses are tracked; beyond
 * that, new addresses share the summary of the address "other". It does not write entries itself:
 * flood_flush() hands finished summaries to a callback.
 */
#ifndef GATEWAY_FLOOD_H
#define GATEWAY_FLOOD_H

#include <stdbool.h>
#include <stdint.h>

#include "core/code.h"

#define FLOOD_MAX_CLIENTS 65536
#define FLOOD_ADDR_MAX    64 /* an IPv6 address with scope fits */

struct flood;

/** A finished summary: count denials from client in the UTC second `unix_s`, codes[c] of each. */
struct flood_summary {
    char client[FLOOD_ADDR_MAX];
    int64_t unix_s;
    uint64_t count;
    uint32_t codes[CODE__COUNT];
};

/** A new budget of per_s individual denials per address and second. */
struct flood *flood_new(int64_t per_s);
/** Free; NULL is a no-op. */
void flood_free(struct flood *f);
/** Change the budget (SIGHUP). */
void flood_set_rate(struct flood *f, int64_t per_s);
/**
 * Account one denial with code from client at now_unix_s. Returns true when it may be written
 * individually; false when it was counted into the client's summary for that second. With
 * summarise_all every denial is counted (the disk is low: nothing individual).
 */
bool flood_denial(struct flood *f, const char *client, enum code code, int64_t now_unix_s,
                  bool summarise_all);
/**
 * Hand every summary of a second before now_unix_s (every summary with INT64_MAX, at shutdown)
 * to emit, and forget addresses with nothing pending. Call about once a second.
 */
void flood_flush(struct flood *f, int64_t now_unix_s,
                 void (*emit)(const struct flood_summary *s, void *arg), void *arg);

#endif
