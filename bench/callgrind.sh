#!/usr/bin/env bash
# bench/callgrind.sh [SECONDS] -- instructions per proxied request (multi-use mandate), under
# valgrind's callgrind with one worker and wrk -c8: repeatable where wall-clock runs on a shared
# VM move by 10-20%. Prints the whole gateway's and the audit writer's share. Needs the files
# bench/gateway.sh writes under /tmp/bench-gw, and the harness's nginx upstream on 18080.
set -euo pipefail
SECS=${1:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/harness.sh"
need_harness start-nginx.sh
B=$ROOT/build D=/tmp/bench-gw OUT=$(mktemp /tmp/callgrind.XXXXXX)
[ -f $D/gateway.json ] || { echo "run bench/gateway.sh once first (it writes $D)" >&2; exit 1; }
sed 's/"workers": [0-9]*/"workers": 1/' $D/gateway.json > $D/gw1.json
"$HARNESS/start-nginx.sh" $((SECS + 40)) > /dev/null 2>&1 &
NGINX=$!
trap 'kill $NGINX 2>/dev/null; [ -n "${VG:-}" ] && kill $VG 2>/dev/null; wait 2>/dev/null; rm -f $OUT' EXIT
rm -f $D/gateway.db*
valgrind --tool=callgrind --callgrind-out-file=$OUT "$B/mandate-gateway" --config $D/gw1.json \
    2>/dev/null &
VG=$!
sleep 4
TOK=$("$B/bench/mint_tokens" $D/wallet.pem w1 1 1000000000 7200)
N=$(wrk -t1 -c8 -d${SECS}s -H "Authorization: Mandate $TOK" http://127.0.0.1:18082/v1/echo |
    awk '/requests in/ {print $1}')
kill -TERM $VG; wait $VG 2>/dev/null || true; VG=
IR=$(callgrind_annotate $OUT 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
WR=$(callgrind_annotate --inclusive=yes $OUT 2>/dev/null |
     awk '/audit\/writer.c:run/ && !done {gsub(",", "", $1); print $1; done = 1}')
echo "requests=$N instructions/request=$((IR / N)) of which writer=$((WR / N))"
