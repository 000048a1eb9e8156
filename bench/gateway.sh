#!/usr/bin/env bash
# bench/gateway.sh MODE -- measure the gateway against nginx in one interleaved run, with the
# optional external bench harness (HARNESS=<dir> with run-baseline.sh; see bench/harness.sh).
#   MODE=multi   one mandate with a huge `uses`, sent on every request
#   MODE=single  a mandate not seen before on every request (rotate-tokens.lua over N tokens)
# Prepares keys, configuration and tokens under /tmp/bench-gw (a fresh database every run).
# Extra environment is passed to the harness (DURATION, REPS, PIN, ...). Before and after the
# run, bench/fsync_probe prints what a 4 KiB write + fdatasync costs under /tmp/bench-gw.
#   TLS=1     the gateway listens with TLS ("tls": {cert_file, key_file} in gateway.json) and
#             GATEWAY_URL is https://127.0.0.1:18082/v1/echo; a self-signed P-256 certificate for
#             127.0.0.1 is made with the openssl CLI in $TLS_DIR (/tmp/bench-gw/tls, exported;
#             never committed); the harness's curl probe trusts it through CURL_CA_BUNDLE.
#   RUNNER=   run this instead of $HARNESS/run-baseline.sh with the prepared environment, e.g.
#             TLS=1 RUNNER=bench/tls-run.sh (TLS nginx vs TLS gateway: the harness's proxy is http).
#   GW_STDERR=/dev/null  where the gateway's stderr goes: one access line per request plus any
#             warnings; a file costs a write per request, so keep /dev/null for the figures.
set -euo pipefail
MODE=${1:-multi}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/harness.sh"
[ -n "${RUNNER:-}" ] || need_harness run-baseline.sh
B=$ROOT/build
D=/tmp/bench-gw
make -C "$ROOT" -s all
rm -rf "$D" && mkdir -p "$D"
TLS_JSON= SCHEME=http
if [ "${TLS:-0}" = 1 ]; then
    export TLS_DIR=$D/tls CURL_CA_BUNDLE=$D/tls/cert.pem
    mkdir -p "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1 -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null
    TLS_JSON="\"tls\": {\"cert_file\": \"$TLS_DIR/cert.pem\", \"key_file\": \"$TLS_DIR/key.pem\"},"
    SCHEME=https
fi
"$B/mandate-wallet" keygen --alg ES256 --kid w1 --out "$D/wallet.pem" --jwks "$D/wallet.jwks.json"
"$B/mandate-wallet" keygen --alg EdDSA --kid cp --out "$D/cp.pem" --jwks "$D/cp.jwks.json"
cat > "$D/gateway.json" <<JSON
{
  "listen": "127.0.0.1:18082", $TLS_JSON "workers": ${WORKERS:-2}, "database": "$D/gateway.db",
  "admin": {"listen": "127.0.0.1:18083",
            "token_sha256": "$(printf bench | sha256sum | cut -d' ' -f1)"},
  "audit": {"origin": "bench/audit", "checkpoint_key": "$D/cp.pem", "checkpoint_every": 10000},
  "limits": {"max_ttl_s": 86400, "clock_skew_s": 5},
  "rate_limit": {"per_agent_per_s": 1000000, "burst": 1000000},
  "issuers": [{"id": "wallet-1", "jwks_file": "$D/wallet.jwks.json"}],
  "merchants": [{"id": "bench-shop", "upstream": "http://127.0.0.1:18080",
                 "routes": [{"method": "GET", "path": "/v1/echo", "action": "echo"}]}],
  "log_level": "warn"
}
JSON
export GATEWAY_URL=$SCHEME://127.0.0.1:18082/v1/echo
export GATEWAY_START="exec $B/mandate-gateway --config $D/gateway.json 2>${GW_STDERR:-/dev/null}"
export BENCH_PATH=/v1/echo
case "$MODE" in
multi)
    export BENCH_HEADERS="Authorization: Mandate $("$B/bench/mint_tokens" "$D/wallet.pem" w1 1 1000000000 7200)"
    ;;
single)
    # rotate-tokens.lua restarts its list in every wrk run, so each token allows as many uses
    # as there are wrk runs; within a run every request still presents a token not seen
    # before: a full signature check and a jti write, as with single-use mandates.
    "$B/bench/mint_tokens" "$D/wallet.pem" w1 "${TOKENS:-300000}" 40 7200 > "$D/tokens.txt"
    export BENCH_LUA=$HARNESS/rotate-tokens.lua TOKENS_FILE=$D/tokens.txt
    ;;
*) echo "usage: bench/gateway.sh multi|single" >&2; exit 1 ;;
esac
export GATEWAY_NAME=gw-$MODE HARNESS
[ "$SCHEME" = https ] && GATEWAY_NAME=gw-tls-$MODE
# The floor of the gateway's c=1 latency: one durable commit on the database's filesystem,
# before and after the run (issue 11 compares c=1 p50 with nginx's plus one fdatasync p50).
"$B/bench/fsync_probe" "$D"
"${RUNNER:-$HARNESS/run-baseline.sh}"
"$B/bench/fsync_probe" "$D"
