#!/usr/bin/env bash
# bench/writer.sh [SECONDS] -- the audit writer under load: the gateway in front of the harness's
# nginx upstream, wrk -c32 with one multi-use mandate, then the writer's figures from /metrics
# (entries/s, transactions, batch sizes, commit latency), next to SQLite's one-row-per-transaction
# rate on the same disk (the optional harness's sqlite-anchor.sh; see bench/harness.sh).
set -euo pipefail
SECS=${1:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/harness.sh"
need_harness start-nginx.sh sqlite-anchor.sh
B=$ROOT/build D=/tmp/bench-gw
[ -f $D/gateway.json ] || { echo "run bench/gateway.sh once first (it writes $D)" >&2; exit 1; }
"$HARNESS/start-nginx.sh" $((SECS + 30)) > /tmp/bench-writer-nginx.log 2>&1 &
NGINX=$!
trap 'kill $NGINX 2>/dev/null; [ -n "${GW:-}" ] && kill $GW 2>/dev/null; wait 2>/dev/null' EXIT
sleep 2
rm -f $D/gateway.db*
"$B/mandate-gateway" --config $D/gateway.json 2>/dev/null & GW=$!
sleep 0.5
TOK=$("$B/bench/mint_tokens" $D/wallet.pem w1 1 1000000000 7200)
wrk -t1 -c32 -d${SECS}s -H "Authorization: Mandate $TOK" http://127.0.0.1:18082/v1/echo | grep -E "Requests/sec|Non-2xx"
curl -s 127.0.0.1:18083/metrics | awk -v secs="$SECS" '
    /^mandate_audit_entries_total/ { e = $2 }
    /^mandate_audit_batch_entries_count/ { n = $2 }
    /^mandate_audit_commit_seconds_sum/ { t = $2 }
    /^mandate_audit_batch_entries_bucket/ { split($1, a, "\""); bb[++nb] = a[2]; bc[nb] = $2 }
    /^mandate_audit_commit_seconds_bucket/ { split($1, a, "\""); cb[++nc] = a[2]; cc[nc] = $2 }
    function q(p, b, c, k,   i) { for (i = 1; i <= k; i++) if (c[i] >= p * c[k]) return b[i]; }
    END {
        printf "writer: %d entries in %d s = %.0f entries/s, %d transactions, mean batch %.1f\n", e, secs, e / secs, n, e / n
        printf "batch size: p50 <= %s, p99 <= %s entries\n", q(0.5, bb, bc, nb), q(0.99, bb, bc, nb)
        printf "commit (BEGIN..COMMIT, fsync included): p50 <= %s s, p99 <= %s s, mean %.2f ms, busy %.0f%% of the run\n", q(0.5, cb, cc, nc), q(0.99, cb, cc, nc), t / n * 1000, t / secs * 100
    }'
"$HARNESS/sqlite-anchor.sh" 2>&1 | grep -E "journal=wal +synchronous=full"
