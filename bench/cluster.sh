#!/usr/bin/env bash
# bench/cluster.sh -- the cost of a request with the local and with the postgres state backend
# (SPEC §6), same machine, same run: two gateways (local on :18082, postgres on :18085, node
# gw-a) in front of the harness's upstream nginx (:18080) and a throwaway PostgreSQL
# (scripts/pg-throwaway.sh, with pg_stat_statements), measured alternately with wrk:
#   multi    one mandate with a huge `uses` on every request (PostgreSQL: one UPDATE of one
#            mg_jti row per request; the signature check is cached per worker)
#   single   a mandate never sent before on every request (a signature check and a new jti)
#   priced   a new cart and payment mandate on every request, POST to a priced route (PostgreSQL:
#            the admission reserves spend, the outcome settles it)
# REPS rounds; in each, every mode runs on both gateways, the order of the two rotated. Per run:
# req/s, p50/p99, the gateway's CPU µs per request (utime+stime of its process, every thread,
# from /proc/PID/stat), PostgreSQL's (the postmaster, its live children and those it reaped),
# and the statements PostgreSQL executed per allowed request (pg_stat_statements' calls, every
# gateway statement: admissions, settlements, the control thread's revocation poll). Over the
# whole run it also divides pg_stat_database's xact_commit delta by the allowed requests.
# Tokens are minted before the rounds (bench/mint_tokens, bench/mint_carts) and streamed by
# bench/token-stream.lua so that no token is ever sent twice.
# Needs the optional harness (HARNESS, see bench/harness.sh) for lib.sh and its upstream nginx,
# wrk, and PostgreSQL's server binaries. Results: $D/results.txt (one line per run) and a summary.
# Environment: DURATION=10 REPS=5 CONNS=32 WORKERS=2 MODES="multi single priced" PRINCIPALS=1
#   BUILD=build   PG_FSYNC=0 (1: fsync and full_page_writes on, as a production server has them;
#   the throwaway runs without)   D=/tmp/bench-cluster (removed and made anew)
#   LAT=1   also run each mode at c=1 (latency) after the throughput rounds
#   HOLD=S TOKENS=N   set up (N token lines per mode), hold S seconds for profiling, no rounds
#   GW_LOG=1   each gateway's stderr to $D/NAME.log (an access line per request; default: none)
# bench/cluster.sh summary RESULTS...   the tables again, over the rounds of one or more runs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

# summary RESULTS...: medians per kind, mode and backend over every run in the files (several
# files: several runs' rounds together), and the postgres/local ratios paired by round.
summary() {
    printf "%-4s %-6s %-8s %8s %13s %6s %7s %7s %8s %8s %9s %10s %6s\n" kind mode backend "req/s" "min..max" \
        spread "p50us" "p99us" "gw-us/r" "pg-us/r" "total-us" "stmts/allow" errors
    awk '{ k = $1 " " $2 " " $3; n[k]++; rps[k, n[k]] = $5; p50[k, n[k]] = $6; p99[k, n[k]] = $7
           gw[k, n[k]] = $8; pg[k, n[k]] = $9; tot[k, n[k]] = $8 + $9; st[k, n[k]] = $10
           err[k] += $12 + $13 }
         function med(a, k, m,   i, j, v, x) { for (i = 1; i <= m; i++) v[i] = a[k, i]
             for (i = 2; i <= m; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
             return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2 }
         function lo(a, k, m,   i, x) { x = a[k, 1]; for (i = 2; i <= m; i++) if (a[k, i] < x) x = a[k, i]; return x }
         function hi(a, k, m,   i, x) { x = a[k, 1]; for (i = 2; i <= m; i++) if (a[k, i] > x) x = a[k, i]; return x }
         END { for (k in n) { m = n[k]; split(k, f, " "); r = med(rps, k, m)
                 printf "%-4s %-6s %-8s %8.0f %13s %5.0f%% %7.0f %7.0f %8.1f %8.1f %9.1f %10.3f %6d\n", f[1], f[2], f[3],
                        r, lo(rps, k, m) ".." hi(rps, k, m), (hi(rps, k, m) - lo(rps, k, m)) / r * 100,
                        med(p50, k, m), med(p99, k, m), med(gw, k, m), med(pg, k, m), med(tot, k, m),
                        med(st, k, m), err[k] } }' "$@" | sort -k1,1r -k2,2 -k3,3
    echo
    echo "postgres/local, median of the ratios paired by round (same round of one run, same mode):"
    awk '{ v[$1 " " $2 " " FILENAME ":" $4 " " $3] = $0 }
         END { for (k in v) { split(v[k], f, " "); if (f[3] != "local") continue; split(k, r, " ")
                 q = v[f[1] " " f[2] " " r[3] " postgres"]; if (q == "") continue; split(q, g, " ")
                 print f[1], f[2], g[5] / f[5], g[8] / f[8], (g[8] + g[9]) / f[8] } }' "$@" |
        sort -k1,1r -k2,2 | awk '{ k = $1 " " $2; n[k]++; a[k, n[k]] = $3; b[k, n[k]] = $4; c[k, n[k]] = $5 }
         function med(x, k, m,   i, j, v, y) { for (i = 1; i <= m; i++) v[i] = x[k, i]
             for (i = 2; i <= m; i++) { y = v[i]; for (j = i - 1; j >= 1 && v[j] > y; j--) v[j + 1] = v[j]; v[j + 1] = y }
             return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2 }
         END { for (k in n) printf "  %-11s req/s x%.2f   gateway cpu/req x%.2f   gateway+PostgreSQL cpu/req x%.2f\n",
                                    k, med(a, k, n[k]), med(b, k, n[k]), med(c, k, n[k]) }' | sort
}
if [ "${1:-}" = summary ]; then # bench/cluster.sh summary RESULTS...
    shift
    summary "$@"
    exit
