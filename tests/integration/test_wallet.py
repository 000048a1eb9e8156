"""The wallet (SPEC §3) with the gateway and the demo merchant: minting under policy, the
approval flow, revocation pushed to the gateway, its JWKS checked by an outside JOSE library,
and its database recording every mint and refusal."""
import json
import os
import sqlite3
import time

from jwcrypto import jwk, jws

from conftest import WALLET_ADMIN, binary, run


def test_intent_minted_and_forwarded(stack):
    tok = stack.intent("search", uses=2, ttl_s=120)
    st, _, body, _ = stack.request("GET", "/lux/search", tok)
    assert st == 200 and body["rooms"]
    assert stack.request("GET", "/lux/search", tok)[0] == 200
    assert stack.request("GET", "/lux/search", tok)[2]["error"] == "mandate_used"


def test_search_quote_pay_book(stack):
    assert stack.request("GET", "/lux/search", stack.intent("search"))[0] == 200
    cart = stack.quote("standard", 1)  # 9,000 EUR: under approval_above
    st, _, body, _ = stack.w("POST", "/v1/mandates/payment", {"cart": cart})
    assert st == 201, body
    st, _, booked, _ = stack.book(body["mandate"], cart)
    assert st == 201 and booked["amount"] == "9000 EUR"


def test_bad_agent_token(stack):
    st, _, body, _ = stack.w("POST", "/v1/mandates/intent",
                             {"merchant": "lux-hotels", "action": "search"}, token="nope")
    assert (st, body["error"]) == (401, "unauthorized")
    assert stack.w("POST", "/v1/mandates/intent", {}, token=None)[0] == 401


def test_policy_denied(stack):
    for body in ({"merchant": "evil-shop", "action": "search"},
                 {"merchant": "lux-hotels", "action": "cancel_everything"},
                 {"merchant": "lux-hotels", "action": "search", "ttl_s": 301}):
        st, _, out, _ = stack.w("POST", "/v1/mandates/intent", body)
        assert (st, out["error"]) == (403, "policy_denied"), (body, out)


def test_over_max_per_payment(stack):
    cart = stack.cart(total=25000)
    st, _, body, _ = stack.w("POST", "/v1/mandates/payment", {"cart": cart})
    assert (st, body["error"]) == (403, "over_max_per_payment")
    st, _, body, _ = stack.w("POST", "/v1/mandates/payment",
                             {"cart": stack.cart(total=100, sub="bob")})
    assert (st, body["error"]) == (422, "cart_invalid")
    forged = stack.cart(total=100, key=stack.key, kid="w1")
    st, _, body, _ = stack.w("POST", "/v1/mandates/payment", {"cart": forged})
    assert (st, body["error"]) == (422, "cart_invalid")


def cli(stack, *args):
    return run(binary("mandate-wallet"), *args, "--config", stack.wallet_path,
               "--admin-token-file", os.path.join(stack.d, "wallet-admin.token"))


def test_approval_flow(stack):
    cart = stack.quote("deluxe", 1)  # 18,000 EUR: above approval_above (15,000)
    st, _, body, _ = stack.w("POST", "/v1/mandates/payment", {"cart": cart})
    assert st == 202 and body["status"] == "pending"
    aid = body["approval_id"]
    assert stack.w("GET", f"/v1/approvals/{aid}")[2] == {"status": "pending"}
    # An agent cannot approve its own payment.
    assert stack.w("POST", f"/v1/approvals/{aid}/approve")[0] == 401
    r = cli(stack, "approvals")
    assert r.returncode == 0 and aid in r.stdout and "18000 EUR" in r.stdout
    r = cli(stack, "approve", aid)
    assert r.returncode == 0, r.stderr
    st, _, body, _ = stack.w("GET", f"/v1/approvals/{aid}")
    assert body["status"] == "approved" and body["mandate"]
    st, _, booked, _ = stack.book(body["mandate"], cart)
    assert st == 201 and booked["amount"] == "18000 EUR"


def test_deny_leaves_nothing(stack):
    cart = stack.quote("deluxe", 1)
    aid = stack.w("POST", "/v1/mandates/payment", {"cart": cart})[2]["approval_id"]
    st, _, body, _ = stack.w("POST", f"/v1/approvals/{aid}/deny", token=WALLET_ADMIN)
    assert (st, body["status"]) == (200, "denied")
    assert stack.w("GET", f"/v1/approvals/{aid}")[2] == {"status": "denied"}
    assert stack.w("POST", f"/v1/approvals/{aid}/approve", token=WALLET_ADMIN)[0] == 409
    assert "mandate" not in stack.w("GET", f"/v1/approvals/{aid}")[2]


