#!/bin/bash
# The demo's keys, tokens and configurations, written once into /etc/mandate (the shared volume)
# by `docker-compose run --rm init`. Ports come from the environment (make docker-test picks free
# ones): MERCHANT_PORT, GATEWAY_PORT, ADMIN_PORT, WALLET_PORT. Everything listens on 127.0.0.1:
# the containers use the host's network.
set -euo pipefail
cd /etc/mandate
if [ -f gateway.json ]; then echo "init: /etc/mandate already holds a configuration"; exit 0; fi
: "${MERCHANT_PORT:?}" "${GATEWAY_PORT:?}" "${ADMIN_PORT:?}" "${WALLET_PORT:?}"
kg() { mandate-wallet keygen "$@" >/dev/null; }
kg --alg ES256 --kid w1 --out wallet-1.pem --jwks wallet-1.jwks.json
kg --alg ES256 --kid lux1 --out lux-hotels.pem --jwks lux-hotels.jwks.json
kg --alg EdDSA --kid cp --out checkpoint.pem --jwks checkpoint.jwks.json --pub checkpoint.pub.pem
token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
AGENT=$(token) GW_ADMIN=$(token) W_ADMIN=$(token)
umask 077
echo "$AGENT" > agent.token
echo "$GW_ADMIN" > gateway-admin.token
echo "$W_ADMIN" > wallet-admin.token
cat > gateway.json <<JSON
{"listen": "127.0.0.1:$GATEWAY_PORT", "workers": 2, "database": "/var/lib/mandate/gateway.db",
 "admin": {"listen": "127.0.0.1:$ADMIN_PORT", "token_sha256": "$(sha "$GW_ADMIN")"},
 "audit": {"origin": "docker.demo/audit", "checkpoint_key": "checkpoint.pem"},
 "issuers": [{"id": "wallet-1", "jwks_file": "wallet-1.jwks.json"}],
 "merchants": [{"id": "lux-hotels", "upstream": "http://127.0.0.1:$MERCHANT_PORT",
   "jwks_file": "lux-hotels.jwks.json", "routes": [
     {"method": "GET",  "path": "/lux/search",     "action": "search"},
     {"method": "POST", "path": "/lux/quote",      "action": "quote_room"},
     {"method": "POST", "path": "/lux/book",       "action": "book_room", "priced": true},
     {"method": "GET",  "path": "/lux/bookings/*", "action": "get_booking"}]}],
 "log_level": "info"}
JSON
cat > wallet.json <<JSON
{"id": "wallet-1", "listen": "127.0.0.1:$WALLET_PORT", "database": "/var/lib/mandate/wallet.db",
 "signing_key": {"kid": "w1", "alg": "ES256", "file": "wallet-1.pem"},
 "admin": {"token_sha256": "$(sha "$W_ADMIN")"},
 "merchants": [{"id": "lux-hotels", "jwks_file": "lux-hotels.jwks.json"}],
 "principals": [{"id": "alice",
   "spend_cap": {"value": 50000, "currency": "EUR", "period": "day"},
   "max_per_payment": {"value": 50000, "currency": "EUR"},
   "approval_above": {"value": 40000, "currency": "EUR"},
   "allow": [{"merchant": "lux-hotels", "actions": ["search", "quote_room", "book_room", "get_booking"]}]}],
 "agents": [{"id": "agent-planner", "principal": "alice", "token_sha256": "$(sha "$AGENT")"}],
 "gateways": [{"admin_url": "http://127.0.0.1:$ADMIN_PORT", "token_file": "gateway-admin.token"}]}
JSON
mandate-gateway --check-config --config gateway.json
mandate-wallet --check-config --config wallet.json
echo "init: keys and configurations in /etc/mandate"
