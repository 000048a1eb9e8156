/*
 * libFuzzer target: the used-jti records of audit/snap (an entry row's `uses`, a snapshot), read
 * from databases that come from outside by mandate-audit replay and by a gateway opening a log.
 * Besides never crashing or leaking: bytes snap_add() accepts fold to records that encode to
 * bytes it accepts again, and folding those changes nothing (the fold is canonical: sorted, one
 * record per jti, lengths within SNAP_MAX_ID, counts >= 1).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "audit/snap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct snap s = {0}, t = {0};
    /* The first 8 bytes, when there are, are keep_from: expired records are dropped too. */
    int64_t keep_from = INT64_MIN;
    if (size >= 8) {
        memcpy(&keep_from, data, 8);
        data += 8;
        size -= 8;
    }
    if (snap_add(&s, data, size) != 0) {
        if (s.raw.len != 0)
            abort(); /* refused bytes are not kept */
        snap_free(&s);
        return 0;
    }
    snap_fold(&s, keep_from);
    struct sb a = {0}, b = {0};
    snap_encode(&s, &a);
    if (snap_add(&t, a.buf, a.len) != 0)
        abort();
    snap_fold(&t, keep_from);
    snap_encode(&t, &b);
    if (a.len != b.len || (a.len && memcmp(a.buf, b.buf, a.len) != 0) || t.n != s.n)
        abort();
    for (size_t i = 0; i < t.n; i++) {
        if (t.v[i].used < 1 || t.v[i].exp < keep_from || t.v[i].iss_len > SNAP_MAX_ID ||
            t.v[i].jti_len > SNAP_MAX_ID || snap_find(&t, &t.v[i]) == NULL)
            abort();
    }
    sb_clear(&a);
    sb_clear(&b);
    snap_free(&s);
    snap_free(&t);
    return 0;
}
