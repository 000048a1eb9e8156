#!/usr/bin/env bash
# bench/flood.sh [SECONDS] -- what a flood of garbage mandates costs the audit log and an honest
# client. One wrk client (-c32) sends `Authorization: Mandate garbage.garbage.garbage` for SECONDS
# (default 60) while a second one (-c1) sends a valid multi-use intent mandate (uses 1,000,000,
# exp = iat + 3600) and measures its latency; the valid client's p50/p99 is first measured
# unloaded (UNLOADED_S, default 10 s). Then, unless FLOOD_ONLY=0, the flood runs SECONDS again
# alone, so that the growth of the database it causes is measured without the valid client's own
# (legitimate) entries. Growth = size of gateway.db + gateway.db-wal after - before.
# The gateway's per-client denial budget `audit.denials_per_s` stays at its default (50).
# Pass: growth caused by the flood < 1 MB; valid p99 under flood <= 2 x unloaded p99.
# Everything on 127.0.0.1, free ports, a fresh temporary directory (its path is printed),
# processes stopped by PID with SIGTERM, the whole run bounded by MAX_S (default 300 s).
# Environment: WORKERS (default 2), BUILD (default build/hf), KEEP=0 removes the directory,
# TMPDIR where it is made (default /tmp; /dev/shm takes the disk out of the figures).
set -euo pipefail
SECS=${1:-60}
UNLOADED_S=${UNLOADED_S:-10}
MAX_S=${MAX_S:-300}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/harness.sh"
need_harness upstream-nginx.conf
BUILD=${BUILD:-build/hf}
B=$ROOT/$BUILD
command -v wrk > /dev/null || { echo "needs wrk (apt-get install -y wrk)" >&2; exit 1; }
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX_BIN" ] || { echo "needs nginx (apt-get install -y nginx)" >&2; exit 1; }
make -C "$ROOT" -s BUILD="$BUILD" all
D=$(mktemp -d "${TMPDIR:-/tmp}/bench-flood.XXXXXX")

GW= NG= WD= FL=
cleanup() {
    set +e
    [ -n "$WD" ] && kill "$WD" 2> /dev/null
    [ -n "$FL" ] && kill -TERM "$FL" 2> /dev/null
    if [ -n "$GW" ] && kill -0 "$GW" 2> /dev/null; then
        kill -TERM "$GW"
        wait "$GW"
        echo "gateway exit status after SIGTERM: $?"
    fi
    [ -n "$NG" ] && kill -TERM "$NG" 2> /dev/null && wait "$NG" 2> /dev/null
    if [ -f "$D/gateway.log" ]; then # keep what is not an access line
        grep -v '"type":"access"' "$D/gateway.log" > "$D/gateway.notices.log"
        rm -f "$D/gateway.log"
    fi
    [ "${KEEP:-1}" = 0 ] && rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
(trap 'kill $S 2> /dev/null; exit 0' TERM; sleep "$MAX_S" & S=$!; wait $S
 echo "flood.sh: watchdog after ${MAX_S}s" >&2; kill -TERM $$) &
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
"$B/mandate-gateway" --check-config --config "$D/gateway.json" > /dev/null
"$B/mandate-gateway" --config "$D/gateway.json" 2> "$D/gateway.log" &
GW=$!
for i in $(seq 50); do
    curl -sf "http://127.0.0.1:$ADMIN/readyz" > /dev/null 2>&1 && curl -s "http://127.0.0.1:$UP/" > /dev/null 2>&1 && break
    sleep 0.1
done
TOK=$("$B/bench/mint_tokens" "$D/wallet-1.pem" w1 1 1000000 3600)
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Mandate $TOK" "$URL")" = 200 ] ||
    { echo "the valid mandate is not accepted" >&2; exit 1; }

dbsize() { stat -c %s "$D/gateway.db" "$D/gateway.db-wal" 2> /dev/null | awk '{s += $1} END {print s + 0}'; }
# Logical size: pages a reader sees (gateway.db with the committed frames of the WAL applied);
# the files alone can hide growth, since SQLite reuses a WAL file from its start after a checkpoint.
logical() { sqlite3 -readonly "$D/gateway.db" 'PRAGMA page_count' 'PRAGMA page_size' 2> /dev/null | paste -sd' ' | awk '{print $1 * $2}'; }
mb() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f MB (%d -> %d bytes)", (b - a) / 1048576, a, b}'; }
maxseq() { sqlite3 -readonly "$D/gateway.db" 'SELECT coalesce(max(seq), 0) FROM entries' 2> /dev/null || echo 0; }
# wrk --latency output -> "p50_us p99_us req_per_s non2xx_and_errors requests"
wrkfig() {
    awk 'function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /m$/) return v * 60e6; return v * 1e6 }
         $1 == "50%" { p50 = us($2) } $1 == "99%" { p99 = us($2) }
         /Requests\/sec/ { rps = $2 } /requests in/ { n = $1 }
         /Non-2xx/ { bad += $NF } /Socket errors/ { gsub(",", ""); bad += $4 + $6 + $8 + $10 }
         END { printf "%.0f %.0f %.0f %d %d\n", p50, p99, rps, bad, n }' "$1"
}
# What the entries after seq $1 are: count and bytes of the entries by kind and code.
breakdown() {
    sqlite3 -readonly "$D/gateway.db" "SELECT json_extract(CAST(entry AS TEXT), '\$.kind') AS k,
        coalesce(json_extract(CAST(entry AS TEXT), '\$.code'), '') AS c, count(*),
        sum(length(entry)) FROM entries WHERE seq > $1 GROUP BY k, c ORDER BY 3 DESC" |
        awk -F'|' '{printf "    %-15s %-22s %8d entries %10d bytes\n", $1, $2, $3, $4}'
}

