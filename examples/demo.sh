#!/usr/bin/env bash
# make demo: the whole story on this machine. Generates keys and configurations into a fresh
# directory under build/, starts the demo merchant, the gateway and the wallet on free loopback
# ports, plays an agent (curl + jq) through search, quote, payment, replay, tampering, the spend
# cap, a human approval and revocation, then checks the audit log and stops what it started.
# The agent holds a key of its own (its public JWK is in wallet.json, so its mandates carry
# cnf.jwk) and signs every request with examples/agent/sign-request (RFC 9421, SPEC §7); a thief
# with a copy of a mandate but not that key gets nowhere.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/${BUILD:-build}
D=$B/demo
rm -rf "$D" && mkdir -p "$D"
cd "$D"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))   # below the ephemeral range: no client socket takes it
        (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; return; }
    done
}
wait_port() {
    for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done
    echo "demo: nothing listening on port $1; see $D/*.log" >&2; exit 1
}
token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }

step=0
say() { step=$((step + 1)); printf '%2d. %s\n' "$step" "$*"; }

# --- keys, tokens, ports, configuration --------------------------------------------------------
"$B/mandate-wallet" keygen --alg ES256 --kid w1 --out wallet-1.pem --jwks wallet-1.jwks.json
"$B/mandate-wallet" keygen --alg ES256 --kid lux1 --out lux-hotels.pem --jwks lux-hotels.jwks.json
"$B/mandate-wallet" keygen --alg EdDSA --kid cp --out checkpoint.pem --jwks checkpoint.jwks.json \
    --pub checkpoint.pub.pem
# The agent's own key stays with the agent; the wallet only learns its public half.
"$B/mandate-wallet" keygen --alg EdDSA --kid agent-planner --out agent-planner.pem \
    --jwks agent-planner.jwks.json
"$B/mandate-wallet" keygen --alg EdDSA --kid thief --out thief.pem --jwks thief.jwks.json
SIGN=$B/examples/agent/sign-request
AGENT_JWK=$("$SIGN" --key agent-planner.pem --jwk)
AGENT=$(token) GW_ADMIN=$(token) W_ADMIN=$(token)
echo "$GW_ADMIN" > gateway-admin.token
echo "$W_ADMIN" > wallet-admin.token
SHOP=$(free_port) GW=$(free_port) GWA=$(free_port) WAL=$(free_port)

cat > gateway.json <<JSON
{"listen": "127.0.0.1:$GW", "workers": 2, "database": "gateway.db",
 "admin": {"listen": "127.0.0.1:$GWA", "token_sha256": "$(sha "$GW_ADMIN")"},
 "audit": {"origin": "demo.local/audit", "checkpoint_key": "checkpoint.pem", "checkpoint_every": 100},
 "issuers": [{"id": "wallet-1", "jwks_file": "wallet-1.jwks.json"}],
 "merchants": [{"id": "lux-hotels", "upstream": "http://127.0.0.1:$SHOP",
   "jwks_file": "lux-hotels.jwks.json", "routes": [
     {"method": "GET",  "path": "/lux/search",     "action": "search"},
     {"method": "POST", "path": "/lux/quote",      "action": "quote_room"},
     {"method": "POST", "path": "/lux/book",       "action": "book_room", "priced": true},
     {"method": "GET",  "path": "/lux/bookings/*", "action": "get_booking"},
     {"method": "POST", "path": "/mcp", "mcp": {"tools": {
       "search_rooms": {"action": "search"},
       "book_room":    {"action": "book_room", "priced": true}}}}]}],
 "log_level": "warn"}
JSON
cat > wallet.json <<JSON
{"id": "wallet-1", "listen": "127.0.0.1:$WAL", "database": "wallet.db",
 "signing_key": {"kid": "w1", "alg": "ES256", "file": "wallet-1.pem"},
 "admin": {"token_sha256": "$(sha "$W_ADMIN")"},
 "default_ttl_s": 120, "max_ttl_s": 300,
 "merchants": [{"id": "lux-hotels", "jwks_file": "lux-hotels.jwks.json"}],
 "principals": [{"id": "alice",
   "spend_cap": {"value": 50000, "currency": "EUR", "period": "day"},
   "max_per_payment": {"value": 50000, "currency": "EUR"},
   "approval_above": {"value": 20000, "currency": "EUR"},
   "allow": [{"merchant": "lux-hotels", "actions": ["search", "quote_room", "book_room", "get_booking"]}]}],
 "agents": [{"id": "agent-planner", "principal": "alice", "token_sha256": "$(sha "$AGENT")",
   "jwk": $AGENT_JWK}],
 "gateways": [{"admin_url": "http://127.0.0.1:$GWA", "token_file": "gateway-admin.token"}]}
