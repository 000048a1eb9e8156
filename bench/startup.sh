#!/usr/bin/env bash
# bench/startup.sh [N] [LIVE] [TAIL] -- how long a gateway takes to start on a log of N entries
# (default 10,000,000) whose newest snapshot holds LIVE jtis (default 100,000) with TAIL rows after
# it (default 65,536: audit.snapshot_every). bench/bigdb writes the log once (cached under
# $CACHE, default /tmp/bench-startup, ~4 GB for 10M); in each of ROUNDS (default 3) the gateway
# is started on it, the time until /readyz answers is taken, and
# its own "used jtis from the snapshot ... in M ms" line; then it is stopped with SIGTERM and what
# it wrote is taken back (its entries, and its shutdown snapshot for bigdb's), so every round
# reads the same snapshot and tail.
# Everything on 127.0.0.1, free ports; no upstream is needed to start.
set -euo pipefail
N=${1:-10000000}
LIVE=${2:-100000}
TAIL=${3:-65536}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
B=$ROOT/$BUILD
make -C "$ROOT" -s BUILD="$BUILD" all
CACHE=${CACHE:-/tmp/bench-startup}
mkdir -p "$CACHE"
DB=$CACHE/gateway-$N-$LIVE-$TAIL.db
if [ ! -f "$DB.done" ]; then
    rm -f "$DB" "$DB-wal" "$DB-shm"
    t0=$(date +%s)
    "$B/bench/bigdb" "$DB" "$N" "$LIVE" "$TAIL"
    echo "written in $(($(date +%s) - t0)) s, $(du -h "$DB" | cut -f1)"
    touch "$DB.done"
fi
D=$(mktemp -d /tmp/bench-startup-run.XXXXXX)
GW=
cleanup() {
    set +e
    if [ -n "$GW" ] && kill -0 "$GW" 2> /dev/null; then kill -TERM "$GW"; wait "$GW"; fi
    rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port) ADMIN=$(free_port)
"$B/mandate-wallet" keygen --alg ES256 --kid w1 --out "$D/wallet-1.pem" --jwks "$D/wallet-1.jwks.json" > /dev/null
"$B/mandate-wallet" keygen --alg EdDSA --kid cp --out "$D/checkpoint.pem" --jwks "$D/checkpoint.jwks.json" > /dev/null
cat > "$D/gateway.json" << JSON
{
  "listen": "127.0.0.1:$PORT", "workers": 2, "database": "$DB",
  "admin": {"listen": "127.0.0.1:$ADMIN",
            "token_sha256": "$(printf bench | sha256sum | cut -d' ' -f1)"},
  "audit": {"origin": "bench.example/audit", "checkpoint_key": "checkpoint.pem"},
  "issuers": [{"id": "wallet-1", "jwks_file": "wallet-1.jwks.json"}],
  "merchants": [{"id": "bench-shop", "upstream": "http://127.0.0.1:9",
                 "routes": [{"method": "GET", "path": "/v1/echo", "action": "echo"}]}]
}
JSON
# The snapshot bigdb wrote, kept aside: a stop's snapshot replaces it.
sqlite3 "$DB" "CREATE TABLE IF NOT EXISTS bench_snapshot AS SELECT * FROM snapshots"
for r in $(seq "$ROUNDS"); do
    sync
    t0=$(date +%s%N)
    "$B/mandate-gateway" --config "$D/gateway.json" 2> "$D/gateway.log" &
    GW=$!
    for i in $(seq 1000); do
        curl -sf "http://127.0.0.1:$ADMIN/readyz" > /dev/null 2>&1 && break
        kill -0 "$GW" 2> /dev/null || { cat "$D/gateway.log" >&2; exit 1; }
        sleep 0.01
    done
    t1=$(date +%s%N)
    line=$(grep -o '[0-9]* used jtis from the snapshot at [0-9]* and [0-9]* entries after it, in [0-9]* ms' "$D/gateway.log")
    echo "round $r: ready in $(((t1 - t0) / 1000000)) ms; $line"
    kill -TERM "$GW"
    wait "$GW" || true
    GW=
    # Back to the same state: the shutdown snapshot and the start's entries go.
    sqlite3 "$DB" "DELETE FROM snapshots; INSERT INTO snapshots SELECT * FROM bench_snapshot;
                   DELETE FROM entries WHERE seq >= $N;
                   DELETE FROM checkpoints WHERE size > $N; DELETE FROM nodes WHERE (idx + 1) << level > $N;"
    grep -q '"level":"error"' "$D/gateway.log" && { grep '"level":"error"' "$D/gateway.log" >&2; exit 1; }
done