echo "flood.sh: gateway pid $GW on :$PORT (admin :$ADMIN), upstream nginx :$UP, dir $D"
echo "gateway source: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- core gateway audit || echo ' + uncommitted changes in core/gateway/audit')"
wrk -t1 -c1 -d2s -H "Authorization: Mandate $TOK" "$URL" > /dev/null # warm-up

# 1. the valid client alone
wrk -t1 -c1 -d"${UNLOADED_S}s" --latency -H "Authorization: Mandate $TOK" "$URL" > "$D/valid-unloaded.txt"
read -r U50 U99 URPS UBAD UN < <(wrkfig "$D/valid-unloaded.txt")
echo "valid client alone (c=1, ${UNLOADED_S}s): p50=${U50}us p99=${U99}us ${URPS} req/s, $UN requests, errors+non-2xx=$UBAD"

# 2. the flood, with the valid client measuring beside it
S0=$(dbsize) L0=$(logical) Q0=$(maxseq)
wrk -t1 -c32 -d"${SECS}s" -H "Authorization: Mandate garbage.garbage.garbage" "$URL" > "$D/flood.txt" &
FL=$!
wrk -t1 -c1 -d"${SECS}s" --latency -H "Authorization: Mandate $TOK" "$URL" > "$D/valid-flood.txt"
wait "$FL" || true
FL=
sleep 2 # the last second's denial_summary and outcomes reach the disk
S1=$(dbsize) L1=$(logical) Q1=$(maxseq)
read -r F50 F99 FRPS FBAD FN < <(wrkfig "$D/valid-flood.txt")
read -r _ _ GRPS GBAD GN < <(wrkfig "$D/flood.txt")
echo "flood (c=32, ${SECS}s): $GN requests, ${GRPS} req/s, non-2xx+errors=$GBAD"
echo "valid client under flood (c=1, ${SECS}s): p50=${F50}us p99=${F99}us ${FRPS} req/s, $FN requests, errors+non-2xx=$FBAD"
echo "database growth during flood + valid client: files (db + wal) $(mb "$S0" "$S1"), logical $(mb "$L0" "$L1"), entries $Q0 -> $Q1:"
breakdown "$Q0"

# 3. the flood alone
if [ "${FLOOD_ONLY:-1}" != 0 ]; then
    sleep 1
    S2=$(dbsize) L2=$(logical) Q2=$(maxseq)
    wrk -t1 -c32 -d"${SECS}s" -H "Authorization: Mandate garbage.garbage.garbage" "$URL" > "$D/flood-alone.txt"
    sleep 2
    S3=$(dbsize) L3=$(logical) Q3=$(maxseq)
    read -r _ _ HRPS HBAD HN < <(wrkfig "$D/flood-alone.txt")
    echo "flood alone (c=32, ${SECS}s): $HN requests, ${HRPS} req/s, non-2xx+errors=$HBAD"
    echo "database growth during flood alone: files (db + wal) $(mb "$S2" "$S3"), logical $(mb "$L2" "$L3"), entries $Q2 -> $Q3:"
    breakdown "$Q2"
    FGROWTH=$((S3 - S2)) LGROWTH=$((L3 - L2))
else
    FGROWTH=$((S1 - S0)) LGROWTH=$((L1 - L0))
fi

curl -s "http://127.0.0.1:$ADMIN/metrics" > "$D/metrics.txt"
grep -E '^mandate_(requests_total|decisions_total|audit_(entries|dropped)[a-z_]*) ' "$D/metrics.txt" | grep -v ' 0$' || true
grep -E '^mandate_audit_[a-z_]*(drop|denial|summar)' "$D/metrics.txt" || true
ls -l "$D"/gateway.db* | awk '{printf "  %s %d\n", $NF, $5}'
NOTICES=$(grep -v '"type":"access"' "$D/gateway.log" || true)
echo "gateway log: $(wc -l < "$D/gateway.log") lines, $(echo "$NOTICES" | grep -c '"level":"error"' || true) errors, $(echo "$NOTICES" | grep -c '"level":"warn"' || true) warnings (first 5 below)"
echo "$NOTICES" | grep '"level":"\(error\|warn\)"' | head -5 || true
kill -0 "$GW" 2> /dev/null || echo "GATEWAY DIED (see $D/gateway.notices.log)"

awk -v fg="$FGROWTH" -v g="$LGROWTH" -v u="$U99" -v f="$F99" -v only="${FLOOD_ONLY:-1}" 'BEGIN {
    printf "growth caused by the flood%s = %.3f MB logical (files db + wal: %.3f MB): %s (< 1 MB)\n", only != 0 ? " (flood alone)" : " (with the valid client)", g / 1048576, fg / 1048576, g < 1048576 && fg < 1048576 ? "PASS" : "FAIL"
    printf "valid p99 under flood = %d us vs unloaded %d us (x%.2f): %s (<= 2x)\n", f, u, u ? f / u : 0, f <= 2 * u ? "PASS" : "FAIL"
}'
