#!/usr/bin/env bash
# bench/prune.sh [N] [FIRST] -- does the gateway's in-memory state stay bounded under a stream of
# distinct single-use mandates? Drives N (default 1,000,000) ES256 mandates with exp = iat + 10
# (clock_skew_s at its default 5) through the gateway to a loopback nginx, and reads the gateway's
# VmRSS and /metrics after the first FIRST (default 100,000) and after all N.
# Mandates are minted at the moment they are sent by $BUILD/bench/mandate_load (bench/
# mandate_load.c), so none is ever stale however slow the gateway goes.
# Pass: RSS(N) - RSS(FIRST) < 16 MB and mandate_state_lock_max_seconds < 1 ms.
# The lock hold is wall time: a holder the scheduler preempts holds the lock until it runs again,
# however little work it does (gateway workers, its writer, nginx and the load generator share the
# cores). Each sample therefore also prints the 1-minute load average and how often the gateway's
# threads were preempted (nonvoluntary_ctxt_switches); RT=1 runs the gateway at SCHED_FIFO 1 (needs
# root or CAP_SYS_NICE), where only interrupts and the hypervisor can preempt a holder: a
# diagnostic, not a way to pass.
# Everything on 127.0.0.1, free ports, a fresh temporary directory (kept: its path is printed),
# processes stopped by PID with SIGTERM; the whole run is bounded by MAX_S (default 330 s).
# Environment: CONNS (default 64), WORKERS (default 2), BUILD (default build/hf), RT=1, KEEP=0 to
# remove the directory at the end, KEEP_DB=1 to keep its audit database (removed by default: ~1.5 kB
# per mandate). If N is not reached within MAX_S, the figures are taken at what was reached.
set -euo pipefail
N=${1:-1000000}
FIRST=${2:-100000}
CONNS=${CONNS:-64}
MAX_S=${MAX_S:-330}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/harness.sh"
need_harness upstream-nginx.conf
BUILD=${BUILD:-build/hf}
B=$ROOT/$BUILD
command -v wrk > /dev/null || true
command -v nginx > /dev/null || [ -x /usr/sbin/nginx ] || { echo "needs nginx (apt-get install -y nginx)" >&2; exit 1; }
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
make -C "$ROOT" -s BUILD="$BUILD" all
D=$(mktemp -d /tmp/bench-prune.XXXXXX)
T0=$(date +%s)

GW= NG= WD=
cleanup() {
    set +e
    [ -n "$WD" ] && kill "$WD" 2> /dev/null
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
    [ "${KEEP_DB:-0}" = 1 ] || rm -f "$D"/gateway.db* # ~1.5 kB per mandate: 1.4 GB for 1M
    [ "${KEEP:-1}" = 0 ] && rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port) PORT=$(free_port) ADMIN=$(free_port)

# Upstream: the harness's nginx configuration on a free port, with a private prefix.
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
  "limits": {"max_ttl_s": 300},
  "rate_limit": {"per_agent_per_s": 1000000, "burst": 1000000},
  "issuers": [{"id": "wallet-1", "jwks_file": "wallet-1.jwks.json"}],
  "merchants": [{"id": "bench-shop", "upstream": "http://127.0.0.1:$UP",
                 "routes": [{"method": "GET", "path": "/v1/echo", "action": "echo"}]}],
  "log_level": "warn"
}
JSON
"$B/mandate-gateway" --check-config --config "$D/gateway.json" > /dev/null
RUN=()
[ "${RT:-0}" = 1 ] && RUN=(chrt -f 1)
"${RUN[@]}" "$B/mandate-gateway" --config "$D/gateway.json" 2> "$D/gateway.log" &
GW=$!
# A watchdog bounds the whole run: it signals this script, whose EXIT trap stops the rest.
(trap 'kill $S 2> /dev/null; exit 0' TERM; sleep "$MAX_S" & S=$!; wait $S
 echo "prune.sh: watchdog after ${MAX_S}s" >&2; kill -TERM $$) &
WD=$!

for i in $(seq 50); do
    curl -sf "http://127.0.0.1:$ADMIN/readyz" > /dev/null 2>&1 && curl -s "http://127.0.0.1:$UP/" > /dev/null 2>&1 && break
    sleep 0.1
done

