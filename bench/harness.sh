# Sourced by the bench scripts that compare the gateway with nginx or SQLite baselines. Those
# baselines come from an external bench harness (start-nginx.sh, upstream-nginx.conf,
# run-baseline.sh, rotate-tokens.lua, sqlite-anchor.sh) that is optional and not part of this
# repository: point HARNESS at its directory. Scripts that need it stop with this message.
HARNESS=${HARNESS:-}
# need_harness FILE...: every FILE must be in $HARNESS, else explain and exit 2.
need_harness() {
    local f
    for f in "$@"; do
        if [ -z "$HARNESS" ] || [ ! -e "$HARNESS/$f" ]; then
            echo "$(basename "$0"): needs the optional bench harness (file $f): set HARNESS to" \
                 "its directory${HARNESS:+ (HARNESS=$HARNESS has no $f)}" >&2
            exit 2
        fi
    done
}
# bench_request_args: the arrays WRK_EXTRA (wrk's -H per line of BENCH_HEADERS, and -s BENCH_LUA)
# and CURL_H (curl's -H per line), for the runners bench/gateway.sh starts (RUNNER=).
bench_request_args() {
    WRK_EXTRA=() CURL_H=()
    local h
    while IFS= read -r h; do
        if [ -n "$h" ]; then
            WRK_EXTRA+=(-H "$h")
            CURL_H+=(-H "$h")
        fi
    done <<< "${BENCH_HEADERS:-}"
    if [ -n "${BENCH_LUA:-}" ]; then
        WRK_EXTRA+=(-s "$BENCH_LUA")
    fi
}
