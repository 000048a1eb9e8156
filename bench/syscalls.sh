#!/usr/bin/env bash
# bench/syscalls.sh -- system calls per request of the gateway and of the nginx proxy, by kind.
# Not run directly: `RUNNER=bench/syscalls.sh bench/gateway.sh multi|single` prepares the gateway
# and the request environment, then execs this. It starts the harness's upstream and proxy nginx
# and the gateway, warms each up, then for c=32 and c=1 runs wrk for DURATION seconds against each
# target while `perf stat` counts every syscalls:sys_enter_* tracepoint of that target's processes
# (counting only: the calls are not traced one by one, so batching is not disturbed much).
# Prints, per target and concurrency, the context switches per request, and the calls per request
# of every kind above 0.05 and their total.
# Environment: DURATION=5 CONNS=32 LAT_CONNS=1.
set -uo pipefail
: "${HARNESS:?run through bench/gateway.sh}" "${GATEWAY_URL:?}" "${GATEWAY_START:?}"
BENCH_DIR=$HARNESS
. "$HARNESS/lib.sh"
. "$(dirname "$0")/harness.sh"
DURATION=${DURATION:-5} CONNS=${CONNS:-32} LAT_CONNS=${LAT_CONNS:-1}
OUT=$(mktemp -d /tmp/bench-syscalls.XXXXXX)
trap 'bench_cleanup' EXIT
trap 'log "interrupted"; exit 130' INT TERM
ensure_tools
bench_request_args

start_baseline_nginx
start_group gateway "$GATEWAY_START"
GW_GROUP=$GROUP_PID
wait_http "$GATEWAY_URL" 30 "${CURL_H[@]}" || die "the gateway did not answer on $GATEWAY_URL"

# measure NAME URL CONNS PIDS...: wrk under perf stat, then calls per request by kind
measure() {
    local name=$1 url=$2 conns=$3; shift 3
    local pids; pids=$(echo "$@" | tr ' ' ',')
    wrk -t1 -c"$conns" -d2s "${WRK_EXTRA[@]}" "$url" > /dev/null 2>&1 # warm-up
    perf stat -x, -e 'syscalls:sys_enter_*' -e context-switches -p "$pids" -o "$OUT/$name-$conns.perf" &
    local perf_pid=$!
    sleep 0.5 # perf attaches; what it counts is divided by what wrk reports, so a margin is fine
    wrk -t1 -c"$conns" -d"${DURATION}s" "${WRK_EXTRA[@]}" "$url" > "$OUT/$name-$conns.wrk" 2>&1
    kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null
    local reqs; reqs=$(awk '/requests in/ {print $1}' "$OUT/$name-$conns.wrk")
    awk -F, -v reqs="$reqs" -v name="$name" -v conns="$conns" '
        $3 == "context-switches" { cs = $1; next }
        $1 ~ /^[0-9]+$/ && $1 > 0 { n = $3; sub("syscalls:sys_enter_", "", n); c[n] = $1; t += $1 }
        END {
            printf "%-10s c=%-3s %8d requests  %5.2f context switches and %5.2f syscalls/request:",
                name, conns, reqs, cs / reqs, t / reqs
            for (n in c) if (c[n] / reqs >= 0.05) printf " %s %.2f", n, c[n] / reqs
            printf "\n"
        }' "$OUT/$name-$conns.perf"
}

for conns in $CONNS $LAT_CONNS; do
    measure "${GATEWAY_NAME:-gateway}" "$GATEWAY_URL" "$conns" $(tier_pids "pgrp:$GW_GROUP")
    measure proxy "http://127.0.0.1:$PROXY_PORT$BENCH_PATH" "$conns" $(tier_pids "nginx:$PROXY_PID")
done
log "raw counts in $OUT"