fi

. "$ROOT/bench/harness.sh"
need_harness lib.sh upstream-nginx.conf
. "$HARNESS/lib.sh"
DURATION=${DURATION:-10} REPS=${REPS:-5} CONNS=${CONNS:-32} WORKERS=${WORKERS:-2}
MODES=${MODES:-multi single priced} PRINCIPALS=${PRINCIPALS:-1} PG_FSYNC=${PG_FSYNC:-0}
BUILD=${BUILD:-build}
B=$ROOT/$BUILD D=${D:-/tmp/bench-cluster}
PGT=$ROOT/scripts/pg-throwaway.sh
command -v wrk > /dev/null || die "needs wrk (apt-get install -y wrk)"
make -C "$ROOT" -s BUILD="$BUILD" all
rm -rf "$D" && mkdir -p "$D" && chmod 755 "$D"

GW_PID=() WD=
cleanup() {
    set +e
    [ -n "$WD" ] && kill "$WD" 2> /dev/null
    for p in "${GW_PID[@]}"; do kill -TERM "$p" 2> /dev/null && wait "$p" 2> /dev/null; done
    "$PGT" stop "$D/pg" fast 2> /dev/null
    bench_cleanup
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A watchdog bounds the whole run; the EXIT trap stops the rest.
MAX_S=${MAX_S:-$((900 + REPS * 16 * (DURATION + 6) + ${HOLD:-0}))}
(trap 'kill $S 2> /dev/null; exit 0' TERM; sleep "$MAX_S" & S=$!; wait $S
 echo "cluster.sh: watchdog after ${MAX_S}s" >&2; kill -TERM $$) &
WD=$!

# --- PostgreSQL: a throwaway with pg_stat_statements (a preloaded library: one restart) -------
DSN=$("$PGT" start "$D/pg")
sql() { psql "$DSN" -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
sql "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
if [ "$PG_FSYNC" = 1 ]; then
    sql "ALTER SYSTEM SET fsync = on"
    sql "ALTER SYSTEM SET full_page_writes = on"
fi
"$PGT" stop "$D/pg" && "$PGT" start "$D/pg" > /dev/null
sql "CREATE EXTENSION pg_stat_statements"
PG_MASTER=$(head -1 "$D/pg/data/postmaster.pid")
log "PostgreSQL $(sql 'SHOW server_version') at $DSN (fsync $(sql 'SHOW fsync'), synchronous_commit $(sql 'SHOW synchronous_commit'))"

# --- keys, configuration, gateways ------------------------------------------------------------
"$B/mandate-wallet" keygen --alg ES256 --kid w1 --out "$D/wallet.pem" --jwks "$D/wallet.jwks.json" > /dev/null
"$B/mandate-wallet" keygen --alg ES256 --kid m1 --out "$D/shop.pem" --jwks "$D/shop.jwks.json" > /dev/null
"$B/mandate-wallet" keygen --alg EdDSA --kid cp --out "$D/cp.pem" --jwks "$D/cp.jwks.json" > /dev/null
# gateway_json NAME PORT ADMIN_PORT STATE_JSON
gateway_json() {
    cat > "$D/$1.json" << JSON
{
  "listen": "127.0.0.1:$2", "workers": $WORKERS, "database": "$D/$1.db", $4
  "admin": {"listen": "127.0.0.1:$3", "token_sha256": "$(printf bench | sha256sum | cut -d' ' -f1)"},
  "audit": {"origin": "bench/$1", "checkpoint_key": "$D/cp.pem", "checkpoint_every": 10000},
  "limits": {"max_ttl_s": 86400, "clock_skew_s": 5},
  "rate_limit": {"per_agent_per_s": 1000000, "burst": 1000000},
  "issuers": [{"id": "wallet-1", "jwks_file": "$D/wallet.jwks.json"}],
  "merchants": [{"id": "bench-shop", "upstream": "http://127.0.0.1:$UPSTREAM_PORT",
                 "jwks_file": "$D/shop.jwks.json",
                 "routes": [{"method": "GET", "path": "/v1/echo", "action": "echo"},
                            {"method": "POST", "path": "/v1/book", "action": "book",
                             "priced": true}]}],
  "log_level": "warn"
}
JSON
    "$B/mandate-gateway" --check-config --config "$D/$1.json" > /dev/null
}
TARGETS=(local postgres) PORT=(18082 18085) ADMIN=(18083 18086)
gateway_json local 18082 18083 ""
gateway_json postgres 18085 18086 "\"state\": {\"backend\": \"postgres\", \"dsn\": \"$DSN\", \"node\": \"gw-a\"},"
start_nginx upstream "$HARNESS/upstream-nginx.conf" "$UPSTREAM_PORT" 1
for t in 0 1; do
    port_in_use "${PORT[$t]}" && die "port ${PORT[$t]} is taken"
    log=/dev/null
    [ "${GW_LOG:-0}" = 1 ] && log=$D/${TARGETS[$t]}.log
    "$B/mandate-gateway" --config "$D/${TARGETS[$t]}.json" 2> "$log" &
    GW_PID[$t]=$!
    wait_http "http://127.0.0.1:${ADMIN[$t]}/readyz" 30 || die "gateway ${TARGETS[$t]} did not start"
done
log "gateways: local pid ${GW_PID[0]}, postgres pid ${GW_PID[1]}; postmaster pid $PG_MASTER"

# --- tokens ------------------------------------------------------------------------------------
# Every line of a token file is sent once: CURSOR[file] is the next line, moved past what a run
# may have read (its answers, one request in flight per connection, reconnects).
declare -A CURSOR
mint() { # mint MODE N: append N lines to $D/MODE.tokens
    case $1 in
    single) "$B/bench/mint_tokens" "$D/wallet.pem" w1 "$2" 1 7200 ;;
    priced) "$B/bench/mint_carts" "$D/wallet.pem" w1 "$D/shop.pem" m1 "$2" 7200 "$PRINCIPALS" ;;
    esac >> "$D/$1.tokens"
    CURSOR[$1]=${CURSOR[$1]:-1}
}
MULTI=$("$B/bench/mint_tokens" "$D/wallet.pem" w1 1 1000000000 7200)
# HOLD=S: no rounds; mint TOKENS lines for each token mode, say where everything is, keep it all
# running for S seconds (to profile, or to drive by hand), then stop it.
if [ "${HOLD:-0}" -gt 0 ]; then
    for mode in single priced; do mint "$mode" "${TOKENS:-50000}"; done
    echo "$MULTI" > "$D/multi.token"
    log "holding ${HOLD}s: local :18082 pid ${GW_PID[0]}, postgres :18085 pid ${GW_PID[1]}," \
        "postmaster $PG_MASTER, $DSN; tokens in $D: multi.token single.tokens priced.tokens"
    sleep "$HOLD" &
    wait $!
    exit 0