JSON

"$B/examples/lux-hotels/lux-hotels" --listen "127.0.0.1:$SHOP" --key lux-hotels.pem --kid lux1 \
    2> merchant.log & PIDS+=($!)
"$B/mandate-gateway" --config gateway.json 2> gateway.log & PIDS+=($!)
GW_PID=$!
"$B/mandate-wallet" --config wallet.json 2> wallet.log & PIDS+=($!)
wait_port "$SHOP"; wait_port "$GW"; wait_port "$GWA"; wait_port "$WAL"
echo "demo: merchant :$SHOP  gateway :$GW (admin :$GWA)  wallet :$WAL  files in $D"
echo

# --- the agent ---------------------------------------------------------------------------------
# wallet PATH BODY -> response body; status in $STATUS
wallet() {
    local out
    out=$(curl -s -w '\n%{http_code}' -X POST -H "Authorization: Bearer $AGENT" \
        -H 'Content-Type: application/json' --data "$2" "http://127.0.0.1:$WAL$1")
    STATUS=${out##*$'\n'}; BODY=${out%$'\n'*}
}
# send KEY METHOD PATH MANDATE [CART] [BODY] -> through the gateway, the request signed with KEY
# (none: unsigned) as SPEC §7 wants; status in $STATUS, body in $BODY, signature headers in $SIGS
send() {
    local key=$1 url="http://127.0.0.1:$GW$3" hdrs=(-H "Authorization: Mandate $4") sig=()
    [ -n "${5:-}" ] && hdrs+=(-H "Mandate-Cart: $5")
    local args=(-s -w '\n%{http_code}' -X "$2" "${hdrs[@]}")
    [ -n "${6:-}" ] && args+=(-H 'Content-Type: application/json' --data-binary "$6")
    SIGS=
    if [ "$key" != none ]; then
        SIGS=$("$SIGN" --key "$key" --method "$2" --url "$url" "${hdrs[@]}" ${6:+--data "$6"})
        mapfile -t sig <<<"$SIGS"
        for h in "${sig[@]}"; do args+=(-H "$h"); done
    fi
    local out
    out=$(curl "${args[@]}" "$url")
    STATUS=${out##*$'\n'}; BODY=${out%$'\n'*}
}
# via METHOD PATH MANDATE [CART] [BODY]: the agent, signing with its key
via() { send agent-planner.pem "$@"; }
# base64url to bytes (padding restored); "18000 EUR" (minor units) to "180.00 EUR"
b64d() { local s=$1; while [ $(( ${#s} % 4 )) -ne 0 ]; do s+="="; done; tr '_-' '/+' <<<"$s" | base64 -d; }
human() { read -r v c; printf '%d.%02d %s' $((v / 100)) $((v % 100)) "$c"; }
intent() { wallet /v1/mandates/intent "{\"merchant\":\"lux-hotels\",\"action\":\"$1\"${2:+,$2}}"; jq -r .mandate <<<"$BODY"; }
verdict() { if [ "${STATUS:0:1}" = 2 ]; then echo "ALLOW $STATUS"; else echo "DENY $STATUS $(jq -r .error <<<"$BODY")"; fi; }
expect() { [ "$STATUS" = "$1" ] || { echo "demo: expected $1, got $STATUS: $BODY" >&2; exit 1; }; }
quote() {
    via POST /lux/quote "$(intent quote_room)" "" "{\"sku\":\"$1\",\"nights\":$2}"
    expect 201
    CART=$(jq -r .cart <<<"$BODY")
    AMOUNT=$(b64d "$(cut -d. -f2 <<<"$CART")" | jq -r '"\(.total.value) \(.total.currency)"' | human)
}
approve() {   # as alice, from her terminal; prints the mandate the agent then collects
    "$B/mandate-wallet" approve "$1" --config wallet.json --admin-token-file wallet-admin.token >/dev/null
    curl -s -H "Authorization: Bearer $AGENT" "http://127.0.0.1:$WAL/v1/approvals/$1" | jq -r .mandate
}

via GET /lux/search "$(intent search)"; expect 200
say "agent-planner (for alice) searches lux-hotels, signing the request with its key: $(verdict), $(jq '.rooms | length' <<<"$BODY") rooms"
while IFS= read -r h; do
    [ ${#h} -gt 110 ] && h="${h:0:107}..."; printf '      %s\n' "$h"
done <<<"$SIGS"
via POST /mcp "$(intent search)" "" '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_rooms"}}'
expect 200
say "the same agent calls the MCP tool search_rooms, mapped to the action search: $(verdict)"
via POST /mcp "$(intent search)" "" '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"cancel_all"}}'
expect 403
say "a tool the route does not list: DENY $STATUS $(jq -r .error.data.error <<<"$BODY") (JSON-RPC $(jq -r .error.code <<<"$BODY"))"

quote deluxe 1
say "agent-planner asks lux-hotels for a quote, deluxe x1: $(verdict), cart of $AMOUNT locked for 10 minutes"

wallet /v1/mandates/payment "{\"cart\":\"$CART\"}"; expect 201
PAY=$(jq -r .mandate <<<"$BODY")

# A thief copies the payment mandate and the cart on their way (a log, a compromised tool) and
# races the agent from another process. It has everything but agent-planner's private key.
printf '%s\n%s\n' "$PAY" "$CART" > stolen.txt
thief() {   # thief KEY: replay stolen.txt from a separate shell, signing with KEY (or none)
    GW=$GW SIGN=$SIGN bash -c "$(declare -f send)"'
        { read -r p; read -r c; } < stolen.txt
        send "$0" POST /lux/book "$p" "$c" "{}"
        printf "%s\n%s" "$BODY" "$STATUS"' "$1" > thief.out
    STATUS=$(tail -n1 thief.out); BODY=$(sed '$d' thief.out)
}
thief none; expect 401
say "a thief replays a copy of that payment mandate from another process, unsigned: $(verdict)"
thief thief.pem; expect 401
say "the thief signs the request with a key of its own: $(verdict)"

via POST /lux/book "$PAY" "$CART" '{}'; expect 201
say "agent-planner pays $AMOUNT (within alice's 500.00 EUR daily cap) and books: $(verdict), booking $(jq -r .booking_id <<<"$BODY")"

via POST /lux/book "$PAY" "$CART" '{}'; expect 403
say "agent-planner replays the same payment mandate: $(verdict)"

IFS=. read -r H P S <<<"$PAY"
CHEAPER=$(b64d "$P" | jq -c '.total.value = 100' | base64 -w0 | tr '+/' '-_' | tr -d '=')
via POST /lux/book "$H.$CHEAPER.$S" "$CART" '{}'; expect 401
say "agent-planner edits a payment mandate down to 1.00 EUR: $(verdict)"

# pay_after_approval SKU NIGHTS WHY STATUS: quote, the wallet holds it for alice, she approves, book
pay_after_approval() {
    quote "$1" "$2"
    wallet /v1/mandates/payment "{\"cart\":\"$CART\"}"; expect 202
    local id; id=$(jq -r .approval_id <<<"$BODY")
    say "agent-planner asks to pay $AMOUNT for $1 x$2$3: approval $id pending"
    via POST /lux/book "$(approve "$id")" "$CART" '{}'; expect "$4"
}

pay_after_approval suite 1 ", above alice's approval threshold (200.00 EUR)" 403
say "alice approves, but 180.00 EUR spent + $AMOUNT is over her 500.00 EUR daily cap at the gateway: $(verdict)"

pay_after_approval standard 3 "" 201
say "alice approves with 'mandate-wallet approve'; booked: $(verdict), $(jq -r .amount <<<"$BODY" | human) seen by the merchant"

SEARCH=$(intent search '"uses":5')
curl -s -X POST -H "Authorization: Bearer $W_ADMIN" -H 'Content-Type: application/json' \
    --data '{"agent":"agent-planner"}' "http://127.0.0.1:$WAL/v1/revocations" >/dev/null
sleep 0.2
via GET /lux/search "$SEARCH"; expect 403
say "alice revokes agent-planner; its still-valid mandate is refused: $(verdict)"
wallet /v1/mandates/intent '{"merchant":"lux-hotels","action":"search"}'; expect 403
say "and the wallet refuses to mint for it: DENY $STATUS $(jq -r .error <<<"$BODY")"

# --- the auditor -------------------------------------------------------------------------------
kill -TERM "$GW_PID"; wait "$GW_PID" 2>/dev/null || true   # final checkpoint
echo
"$B/mandate-audit" verify --db gateway.db --checkpoint-key checkpoint.pub.pem \
    --jwks wallet-1=wallet-1.jwks.json --jwks lux-hotels=lux-hotels.jwks.json
"$B/mandate-audit" replay --db gateway.db --jwks wallet-1=wallet-1.jwks.json \
    --jwks lux-hotels=lux-hotels.jwks.json
echo
"$B/mandate-audit" show --db gateway.db
echo
echo "demo: ok"
