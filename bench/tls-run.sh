#!/usr/bin/env bash
# bench/tls-run.sh -- TLS gateway vs TLS nginx proxy, interleaved, on this machine and in one run.
# Not run directly: `TLS=1 RUNNER=bench/tls-run.sh bench/gateway.sh multi|single` prepares the
# gateway (https on 18082), the certificate ($TLS_DIR) and the request environment, then execs this.
#
# Why not the harness's run-baseline.sh: its proxy target is fixed (proxy-nginx.conf, plain
# http://127.0.0.1:18081), so it cannot compare a TLS gateway with a TLS nginx. This script uses
# the harness's lib.sh (start/stop by recorded PID, CPU accounting from /proc/PID/stat) and does
# what run-baseline.sh does for three targets:
#   proxy      plain nginx proxy   http://127.0.0.1:18081  (the harness's proxy-nginx.conf)
#   proxy-tls  TLS nginx proxy     https://127.0.0.1:18443 (bench/proxy-nginx-tls.conf)
#   gw-tls-*   the TLS gateway     $GATEWAY_URL
# all in front of the harness's upstream nginx on 18080. A 2 s warm-up per target, then REPS rounds
# (target order rotated each round) of wrk -t1 -c$CONNS -d${DURATION}s --latency (tput) and
# wrk -t1 -c1 (lat). cpu-us/req = utime+stime of the target's own processes / requests.
# wrk keeps its connections: this is the per-request cost on established TLS connections
# (handshakes: CONNS per wrk run). Results: $OUT_DIR (/tmp/bench-results/tls-<time>).
# Environment: DURATION=10 REPS=3 CONNS=32 LAT_CONNS=1 WARMUP=2 WRK_TIMEOUT=2s PIN=0.
set -uo pipefail
: "${HARNESS:?run through bench/gateway.sh}" "${TLS_DIR:?run with TLS=1 bench/gateway.sh}"
: "${GATEWAY_URL:?}" "${GATEWAY_START:?}"
BENCH_DIR=$HARNESS
. "$HARNESS/lib.sh"
. "$(dirname "$0")/harness.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
DURATION=${DURATION:-10} REPS=${REPS:-3} CONNS=${CONNS:-32} LAT_CONNS=${LAT_CONNS:-1}
WARMUP=${WARMUP:-2} WRK_TIMEOUT=${WRK_TIMEOUT:-2s}
BENCH_PATH=${BENCH_PATH:-/} GATEWAY_NAME=${GATEWAY_NAME:-gw-tls}
OUT_DIR=${OUT_DIR:-/tmp/bench-results/tls-$(date +%Y%m%d-%H%M%S)}
TLS_PORT=18443
mkdir -p "$OUT_DIR/raw"

WRK_PID=
trap '[ -n "$WRK_PID" ] && kill -TERM "$WRK_PID" 2>/dev/null; bench_cleanup' EXIT
trap 'log "interrupted"; exit 130' INT TERM
ensure_tools
bench_request_args
{
    echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "software: $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), $(openssl version | cut -d' ' -f1-2)"
    echo "settings: DURATION=${DURATION}s REPS=$REPS CONNS=$CONNS LAT_CONNS=$LAT_CONNS PIN=$PIN BENCH_PATH=$BENCH_PATH cert=$(openssl x509 -in "$TLS_DIR/cert.pem" -noout -text | awk '/Public Key Algorithm|NIST CURVE/{printf "%s ", $NF}')"
    echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) at start"
} | tee "$OUT_DIR/info.txt"