def test_revoke_agent_reaches_gateway_fast(stack):
    still_valid = stack.intent("search", uses=5, ttl_s=300)
    assert stack.request("GET", "/lux/search", still_valid)[0] == 200
    t0 = time.monotonic()
    st, _, body, _ = stack.w("POST", "/v1/revocations", {"agent": "agent-planner"},
                             token=WALLET_ADMIN)
    assert st == 201, body
    while True:
        st, _, body, _ = stack.request("GET", "/lux/search", still_valid)
        if st == 403:
            break
        assert time.monotonic() - t0 < 1.0, "the gateway still allows a revoked agent"
    took = time.monotonic() - t0
    assert body["error"] == "mandate_revoked"
    assert took < 0.1, f"revocation took {took * 1000:.0f} ms to reach the gateway"
    st, _, body, _ = stack.w("POST", "/v1/mandates/intent",
                             {"merchant": "lux-hotels", "action": "search"})
    assert (st, body["error"]) == (403, "agent_revoked")
    # The gateway acts on a revocation before its answer reaches the wallet: wait for the ack.
    c = sqlite3.connect(os.path.join(stack.d, "wallet.db"))
    deadline = time.monotonic() + 3
    while c.execute("SELECT status FROM pushes").fetchall() != [("acknowledged",)]:
        assert time.monotonic() < deadline, "the wallet never recorded the gateway's ack"
        time.sleep(0.02)


def test_jwks_verifies_mandates_outside(stack):
    st, _, doc, _ = stack.w("GET", "/.well-known/jwks.json", token=None)
    assert st == 200
    keys = jwk.JWKSet.from_json(json.dumps(doc))
    tok = stack.intent("search")
    check = jws.JWS()
    check.deserialize(tok)
    check.verify(keys.get_key("w1"))
    claims = json.loads(check.payload)
    assert claims["sub"] == "alice" and claims["act"] == {"sub": "agent-planner"}
    assert check.jose_header["typ"] == "intent-mandate+jwt"


def test_database_records_every_mint_and_refusal(stack):
    stack.intent("search")
    stack.w("POST", "/v1/mandates/intent", {"merchant": "evil-shop", "action": "search"})
    stack.w("POST", "/v1/mandates/payment", {"cart": stack.cart(total=25000)})
    c = sqlite3.connect(os.path.join(stack.d, "wallet.db"))
    rows = c.execute("SELECT kind, decision, code, agent, principal, merchant, detail "
                     "FROM events ORDER BY id").fetchall()
    assert ("intent", "minted", None, "agent-planner", "alice", "lux-hotels", None) in rows
    assert any(r[:3] == ("intent", "refused", "policy_denied") and r[5] == "evil-shop"
               for r in rows)
    assert any(r[:3] == ("payment", "refused", "over_max_per_payment") and r[6] for r in rows)


def test_key_rotation_publishes_old_keys(tmp_path, procs):
    """A rotated wallet signs with the new key and still publishes the old one."""
    from conftest import Stack, keygen, write_json
    s = Stack(str(tmp_path), procs)
    keygen(s.d, "wallet-new", kid="w2")
    os.rename(os.path.join(s.d, "wallet-1.jwks.json"), os.path.join(s.d, "previous.jwks.json"))
    s.wallet_conf["signing_key"] = {"kid": "w2", "alg": "ES256", "file": "wallet-new.pem",
                                    "previous_jwks_file": "previous.jwks.json"}
    write_json(s.wallet_path, s.wallet_conf)
    # The gateway trusts both keys of wallet-1 while mandates signed by the old one live.
    with open(os.path.join(s.d, "previous.jwks.json")) as f:
        old = json.load(f)["keys"]
    with open(os.path.join(s.d, "wallet-new.jwks.json")) as f:
        new = json.load(f)["keys"]
    write_json(os.path.join(s.d, "wallet-1.jwks.json"), {"keys": new + old})
    s.start()
    st, _, doc, _ = s.w("GET", "/.well-known/jwks.json", token=None)
    assert [k["kid"] for k in doc["keys"]] == ["w2", "w1"]
    tok = s.intent("search")
    assert json.loads(__import__("base64").urlsafe_b64decode(tok.split(".")[0] + "=="))["kid"] \
        == "w2"
    assert s.request("GET", "/lux/search", tok)[0] == 200
    assert s.request("GET", "/lux/search", s.mint())[0] == 200  # an old-key mandate still verifies


def test_pending_approval_expires_with_the_price_lock(stack):
    cart = stack.cart(total=18000, exp=int(time.time()) + 2)  # a 2-second price lock
    aid = stack.w("POST", "/v1/mandates/payment", {"cart": cart})[2]["approval_id"]
    assert stack.w("GET", f"/v1/approvals/{aid}")[2] == {"status": "pending"}
    time.sleep(3.1)  # whole seconds: the lock ends at the start of second exp
    assert stack.w("GET", f"/v1/approvals/{aid}")[2] == {"status": "expired"}
    st, _, body, _ = stack.w("POST", f"/v1/approvals/{aid}/approve", token=WALLET_ADMIN)
    assert st == 409 and "mandate" not in stack.w("GET", f"/v1/approvals/{aid}")[2]
