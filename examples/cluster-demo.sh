#!/usr/bin/env bash
# make cluster-demo: two gateways in front of one merchant, sharing their state in PostgreSQL
# (SPEC §6). Starts a throwaway PostgreSQL (scripts/pg-throwaway.sh: initdb in a temporary
# directory as the postgres user, 127.0.0.1 only), the demo merchant, gateways gw-a and gw-b on it
# (each with its own audit log) and the wallet, then plays an agent (curl + jq) that spreads its
# calls over both nodes: a mandate's uses, a cart and alice's daily cap hold across them, and a
# revocation accepted by gw-a is applied by gw-b. Ends with each node's log verified and both
# replayed together; stops everything it started, PostgreSQL included.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/${BUILD:-build}
D=$B/cluster-demo
rm -rf "$D" && mkdir -p "$D"
cd "$D"

PIDS=()
PGDIR=$(mktemp -d /tmp/mg-cluster-demo.XXXXXX)
chmod 711 "$PGDIR" # the server runs as postgres in a directory below this one
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$ROOT/scripts/pg-throwaway.sh" stop "$PGDIR/pg" ||
        echo "cluster-demo: PostgreSQL in $PGDIR/pg did not stop" >&2
    rm -rf "$PGDIR"
}
trap cleanup EXIT

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000)) # below the ephemeral range: no client socket takes it
        (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; return; }
    done
}
# wait_until WHAT CMD...: run CMD every 50 ms until it succeeds, for 10 s at most
wait_until() {
    local what=$1
    shift
    for _ in $(seq 200); do "$@" && return; sleep 0.05; done
    echo "cluster-demo: $what not within 10 s; see $D/*.log" >&2
    exit 1
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" = 200 ]; }
token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
now_ms() { date +%s%3N; }

step=0
say() { step=$((step + 1)); printf '%2d. %s\n' "$step" "$*"; }

# --- PostgreSQL, keys, tokens, ports, configuration --------------------------------------------
DSN=$("$ROOT/scripts/pg-throwaway.sh" start "$PGDIR/pg")
psql -qX "$DSN" -c 'CREATE DATABASE mandates'
DSN=${DSN%/postgres}/mandates

"$B/mandate-wallet" keygen --alg ES256 --kid w1 --out wallet-1.pem --jwks wallet-1.jwks.json
"$B/mandate-wallet" keygen --alg ES256 --kid lux1 --out lux-hotels.pem --jwks lux-hotels.jwks.json
"$B/mandate-wallet" keygen --alg EdDSA --kid cp --out checkpoint.pem --jwks checkpoint.jwks.json \
    --pub checkpoint.pub.pem
AGENT=$(token) GW_ADMIN=$(token) W_ADMIN=$(token)
SHOP=$(free_port) WAL=$(free_port)
declare -A PORT ADMIN
for n in gw-a gw-b; do PORT[$n]=$(free_port) ADMIN[$n]=$(free_port); done

# gateway NODE: one node's configuration; only listen, admin, database, origin and node differ.
gateway() {
    cat <<JSON
{"listen": "127.0.0.1:${PORT[$1]}", "workers": 2, "database": "$1.db",
 "admin": {"listen": "127.0.0.1:${ADMIN[$1]}", "token_sha256": "$(sha "$GW_ADMIN")"},
 "audit": {"origin": "demo.local/$1/audit", "checkpoint_key": "checkpoint.pem", "checkpoint_every": 100},
 "state": {"backend": "postgres", "dsn": "$DSN", "node": "$1"},
 "issuers": [{"id": "wallet-1", "jwks_file": "wallet-1.jwks.json"}],
 "merchants": [{"id": "lux-hotels", "upstream": "http://127.0.0.1:$SHOP",
   "jwks_file": "lux-hotels.jwks.json", "routes": [
     {"method": "GET",  "path": "/lux/search",     "action": "search"},
     {"method": "POST", "path": "/lux/quote",      "action": "quote_room"},
     {"method": "POST", "path": "/lux/book",       "action": "book_room", "priced": true},
     {"method": "GET",  "path": "/lux/bookings/*", "action": "get_booking"}]}],
 "log_level": "warn"}
JSON
}
gateway gw-a > gw-a.json
gateway gw-b > gw-b.json
cat > wallet.json <<JSON
{"id": "wallet-1", "listen": "127.0.0.1:$WAL", "database": "wallet.db",
 "signing_key": {"kid": "w1", "alg": "ES256", "file": "wallet-1.pem"},
 "admin": {"token_sha256": "$(sha "$W_ADMIN")"},
 "default_ttl_s": 120, "max_ttl_s": 300,
 "merchants": [{"id": "lux-hotels", "jwks_file": "lux-hotels.jwks.json"}],
 "principals": [{"id": "alice",
   "spend_cap": {"value": 50000, "currency": "EUR", "period": "day"},
   "max_per_payment": {"value": 50000, "currency": "EUR"},
   "approval_above": {"value": 50000, "currency": "EUR"},
   "allow": [{"merchant": "lux-hotels", "actions": ["search", "quote_room", "book_room", "get_booking"]}]}],
 "agents": [{"id": "agent-planner", "principal": "alice", "token_sha256": "$(sha "$AGENT")"}]}
JSON

"$B/examples/lux-hotels/lux-hotels" --listen "127.0.0.1:$SHOP" --key lux-hotels.pem --kid lux1 \
    2> merchant.log & PIDS+=($!)
declare -A GW_PID
for n in gw-a gw-b; do
    "$B/mandate-gateway" --config "$n.json" 2> "$n.log" & PIDS+=($!)
    GW_PID[$n]=$!
done
"$B/mandate-wallet" --config wallet.json 2> wallet.log & PIDS+=($!)
wait_until "the merchant listening" listening "$SHOP"
wait_until "the wallet listening" listening "$WAL"
for n in gw-a gw-b; do
    wait_until "$n listening" listening "${PORT[$n]}"
    wait_until "$n ready" ready "${ADMIN[$n]}"
done
echo "cluster-demo: PostgreSQL $DSN (in $PGDIR)"
echo "cluster-demo: merchant :$SHOP  gw-a :${PORT[gw-a]} (admin :${ADMIN[gw-a]})" \
    " gw-b :${PORT[gw-b]} (admin :${ADMIN[gw-b]})  wallet :$WAL  files in $D"
echo

# --- the agent ---------------------------------------------------------------------------------
# wallet PATH BODY -> response body; status in $STATUS
wallet() {
    local out
    out=$(curl -s -w '\n%{http_code}' -X POST -H "Authorization: Bearer $AGENT" \
        -H 'Content-Type: application/json' --data "$2" "http://127.0.0.1:$WAL$1")
    STATUS=${out##*$'\n'}; BODY=${out%$'\n'*}
}
# via NODE METHOD PATH MANDATE [CART] [BODY]: through that gateway; status in $STATUS, body in $BODY
via() {
    local args=(-s -w '\n%{http_code}' -X "$2" -H "Authorization: Mandate $4")
    [ -n "${5:-}" ] && args+=(-H "Mandate-Cart: $5")
    [ -n "${6:-}" ] && args+=(-H 'Content-Type: application/json' --data-binary "$6")
    local out
    out=$(curl "${args[@]}" "http://127.0.0.1:${PORT[$1]}$3")
    STATUS=${out##*$'\n'}; BODY=${out%$'\n'*}
}
b64d() { local s=$1; while [ $(( ${#s} % 4 )) -ne 0 ]; do s+="="; done; tr '_-' '/+' <<<"$s" | base64 -d; }
human() { read -r v c; printf '%d.%02d %s' $((v / 100)) $((v % 100)) "$c"; }
intent() { wallet /v1/mandates/intent "{\"merchant\":\"lux-hotels\",\"action\":\"$1\"${2:+,$2}}"; jq -r .mandate <<<"$BODY"; }
payment() { wallet /v1/mandates/payment "{\"cart\":\"$1\"}"; expect 201; jq -r .mandate <<<"$BODY"; }
verdict() { if [ "${STATUS:0:1}" = 2 ]; then echo "ALLOW $STATUS"; else echo "DENY $STATUS $(jq -r .error <<<"$BODY")"; fi; }
expect() { [ "$STATUS" = "$1" ] || { echo "cluster-demo: expected $1, got $STATUS: $BODY" >&2; exit 1; }; }
quote() {   # quote NODE SKU NIGHTS -> $CART, $AMOUNT
    via "$1" POST /lux/quote "$(intent quote_room)" "" "{\"sku\":\"$2\",\"nights\":$3}"
    expect 201
    CART=$(jq -r .cart <<<"$BODY")
    AMOUNT=$(b64d "$(cut -d. -f2 <<<"$CART")" | jq -r '"\(.total.value) \(.total.currency)"' | human)
}
SPENT=0
booked() { SPENT=$((SPENT + $(jq -r .amount <<<"$BODY" | cut -d' ' -f1))); }

SEARCH=$(intent search '"uses":2')
via gw-a GET /lux/search "$SEARCH"; expect 200
say "agent-planner searches through gw-a with a mandate good for 2 calls: $(verdict)"
via gw-b GET /lux/search "$SEARCH"; expect 200
say "the same mandate through gw-b: $(verdict) (its second use)"
via gw-a GET /lux/search "$SEARCH"; expect 403
say "a third call, back on gw-a: $(verdict): the uses are counted across both nodes"

quote gw-a deluxe 1
PAY=$(payment "$CART")
via gw-a POST /lux/book "$PAY" "$CART" '{}'; expect 201
booked
say "agent-planner pays $AMOUNT through gw-a (alice's cap: 500.00 EUR a day): $(verdict)"
via gw-b POST /lux/book "$(payment "$CART")" "$CART" '{}'; expect 403
say "the same cart again through gw-b, with a fresh payment mandate: $(verdict)"

# Two carts of 180.00 EUR paid at the same moment, one on each node: 180 + 180 fits under the
# cap, 180 + 180 + 180 does not. Only the shared ledger can tell which one comes second.
quote gw-a deluxe 1; CART_A=$CART; PAY_A=$(payment "$CART")
quote gw-b deluxe 1; CART_B=$CART; PAY_B=$(payment "$CART")
pay_in_background() {   # NODE PAYMENT CART: the answer goes to race-NODE.out
    ( via "$1" POST /lux/book "$2" "$3" '{}'; printf '%s\n%s' "$BODY" "$STATUS" > "race-$1.out" ) &
}
pay_in_background gw-a "$PAY_A" "$CART_A"; RA=$!
pay_in_background gw-b "$PAY_B" "$CART_B"
wait "$RA" $!
allowed=0 RACE=()
for n in gw-a gw-b; do
    STATUS=$(tail -n1 "race-$n.out"); BODY=$(sed '$d' "race-$n.out")
    if [ "$STATUS" = 201 ]; then allowed=$((allowed + 1)); booked; fi
    RACE+=("$n $(verdict)")
done
[ "$allowed" = 1 ] || { echo "cluster-demo: $allowed of two racing payments passed" >&2; exit 1; }
say "two more 180.00 EUR payments at the same moment, one on each node: ${RACE[0]}, ${RACE[1]}"
say "alice's cap held across both gateways: $(echo "$SPENT EUR" | human) seen by the merchant" \
    "($(curl -s "http://127.0.0.1:$SHOP/lux/_stats" | jq .bookings) bookings)"

LATER=$(intent search) PROBE=$(intent search '"uses":200')
curl -sf -X POST -H "Authorization: Bearer $GW_ADMIN" -H 'Content-Type: application/json' \
    --data '{"agent":"agent-planner"}' "http://127.0.0.1:${ADMIN[gw-a]}/admin/revocations" >/dev/null
t0=$(now_ms)
revoked_on_b() {
    via gw-b GET /lux/search "$PROBE"
    [ "$STATUS" = 403 ] && [ "$(jq -r .error <<<"$BODY")" = mandate_revoked ]
}
wait_until "the revocation on gw-b" revoked_on_b
ms=$(($(now_ms) - t0))
say "the operator revokes agent-planner on gw-a's admin API; gw-b refuses it within $ms ms: $(verdict)"
via gw-a GET /lux/search "$LATER"; expect 403
say "and gw-a refuses a mandate minted before the revocation: $(verdict)"

# --- the auditor -------------------------------------------------------------------------------
for n in gw-a gw-b; do kill -TERM "${GW_PID[$n]}"; wait "${GW_PID[$n]}" 2>/dev/null || true; done
echo
for n in gw-a gw-b; do
    printf '%s: ' "$n"
    "$B/mandate-audit" verify --db "$n.db" --checkpoint-key checkpoint.pub.pem \
        --jwks wallet-1=wallet-1.jwks.json --jwks lux-hotels=lux-hotels.jwks.json
done
# Each node's log alone cannot show a cart paid on both; replayed together, they must.
"$B/mandate-audit" replay --db gw-a.db --db gw-b.db --jwks wallet-1=wallet-1.jwks.json \
    --jwks lux-hotels=lux-hotels.jwks.json
echo
echo "cluster-demo: ok"