start_baseline_nginx
sed "s#@TLS_DIR@#$TLS_DIR#g" "$HERE/proxy-nginx-tls.conf" > "$OUT_DIR/proxy-nginx-tls.conf"
start_nginx proxy-tls "$OUT_DIR/proxy-nginx-tls.conf" "$TLS_PORT" "$PROXY_WORKERS"; TLSP_PID=$NGINX_PID
start_group "$GATEWAY_NAME" "$GATEWAY_START" "$OUT_DIR/gateway.log"
T_NAME=(proxy proxy-tls "$GATEWAY_NAME")
T_URL=("http://127.0.0.1:$PROXY_PORT$BENCH_PATH" "https://127.0.0.1:$TLS_PORT$BENCH_PATH" "$GATEWAY_URL")
T_ENTRY=("nginx:$PROXY_PID" "nginx:$TLSP_PID" "pgrp:$GROUP_PID")
wait_http "$GATEWAY_URL" 30 || die "$GATEWAY_NAME not answering at $GATEWAY_URL (log: $OUT_DIR/gateway.log)"
for i in 1 2; do   # curl verifies both certificates (CURL_CA_BUNDLE from bench/gateway.sh)
    code=$(curl -s -o "$OUT_DIR/probe-$i.body" -w '%{http_code} %{ssl_verify_result}' --max-time 5 "${CURL_H[@]}" "${T_URL[$i]}")
    log "${T_NAME[$i]} probe: HTTP/verify $code, body: $(head -c 200 "$OUT_DIR/probe-$i.body")"
done

# run_wrk IDX MODE REP POS CONNS DUR RAW [CSV] -- as run-baseline.sh
run_wrk() {
    local i=$1 mode=$2 rep=$3 pos=$4 conns=$5 dur=$6 raw=$7 csv=${8:-} pids c0 c1 s0 s1 load1 rc p req cpu
    pids=$(tier_pids "${T_ENTRY[$i]}")
    load1=$(cut -d' ' -f1 /proc/loadavg)
    c0=$(cpu_ticks $pids); s0=$(steal_ticks)
    timeout $(( dur + 30 )) "${PIN_CLIENT[@]}" wrk -t1 -c"$conns" -d"${dur}s" --latency \
        --timeout "$WRK_TIMEOUT" "${WRK_EXTRA[@]}" "${T_URL[$i]}" > "$raw" 2>&1 &
    WRK_PID=$!; wait "$WRK_PID"; rc=$?; WRK_PID=
    c1=$(cpu_ticks $pids); s1=$(steal_ticks)
    p=$(awk '
    function us(v,   n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "ms") return n * 1000; if (u == "s") return n * 1e6; return n }
    /^ +50%/ { p50 = us($2) } /^ +99%/ { p99 = us($2) } / requests in / { req = $1 }
    /Socket errors:/ { gsub(/,/, ""); se = $4 + $6 + $8 + $10 } /Non-2xx or 3xx/ { n2 = $NF }
    /^Requests\/sec:/ { rps = $2 }
    END { printf "%s,%s,%s,%s,%d,%d\n", (rps == "" ? "NA" : rps), (p50 == "" ? "NA" : p50),
          (p99 == "" ? "NA" : p99), (req == "" ? 0 : req), se, n2 }' "$raw")
    req=$(echo "$p" | cut -d, -f4)
    if [ "${req:-0}" -gt 0 ]; then
        cpu=$(awk -v d=$(( c1 - c0 )) -v hz="$CLK_TCK" -v n="$req" 'BEGIN{printf "%.2f", d * 1e6 / hz / n}')
    else cpu=NA; fi
    [ "$rc" = 0 ] || log "WARNING: wrk exit $rc for ${T_NAME[$i]} $mode (see $raw)"
    [ -z "$csv" ] && return 0
    echo "${T_NAME[$i]},$mode,$conns,$rep,$pos,$p,$cpu,$(( s1 - s0 )),$load1,$rc" >> "$csv"
    printf '  round %s  %-5s %-16s c=%-3s %s\n' "$rep" "$mode" "${T_NAME[$i]}" "$conns" \
        "$(echo "$p" | awk -F, -v c="$cpu" '{printf "%8.0f req/s  p50 %7.0f us  p99 %7.0f us  cpu/req %s us  errs %d", $1, $2, $3, c, $5 + $6}')" >&2
}

