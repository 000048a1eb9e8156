#!/usr/bin/env bash
# bench/commit.sh [SECONDS] -- the audit writer's commit latency under load, and what the WAL and
# the disk do meanwhile. The gateway (BUILD, default build) in front of the harness's nginx
# upstream; wrk -c32 for SECONDS (default 30) with MODE=multi (one multi-use mandate) or
# MODE=single (a mandate not seen before on every request: a jti row per entry, so several pages
# of the database per commit). Then, from /metrics, the writer's BEGIN..COMMIT histogram
# (p50, p99, p99.9 and the largest bucket hit: SQLite's automatic WAL checkpoint runs inside
# COMMIT), the WAL file's largest size (sampled every 0.1 s), and the bytes the gateway made the
# disk write per entry (/proc/PID/io write_bytes).
# Everything on 127.0.0.1, free ports, a fresh temporary directory (printed; KEEP=0 removes it),
# processes stopped by PID with SIGTERM, the run bounded by MAX_S (default 300 s).
# Environment: WORKERS (default 2), TOKENS (MODE=single, default 200000).
set -euo pipefail
SECS=${1:-30}
MODE=${MODE:-multi}
MAX_S=${MAX_S:-300}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/harness.sh"
need_harness upstream-nginx.conf
[ "$MODE" = single ] && need_harness rotate-tokens.lua
BUILD=${BUILD:-build}
B=$ROOT/$BUILD
command -v wrk > /dev/null || { echo "needs wrk (apt-get install -y wrk)" >&2; exit 1; }
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX_BIN" ] || { echo "needs nginx (apt-get install -y nginx)" >&2; exit 1; }
make -C "$ROOT" -s BUILD="$BUILD" all
D=$(mktemp -d /tmp/bench-commit.XXXXXX)

GW= NG= WD= SAMPLER=
cleanup() {
    set +e
    [ -n "$WD" ] && kill "$WD" 2> /dev/null
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2> /dev/null
    if [ -n "$GW" ] && kill -0 "$GW" 2> /dev/null; then
        kill -TERM "$GW"
        wait "$GW"
        echo "gateway exit status after SIGTERM: $?; WAL left: $(stat -c %s "$D/gateway.db-wal" 2> /dev/null || echo none)"
    fi
    [ -n "$NG" ] && kill -TERM "$NG" 2> /dev/null && wait "$NG" 2> /dev/null
    [ "${KEEP:-1}" = 0 ] && rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
(trap 'kill $S 2> /dev/null; exit 0' TERM; sleep "$MAX_S" & S=$!; wait $S
 echo "commit.sh: watchdog after ${MAX_S}s" >&2; kill -TERM $$) &
WD=$!

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port) PORT=$(free_port) ADMIN=$(free_port)
URL=http://127.0.0.1:$PORT/v1/echo

mkdir -p "$D/nginx/logs" "$D/nginx/tmp"
sed "s/127\.0\.0\.1:18080/127.0.0.1:$UP/" "$HARNESS/upstream-nginx.conf" > "$D/nginx/nginx.conf"
"$NGINX_BIN" -p "$D/nginx/" -c "$D/nginx/nginx.conf" -e "$D/nginx/logs/error.log" &
NG=$!

"$B/mandate-wallet" keygen --alg ES256 --kid w1 --out "$D/wallet-1.pem" --jwks "$D/wallet-1.jwks.json" > /dev/null
"$B/mandate-wallet" keygen --alg EdDSA --kid cp --out "$D/checkpoint.pem" --jwks "$D/checkpoint.jwks.json" > /dev/null
cat > "$D/gateway.json" << JSON
{
  "listen": "127.0.0.1:$PORT", "workers": ${WORKERS:-2}, "database": "gateway.db",
  "admin": {"listen": "127.0.0.1:$ADMIN",
            "token_sha256": "$(printf bench | sha256sum | cut -d' ' -f1)"},
  "audit": {"origin": "bench.example/audit", "checkpoint_key": "checkpoint.pem",
            "checkpoint_every": 10000},
  "limits": {"max_ttl_s": 7200},
  "rate_limit": {"per_agent_per_s": 1000000, "burst": 1000000},
  "issuers": [{"id": "wallet-1", "jwks_file": "wallet-1.jwks.json"}],
  "merchants": [{"id": "bench-shop", "upstream": "http://127.0.0.1:$UP",
                 "routes": [{"method": "GET", "path": "/v1/echo", "action": "echo"}]}],
  "log_level": "warn"
}
JSON
"$B/mandate-gateway" --config "$D/gateway.json" 2> /dev/null &
GW=$!
for i in $(seq 50); do
    curl -sf "http://127.0.0.1:$ADMIN/readyz" > /dev/null 2>&1 && curl -s "http://127.0.0.1:$UP/" > /dev/null 2>&1 && break
    sleep 0.1