# RSS (kB), jtis, lock max (s), lock p99 (bucket upper bound, s) from /proc and /metrics; the
# load average and the gateway threads' preemptions, to read the lock figures against.
sample() {
    local rss m cpu load preempted
    rss=$(awk '/^VmRSS/ {print $2}' /proc/$GW/status)
    cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' /proc/$GW/stat)
    load=$(cut -d' ' -f1 /proc/loadavg)
    preempted=$(cat /proc/$GW/task/*/status 2> /dev/null | awk '/^nonvoluntary_ctxt_switches/ {n += $2} END {print n + 0}')
    m=$(curl -s "http://127.0.0.1:$ADMIN/metrics")
    echo "$m" > "$D/metrics.$1.txt"
    echo "$m" | awk -v rss="$rss" -v cpu="$cpu" -v label="$1" -v load="$load" -v pre="$preempted" '
        /^mandate_state_entries\{table="jtis"\}/ { jtis = $2 }
        /^mandate_state_lock_max_seconds/ { max = $2 }
        /^mandate_state_lock_seconds_bucket/ { split($1, a, "\""); b[++n] = a[2]; c[n] = $2 }
        /^mandate_state_lock_seconds_count/ { cnt = $2 }
        /^mandate_state_lock_seconds_sum/ { sum = $2 }
        END {
            for (i = 1; i <= n; i++) if (c[i] >= 0.99 * c[n]) { p99 = b[i]; break }
            for (i = 1; i <= n; i++) if (c[i] >= 0.5 * c[n]) { p50 = b[i]; break }
            for (i = 1; i <= n; i++) if (b[i] == "0.001") le1ms = c[i]
            printf "%s rss_kb=%d jtis=%d lock_max_s=%s lock_p50_le_s=%s lock_p99_le_s=%s lock_mean_us=%.2f admissions=%d over_1ms=%d gateway_cpu_s=%s load1=%s gateway_preempted=%d\n",
                   label, rss, jtis, max, p50, p99, cnt ? sum / cnt * 1e6 : 0, cnt, c[n] - le1ms, cpu, load, pre
        }'
}

echo "prune.sh: $N single-use ES256 mandates (exp = iat + 10, clock_skew_s 5), $CONNS connections, gateway pid $GW${RT:+ (RT=$RT)}, $(nproc) cores, dir $D"
if git -C "$ROOT" rev-parse -q --verify HEAD > /dev/null 2>&1; then
    echo "gateway source: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- core gateway audit || echo ' + uncommitted changes in core/gateway/audit')"
else
    echo "gateway source: $ROOT (not a git checkout)"
fi
sample start | tee "$D/samples.txt"
LEFT=$((MAX_S - ($(date +%s) - T0) - 20))
L1=$("$B/bench/mandate_load" "$D/wallet-1.pem" w1 "$PORT" /v1/echo "$FIRST" "$CONNS" 10 "$LEFT" || true)
echo "load 1: $L1"
DONE1=$(echo "$L1" | sed -n 's/^requests=\([0-9]*\).*/\1/p')
S1=$(sample "after_$DONE1"); echo "$S1" | tee -a "$D/samples.txt"
LEFT=$((MAX_S - ($(date +%s) - T0) - 20))
L2=$("$B/bench/mandate_load" "$D/wallet-1.pem" w1 "$PORT" /v1/echo "$((N - FIRST))" "$CONNS" 10 "$LEFT" || true)
echo "load 2: $L2"
DONE=$((DONE1 + $(echo "$L2" | sed -n 's/^requests=\([0-9]*\).*/\1/p')))
S2=$(sample "after_$DONE"); echo "$S2" | tee -a "$D/samples.txt"
SECS=$(echo "$L1 $L2" | grep -o 'seconds=[0-9.]*' | awk -F= '{s += $2} END {print s}')
awk -v d="$DONE" -v n="$N" -v s="$SECS" 'BEGIN {printf "%d of %d mandates through the gateway in %.0f s: %.0f/s%s\n", d, n, s, d / s, d < n ? " (stopped by the time bound)" : ""}'

ls -l "$D"/gateway.db* | awk '{s += $5} END {printf "database (gateway.db + -wal + -shm): %.1f MB\n", s / 1048576}'
grep -h '^mandate_decisions_total\|^mandate_requests_total' "$D/metrics.after_$DONE.txt" | grep -v ' 0$' || true
NOTICES=$(grep -v '"type":"access"' "$D/gateway.log" || true)
echo "gateway log: $(wc -l < "$D/gateway.log") lines, $(echo "$NOTICES" | grep -c '"level":"error"' || true) errors, $(echo "$NOTICES" | grep -c '"level":"warn"' || true) warnings (first 5 below)"
echo "$NOTICES" | grep '"level":"\(error\|warn\)"' | head -5 || true
kill -0 "$GW" 2> /dev/null || echo "GATEWAY DIED (see $D/gateway.log)"

get() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}'; }
R1=$(get "$S1" rss_kb) R2=$(get "$S2" rss_kb) MAX=$(get "$S2" lock_max_s)
OVER=$(get "$S2" over_1ms) ADM=$(get "$S2" admissions) PRE=$(get "$S2" gateway_preempted)
awk -v r1="$R1" -v r2="$R2" -v max="$MAX" -v first="$DONE1" -v n="$DONE" -v over="$OVER" -v adm="$ADM" -v pre="$PRE" 'BEGIN {
    d = (r2 - r1) / 1024
    printf "RSS(%d) - RSS(%d) = %.1f MB (%.1f -> %.1f MB): %s (< 16 MB)\n", n, first, d, r1 / 1024, r2 / 1024, d < 16 ? "PASS" : "FAIL"
    printf "admission lock max = %.3f ms: %s (< 1 ms); %d of %d holds over 1 ms; gateway threads preempted %d times\n",
           max * 1000, max < 0.001 ? "PASS" : "FAIL", over, adm, pre
}'