NT=${#T_NAME[@]}
for (( i=0; i<NT; i++ )); do run_wrk "$i" warmup 0 0 "$CONNS" "$WARMUP" "$OUT_DIR/raw/${T_NAME[$i]}-warmup.txt"; done
CSV=$OUT_DIR/results.csv
echo "target,mode,conns,round,pos,rps,p50_us,p99_us,requests,socket_errors,non2xx,cpu_us_per_req,steal_ticks,load1,wrk_rc" > "$CSV"
for (( rep=1; rep<=REPS; rep++ )); do
    for mode in tput lat; do
        if [ "$mode" = tput ]; then c=$CONNS; else c=$LAT_CONNS; fi
        for (( k=0; k<NT; k++ )); do
            i=$(( (k + rep - 1) % NT ))
            run_wrk "$i" "$mode" "$rep" "$k" "$c" "$DURATION" "$OUT_DIR/raw/${T_NAME[$i]}-$mode-r$rep.txt" "$CSV"
        done
    done
done
log "load at end of wrk runs: $(cut -d' ' -f1-3 /proc/loadavg)"
bench_cleanup

# medians per target and mode; ratios as ratio of medians [median of per-round paired ratios]
awk -F, -v targets="${T_NAME[*]}" -v reps="$REPS" '
function med(a, n,   i, j, t) { if (n == 0) return "NA"
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function col(t, m, c,   r, n) { n = 0; delete A; for (r = 1; r <= reps; r++) if ((t, m, r, c) in V && V[t, m, r, c] != "NA") A[++n] = V[t, m, r, c] + 0; return med(A, n) }
function pr(x, y, m, c,   r, n) { n = 0; delete A
    for (r = 1; r <= reps; r++) if (V[y, m, r, c] + 0 > 0 && V[x, m, r, c] != "NA") A[++n] = V[x, m, r, c] / V[y, m, r, c]
    return med(A, n) }
function q(x, y) { return (x != "NA" && y != "NA" && y > 0) ? sprintf("%6.3f", x / y) : "    NA" }
NR == 1 { next }
{ for (c = 6; c <= 12; c++) V[$1, $2, $4, c] = $c; E[$1, $2] += $10 + $11; if ($14 > L) L = $14 }
END { nt = split(targets, T, " ")
    for (mi = 1; mi <= 2; mi++) { m = mi == 1 ? "tput" : "lat"
        printf "\n%s -- median of %d interleaved rounds\n%-16s %9s %9s %9s %11s %6s\n", m == "tput" ? "THROUGHPUT (c=32)" : "LATENCY (c=1)", reps, "target", "req/s", "p50 us", "p99 us", "cpu-us/req", "errors"
        for (i = 1; i <= nt; i++) { t = T[i]
            for (c = 6; c <= 12; c++) M[t, m, c] = col(t, m, c)
            printf "%-16s %9.0f %9.0f %9.0f %11s %6d\n", t, M[t, m, 6], M[t, m, 7], M[t, m, 8], M[t, m, 12], E[t, m]
            if (E[t, m] > 0) bad = bad sprintf("*** INVALID: %s had %d errors in %s mode ***\n", t, E[t, m], m) } }
    printf "%s\nRATIOS (ratio of medians [median of paired per-round ratios])\n%-26s %17s %17s %17s %17s\n", bad, "pair", "req/s c=32", "p50 c=1", "p99 c=1", "cpu-us/req c=32"
    for (a = 2; a <= nt; a++) for (b = 1; b < a; b++) { x = T[a]; y = T[b]
        printf "%-26s %s [%6.3f] %s [%6.3f] %s [%6.3f] %s [%6.3f]\n", x "/" y,
            q(M[x, "tput", 6], M[y, "tput", 6]), pr(x, y, "tput", 6), q(M[x, "lat", 7], M[y, "lat", 7]), pr(x, y, "lat", 7),
            q(M[x, "lat", 8], M[y, "lat", 8]), pr(x, y, "lat", 8), q(M[x, "tput", 12], M[y, "tput", 12]), pr(x, y, "tput", 12) }
    printf "max 1-min load average during the wrk runs: %s\n", L }' "$CSV" | tee "$OUT_DIR/summary.txt"
echo "raw wrk output: $OUT_DIR/raw/   per-run rows: $CSV   gateway log: $OUT_DIR/gateway.log" | tee -a "$OUT_DIR/summary.txt"