done
case "$MODE" in
multi)
    TOK=$("$B/bench/mint_tokens" "$D/wallet-1.pem" w1 1 1000000000 3600)
    WRK_ARGS=(-H "Authorization: Mandate $TOK")
    ;;
single)
    "$B/bench/mint_tokens" "$D/wallet-1.pem" w1 "${TOKENS:-200000}" 1 3600 > "$D/tokens.txt"
    export TOKENS_FILE=$D/tokens.txt
    WRK_ARGS=(-s "$HARNESS/rotate-tokens.lua")
    ;;
*) echo "MODE=multi|single" >&2; exit 1 ;;
esac

echo "commit.sh: MODE=$MODE, gateway pid $GW ($BUILD, source $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- audit || echo ' + uncommitted audit/')), dir $D"
metric() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
iowrite() { awk '$1 == "write_bytes:" { print $2 }' "/proc/$GW/io"; }
E0=$(metric mandate_audit_entries_total) W0=$(iowrite)
(while :; do stat -c %s "$D/gateway.db-wal" 2> /dev/null || echo 0; sleep 0.1; done > "$D/wal-sizes.txt") &
SAMPLER=$!
wrk -t1 -c32 -d"${SECS}s" --latency "${WRK_ARGS[@]}" "$URL" > "$D/wrk.txt"
sleep 1
E1=$(metric mandate_audit_entries_total) W1=$(iowrite)
kill "$SAMPLER"; SAMPLER=
curl -s "http://127.0.0.1:$ADMIN/metrics" > "$D/metrics.txt"
grep -E "Requests/sec|Latency |^ +(50|99)%|Non-2xx" "$D/wrk.txt" | sed 's/^ */  wrk: /'
awk -v e0="$E0" -v e1="$E1" -v w0="$W0" -v w1="$W1" -v secs="$SECS" '
    /^mandate_audit_commit_seconds_bucket/ { split($1, a, "\""); cb[++nc] = a[2]; cc[nc] = $2 }
    /^mandate_audit_batch_entries_count/ { batches = $2 }
    function q(p,   i) { for (i = 1; i <= nc; i++) if (cc[i] >= p * cc[nc]) return cb[i]; }
    END {
        for (i = 1; i <= nc; i++) if (cc[i] < cc[nc]) top = i + 1
        printf "  entries: %d in %d s (%.0f/s), %d transactions, mean batch %.1f\n", e1 - e0, secs, (e1 - e0) / secs, batches, batches ? (e1 - e0) / batches : 0
        printf "  commit (BEGIN..COMMIT, bucket upper bounds, whole run): p50 <= %ss  p99 <= %ss  p99.9 <= %ss  largest <= %ss; over 10 ms: %d of %d\n", q(0.5), q(0.99), q(0.999), cb[top ? top : 1], cc[nc] - cc[8], cc[nc]
        printf "  disk written by the gateway: %.1f MB, %.0f bytes per entry\n", (w1 - w0) / 1048576, (e1 > e0 ? (w1 - w0) / (e1 - e0) : 0)
    }' "$D/metrics.txt"
grep '^mandate_audit_commit_seconds_bucket' "$D/metrics.txt" | awk '{ split($1, a, "\""); printf "%s<=%s ", $2, a[2] } END { print "" }' | sed 's/^/  buckets: /'
echo "  WAL file: largest $(sort -n "$D/wal-sizes.txt" | tail -1) bytes, at the end $(tail -1 "$D/wal-sizes.txt")"