fi

# --- measuring ---------------------------------------------------------------------------------
# PostgreSQL's CPU ticks: the postmaster with the children it reaped, and its live children.
pg_ticks() {
    local s t
    s=$(cat "/proc/$PG_MASTER/stat") && s=${s##*) } && set -- $s
    t=$(( ${12} + ${13} + ${14} + ${15} ))
    echo $(( t + $(cpu_ticks $(pgrep -P "$PG_MASTER")) ))
}
# Statements executed for the gateway so far (ours read pg_stat_*).
pg_calls() { sql "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat%'"; }
pg_commits() { sql "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"; }

# wrk_args MODE T -> the wrk arguments for mode on target T
wrk_args() {
    local url=http://127.0.0.1:${PORT[$2]}
    case $1 in
    multi) echo "-H|Authorization: Mandate $MULTI|$url/v1/echo" ;;
    single | priced)
        local path=/v1/echo
        [ "$1" = priced ] && path=/v1/book
        echo "-s|$ROOT/bench/token-stream.lua|$url$path" ;;
    esac
}

# run MODE T CONNS DURATION: RUN="rps p50_us p99_us gw_us pg_us stmts_per_allow allowed non2xx
# sockerr" (not in a subshell: it moves the token cursor)
run() {
    local mode=$1 t=$2 c=$3 dur=$4 args raw g0 g1 p0 p1 q0 q1 off=0
    IFS='|' read -r -a args <<< "$(wrk_args "$mode" "$t")"
    if [ "$mode" != multi ]; then
        off=$(head -n $(( CURSOR[$mode] - 1 )) "$D/$mode.tokens" | wc -c)
    fi
    q0=$(pg_calls); sleep 0.2
    g0=$(cpu_ticks "${GW_PID[$t]}"); p0=$(pg_ticks)
    raw=$(TOKENS_FILE=$D/$mode.tokens TOKENS_OFFSET=$off WRK_PATH=/${args[2]#http://*/} \
          timeout $((dur + 30)) wrk -t1 -c"$c" -d"${dur}s" --timeout 5s --latency "${args[@]}" 2>&1)
    g1=$(cpu_ticks "${GW_PID[$t]}"); p1=$(pg_ticks)
    q1=$(pg_calls)
    echo "$raw" >> "$D/wrk.raw"
    RUN=$(echo "$raw" | awk -v gt=$((g1 - g0)) -v pt=$((p1 - p0)) -v q=$((q1 - q0)) -v hz="$CLK_TCK" '
        function us(v,   n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "ms") return n * 1000; if (u == "s") return n * 1e6; return n }
        /^ +50%/ { p50 = us($2) } /^ +99%/ { p99 = us($2) } / requests in / { req = $1 }
        /Non-2xx or 3xx/ { bad = $NF } /Socket errors:/ { gsub(/,/, ""); se = $4 + $6 + $8 + $10 }
        /^Requests\/sec:/ { rps = $2 }
        END { ok = req - bad
              printf "%.0f %d %d %.1f %.1f %.3f %d %d %d\n", rps, p50, p99,
                     req ? gt / hz * 1e6 / req : 0, req ? pt / hz * 1e6 / req : 0,
                     ok ? q / ok : 0, ok, bad + 0, se + 0 }')
    if [ "$mode" != multi ]; then
        local seen
        seen=$(echo "$raw" | awk '/ requests in / { r = $1 } /Socket errors:/ { gsub(/,/, ""); e = $4 + $6 + $8 + $10 } END { print r + e }')
        CURSOR[$mode]=$(( CURSOR[$mode] + seen + 2 * c ))
    fi
}

# Every target answers 2xx to every mode before anything is measured.
for mode in $MODES; do
    [ "$mode" = multi ] || mint "$mode" 2000
    for t in 0 1; do
        run "$mode" "$t" 1 1
        set -- $RUN
        [ "$7" -gt 0 ] && [ "$8" = 0 ] && [ "$9" = 0 ] ||
            die "probe: $mode on ${TARGETS[$t]} answered non-2xx ($RUN); see $D/wrk.raw"
    done
done
# Warm-up (2 s each), which also tells how many tokens the rounds need.
declare -A NEED
for mode in $MODES; do
    for t in 0 1; do
        [ "$mode" = multi ] || mint "$mode" $((CONNS * 200))
        run "$mode" "$t" "$CONNS" 2
        set -- $RUN
        log "warm-up $mode ${TARGETS[$t]}: $1 req/s"
        # 1.5 x the warm-up rate for every round, a third more with the latency rounds
        NEED[$mode]=$(( ${NEED[$mode]:-0} + $1 * 3 / 2 * DURATION * REPS * (${LAT:-0} == 1 ? 4 : 3) / 3
                        + CONNS * 4 * REPS ))
    done
done
for mode in $MODES; do
    [ "$mode" = multi ] && continue
    log "minting ${NEED[$mode]} $mode token lines"
    mint "$mode" "${NEED[$mode]}"
done
sql "SELECT pg_stat_reset_shared('wal')" > /dev/null
X0=$(pg_commits) Q0=$(pg_calls) ALLOWED_PG=0

: > "$D/results.txt"
rounds() { # rounds KIND CONNS DURATION REPS
    local r mode k t line
    for r in $(seq 1 "$4"); do
        for mode in $MODES; do
            for k in 0 1; do
                t=$(( (k + r) % 2 ))
                run "$mode" "$t" "$2" "$3"
                line="$1 $mode ${TARGETS[$t]} $r $RUN $(cut -d' ' -f1 /proc/loadavg)"
                echo "$line" >> "$D/results.txt"
                log "$line"
                if [ "$t" = 1 ]; then
                    ALLOWED_PG=$(( ALLOWED_PG + $(echo "$line" | awk '{print $11}') ))
                fi
            done
        done
    done
}
rounds tput "$CONNS" "$DURATION" "$REPS"
[ "${LAT:-0}" = 1 ] && rounds lat 1 "$DURATION" "$(( REPS < 3 ? REPS : 3 ))"
# pg_stat_database is flushed by each backend at most once a second, and by an idle one after
# 10 s: wait for the last of it.
sleep 11
X1=$(pg_commits) Q1=$(pg_calls)

for t in 0 1; do
    curl -s "http://127.0.0.1:${ADMIN[$t]}/metrics" > "$D/${TARGETS[$t]}.metrics"
    kill -0 "${GW_PID[$t]}" 2> /dev/null || log "WARNING: gateway ${TARGETS[$t]} died"
done

echo
echo "cluster.sh: $(nproc) cores, $WORKERS workers per gateway, wrk -t1 -c$CONNS -d${DURATION}s, $REPS rounds, order rotated;" \
     "PostgreSQL $(sql 'SHOW server_version') fsync=$(sql 'SHOW fsync') on 127.0.0.1; principals=$PRINCIPALS;" \
     "gateway $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- core gateway audit || echo '+dirty')"
summary "$D/results.txt"
echo
awk -v x=$((X1 - X0)) -v q=$((Q1 - Q0)) -v a="$ALLOWED_PG" 'BEGIN {
    printf "pg_stat_database: %d commits for %d gateway statements (pg_stat_statements) over the rounds: %.3f commits per statement\n", x, q, q ? x / q : 0
    printf "  and %d allowed requests on the postgres gateway, all modes: %.3f commits per allow (with the 1/s revocation poll and this script'"'"'s queries)\n", a, a ? x / a : 0 }'
sql "SELECT wal_sync FROM pg_stat_wal" | awk -v a="$ALLOWED_PG" '{ printf "pg_stat_wal: %d WAL flushes to disk (fsync=%s): %.3f per allow\n", $1, "'"$(sql 'SHOW fsync')"'", a ? $1 / a : 0 }'
echo "statements per mode (pg_stat_statements, whole run):"
sql "SELECT lpad(calls::text, 10) || '  ' || left(regexp_replace(query, '\s+', ' ', 'g'), 90) FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat%' ORDER BY calls DESC LIMIT 8"
echo "decisions other than ok (both gateways, /metrics):"
grep -h '^mandate_decisions_total' "$D"/*.metrics | grep -v 'code="ok"' | grep -v ' 0$' || echo "  none"
echo "(one line per run in $D/results.txt: kind mode backend round req/s p50 p99 gw-us/req pg-us/req stmts/allow allowed non2xx sockerr load1)"
