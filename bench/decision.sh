#!/usr/bin/env bash
# bench/decision.sh -- the cost of a decision through AuthZEN and forward-auth (SPEC §8) next to a
# proxied request, on one gateway, interleaved: REPS rounds (order rotated) of wrk c=$CONNS and
# c=1 for DURATION s against
#   proxy         GET /v1/echo through the gateway to the upstream nginx (one multi-use mandate)
#   authzen       POST /access/v1/evaluation with the same mandate in the body
#   forward-auth  GET /forward-auth with X-Original-Method/-URI and the same Authorization
# Every answer is a decision with a durable audit entry; only the proxy also forwards. Prints
# req/s, p50/p99 and the gateway's CPU µs per request (utime+stime from /proc/PID/stat).
# Needs the optional harness (HARNESS, see bench/harness.sh) for its upstream nginx, and wrk.
# Environment: DURATION=5 REPS=3 CONNS=32 WORKERS=2.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/harness.sh"
need_harness lib.sh upstream-nginx.conf
BENCH_DIR=$HARNESS
. "$HARNESS/lib.sh"
DURATION=${DURATION:-5} REPS=${REPS:-3} CONNS=${CONNS:-32}
B=$ROOT/build D=/tmp/bench-decision
make -C "$ROOT" -s all
rm -rf "$D" && mkdir -p "$D"
trap 'kill -TERM "${GW:-0}" 2>/dev/null; bench_cleanup' EXIT
"$B/mandate-wallet" keygen --alg ES256 --kid w1 --out "$D/wallet.pem" --jwks "$D/wallet.jwks.json"
"$B/mandate-wallet" keygen --alg EdDSA --kid cp --out "$D/cp.pem" --jwks "$D/cp.jwks.json"
token=decision-bench
cat > "$D/gateway.json" <<JSON
{
  "listen": "127.0.0.1:18082", "workers": ${WORKERS:-2}, "database": "$D/gateway.db",
  "admin": {"listen": "127.0.0.1:18083", "token_sha256": "$(printf x | sha256sum | cut -d' ' -f1)"},
  "decision": {"listen": "127.0.0.1:18084",
               "token_sha256": "$(printf %s $token | sha256sum | cut -d' ' -f1)"},
  "audit": {"origin": "bench/audit", "checkpoint_key": "$D/cp.pem", "checkpoint_every": 10000},
  "limits": {"max_ttl_s": 86400, "clock_skew_s": 5},
  "rate_limit": {"per_agent_per_s": 1000000, "burst": 1000000},
  "issuers": [{"id": "wallet-1", "jwks_file": "$D/wallet.jwks.json"}],
  "merchants": [{"id": "bench-shop", "upstream": "http://127.0.0.1:18080",
                 "routes": [{"method": "GET", "path": "/v1/echo", "action": "echo"}]}],
  "log_level": "warn"
}
JSON
mandate=$("$B/bench/mint_tokens" "$D/wallet.pem" w1 1 1000000000 7200)
agent=$(echo "$mandate" | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null | sed 's/.*"act":{"sub":"\([^"]*\)".*/\1/')
body='{"subject":{"type":"agent","id":"'$agent'","properties":{"mandate":"'$mandate'"}},'
body+='"action":{"name":"echo"},"resource":{"type":"route","id":"bench-shop",'
body+='"properties":{"method":"GET","path":"/v1/echo"}}}'
cat > "$D/authzen.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$body'
LUA
start_baseline_nginx
"$B/mandate-gateway" --config "$D/gateway.json" 2>/dev/null &
GW=$!
wait_http http://127.0.0.1:18083/livez 30 || die "the gateway did not start"
NAME=(proxy authzen forward-auth)
URL=(http://127.0.0.1:18082/v1/echo http://127.0.0.1:18084/access/v1/evaluation
     http://127.0.0.1:18084/forward-auth)
ARGS0=(-H "Authorization: Mandate $mandate")
ARGS1=(-s "$D/authzen.lua")
ARGS2=(-H "Authorization: Mandate $mandate" -H "X-Original-Method: GET" -H "X-Original-URI: /v1/echo")
probe=$(curl -s -H "Authorization: Bearer $token" -d "$body" "${URL[1]}" || true)
case "$probe" in *'"decision":true'*) ;; *) die "authzen probe is not an allow: $probe" ;; esac
probe=$(curl -s -o /dev/null -w '%{http_code}' "${ARGS2[@]}" "${URL[2]}" || true)
[ "$probe" = 200 ] || die "forward-auth probe answered $probe, not 200"

run() { # run IDX CONNS -> "rps p50_us p99_us cpu_us_per_req errors"
    local i=$1 c=$2 c0 c1 args raw
    eval "args=(\"\${ARGS$i[@]}\")"
    c0=$(cpu_ticks "$GW")
    raw=$(wrk -t1 -c"$c" -d"${DURATION}s" --latency "${args[@]}" "${URL[$i]}" 2>&1)
    c1=$(cpu_ticks "$GW")
    echo "$raw" | awk -v t=$(( c1 - c0 )) -v hz="$(getconf CLK_TCK)" '
        function us(v,   n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "ms") return n * 1000; if (u == "s") return n * 1e6; return n }
        /^ +50%/ { p50 = us($2) } /^ +99%/ { p99 = us($2) } / requests in / { req = $1 }
        /Non-2xx or 3xx/ { err = $NF } /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        /^Requests\/sec:/ { rps = $2 }
        END { printf "%.0f %d %d %.1f %d\n", rps, p50, p99, req ? t / hz * 1e6 / req : 0, err }'
}
for mode in tput lat; do
    c=$CONNS; [ $mode = lat ] && c=1
    for r in $(seq 1 "$REPS"); do
        for k in 0 1 2; do
            i=$(( (k + r) % 3 ))
            echo "$mode ${NAME[$i]} $(run $i $c)" | tee -a "$D/results.txt"
        done
    done
done
echo
printf "%-6s %-13s %9s %8s %8s %11s %6s\n" mode target "req/s" "p50 us" "p99 us" "cpu-us/req" errors
sort -k1,1 -k2,2 -k3,3n "$D/results.txt" | awk '
    { k = $1 " " $2; n[k]++; v[k, n[k]] = $0 }
    END { for (k in n) { m = int((n[k] + 1) / 2); split(v[k, m], f, " ")
          printf "%-6s %-13s %9s %8s %8s %11s %6s\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7] } }' |
    sort
echo "(medians by req/s of $REPS rounds; errors must be 0; results: $D/results.txt)"
