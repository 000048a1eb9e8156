#!/usr/bin/env bash
# bench/callgrind.sh [SECONDS] [MODE] -- instructions per proxied request, under valgrind's
# callgrind with one worker and wrk -c8: repeatable where wall-clock runs on a shared VM move by
# 10-20%. Prints the whole gateway's and the audit writer's share. MODE=multi (default): one
# multi-use mandate; MODE=single: a token not seen before on every request, from the tokens
# `bench/gateway.sh single` wrote (OpenSSL's ES256 runs its generic code under valgrind, so the
# verification's share is larger than on the CPU). Needs the files bench/gateway.sh writes under
# /tmp/bench-gw, and the harness's nginx upstream on 18080. CALLGRIND_OUT=FILE keeps the profile.
set -euo pipefail
SECS=${1:-10} MODE=${2:-multi}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/harness.sh"
need_harness start-nginx.sh
B=$ROOT/build D=/tmp/bench-gw OUT=$(mktemp /tmp/callgrind.XXXXXX)
[ -f $D/gateway.json ] || { echo "run bench/gateway.sh once first (it writes $D)" >&2; exit 1; }
sed 's/"workers": [0-9]*/"workers": 1/' $D/gateway.json > $D/gw1.json
"$HARNESS/start-nginx.sh" $((SECS + 40)) > /dev/null 2>&1 &
NGINX=$!
trap 'kill $NGINX 2>/dev/null; [ -n "${VG:-}" ] && kill $VG 2>/dev/null; wait 2>/dev/null
      if [ -n "${CALLGRIND_OUT:-}" ]; then mv $OUT "$CALLGRIND_OUT"; else rm -f $OUT; fi' EXIT
rm -f $D/gateway.db*
valgrind --tool=callgrind --callgrind-out-file=$OUT "$B/mandate-gateway" --config $D/gw1.json \
    2>/dev/null &
VG=$!
sleep 4
if [ "$MODE" = single ]; then
    [ -f $D/tokens.txt ] || { echo "run bench/gateway.sh single once first" >&2; exit 1; }
    LOAD=(-s "$HARNESS/rotate-tokens.lua")
    export TOKENS_FILE=$D/tokens.txt
else
    LOAD=(-H "Authorization: Mandate $("$B/bench/mint_tokens" $D/wallet.pem w1 1 1000000000 7200)")
fi
N=$(wrk -t1 -c8 -d${SECS}s "${LOAD[@]}" http://127.0.0.1:18082/v1/echo | awk '/requests in/ {print $1}')
kill -TERM $VG; wait $VG 2>/dev/null || true; VG=
IR=$(callgrind_annotate $OUT 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
WR=$(callgrind_annotate --inclusive=yes $OUT 2>/dev/null |
     awk '/audit\/writer.c:run/ && !done {gsub(",", "", $1); print $1; done = 1}')
echo "requests=$N instructions/request=$((IR / N)) of which writer=$((WR / N))"
