#!/bin/bash
# The demo's agent, in a container on the host's network: search, quote, pay, book, a replay, an
# over-cap payment, the remaining budget, a revocation; one line per step, "agent: ok" at the end
# (exit 0), or the step that went wrong (exit 1). Needs curl and jq (the build stage's image).
set -euo pipefail
cd /etc/mandate
W=http://127.0.0.1:$WALLET_PORT G=http://127.0.0.1:$GATEWAY_PORT A=http://127.0.0.1:$ADMIN_PORT
AGENT=$(cat agent.token) W_ADMIN=$(cat wallet-admin.token)
step=0
say() { step=$((step + 1)); printf 'agent %2d. %s\n' "$step" "$*"; }
die() { echo "agent: FAILED: $*" >&2; exit 1; }
for _ in $(seq 100); do
    curl -fs "$A/livez" >/dev/null && curl -fs "$W/livez" >/dev/null && break; sleep 0.1
done
wallet() { curl -s -H "Authorization: Bearer $AGENT" -H 'Content-Type: application/json' "$@"; }
intent() { wallet "$W/v1/mandates/intent" -d "{\"merchant\":\"lux-hotels\",\"action\":\"$1\"}" | jq -r .mandate; }
call() { curl -s -o /tmp/body -w '%{http_code}' -H "Authorization: Mandate $1" "${@:2}"; }

code=$(call "$(intent search)" "$G/lux/search")
[ "$code" = 200 ] || die "search: $code"; say "search: 200, $(jq '.rooms | length' /tmp/body) rooms"
code=$(call "$(intent quote_room)" "$G/lux/quote" -d '{"sku":"deluxe","nights":1}')
[ "$code" = 201 ] || die "quote: $code"; CART=$(jq -r .cart /tmp/body)
say "quote: cart for $(jq -r '.cart' /tmp/body | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null | jq -r '.total.value') EUR cents"
PAY=$(wallet "$W/v1/mandates/payment" -d "{\"cart\":\"$CART\"}" | jq -r .mandate)
[ "$PAY" != null ] || die "payment mandate refused"
code=$(curl -s -o /tmp/body -D /tmp/head -w '%{http_code}' -H "Authorization: Mandate $PAY" \
    -H "Mandate-Cart: $CART" "$G/lux/book" -d '{}')
[ "$code" = 201 ] || die "book: $code $(cat /tmp/body)"
say "book: 201, receipt $(grep -i '^mandate-receipt:' /tmp/head | cut -d' ' -f2 | tr -d '\r' | cut -c1-20)…"
code=$(curl -s -o /tmp/body -w '%{http_code}' -H "Authorization: Mandate $PAY" \
    -H "Mandate-Cart: $CART" "$G/lux/book" -d '{}')
[ "$code" = 403 ] || die "replay: $code"; say "replay: 403 $(jq -r .error /tmp/body)"
SPEND=$(wallet "$W/v1/spend")
say "spend: $(echo "$SPEND" | jq -c '{spent: .gateways[0].spent.value, remaining: .remaining.value}')"
code=$(call "$(intent quote_room)" "$G/lux/quote" -d '{"sku":"suite","nights":3}')
CART2=$(jq -r .cart /tmp/body)
out=$(wallet "$W/v1/mandates/payment" -d "{\"cart\":\"$CART2\"}" | jq -r '.error // .status // "minted"')
say "over the cap or approval: $out"
TOK=$(intent search)
curl -s -X POST -H "Authorization: Bearer $W_ADMIN" "$W/v1/revocations" -d '{"agent":"agent-planner"}' >/dev/null
for _ in $(seq 50); do
    code=$(call "$TOK" "$G/lux/search"); [ "$code" = 403 ] && break; sleep 0.05
done
[ "$code" = 403 ] || die "revocation not applied: $code"; say "revoked: 403 $(jq -r .error /tmp/body)"
echo "agent: ok"
