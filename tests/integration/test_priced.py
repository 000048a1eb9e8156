"""Priced actions through the real gateway in front of the demo merchant (SPEC §1.2, §1.3,
§2.1): the happy path, every priced denial (the merchant books nothing), the spend cap under
concurrency, outcomes that release or keep a reservation, and a kill -9 in between. Every log
these tests produce replays without a violation."""
import json
import os
import signal
import threading
import time

import pytest

from conftest import binary, run, write_json


def replay_ok(g):
    r = run(binary("mandate-audit"), "replay", "--db", os.path.join(g.d, "gateway.db"),
            "--jwks", "wallet-1=" + os.path.join(g.d, "wallet-1.jwks.json"),
            "--jwks", "lux-hotels=" + os.path.join(g.d, "lux-hotels.jwks.json"))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def s(shop):
    shop.conf["limits"]["upstream_timeout_ms"] = 1000
    write_json(shop.config_path, shop.conf)
    return shop.start()


def denied(g, status, code, payment, cart, query=""):
    before = g.bookings()
    st, h, body, _ = g.book(payment, cart, query)
    assert (st, body.get("error")) == (status, code), (st, body)
    assert g.bookings() == before


def test_happy_path_quote_pay_book(s):
    st, _, body, _ = s.request("POST", "/lux/quote", s.mint(action="quote_room"),
                               body=json.dumps({"sku": "deluxe", "nights": 1}))
    assert st == 201, body
    cart = body["cart"]
    st, h, body, _ = s.book(s.pay(cart), cart)
    assert st == 201, body
    assert body["amount"] == "18000 EUR" and body["principal"] == "alice"
    assert "mandate-receipt" in h
    st, _, got, _ = s.request("GET", "/lux/bookings/" + body["booking_id"],
                              s.mint(action="get_booking"))
    assert st == 200 and got["amount"] == "18000 EUR"
    s.gw.stop()
    replay_ok(s)


def test_every_priced_denial(s):
    now = int(time.time())
    c = s.cart()
    denied(s, 402, "payment_required", s.mint(action="book_room"), c)  # an intent mandate
    denied(s, 402, "payment_required", s.pay(c), None)  # no Mandate-Cart
    denied(s, 403, "cart_invalid", s.pay(s.cart(key=s.key, kid="w1")), s.cart(key=s.key, kid="w1"))
    other = s.cart(iss="wallet-1", key=s.key, kid="w1")
    denied(s, 403, "cart_invalid", s.pay(other), other)  # not signed by this merchant
    bad_sum = s.cart(total=18000, items=[{"sku": "x", "qty": 2,
                                          "unit": {"value": 1, "currency": "EUR"}}])
    denied(s, 403, "cart_invalid", s.pay(bad_sum), bad_sum)
    old = s.cart(iat=now - 700, exp=now - 60)
    denied(s, 403, "cart_expired", s.pay(old), old)
    bob = s.cart(sub="bob")
    denied(s, 403, "cart_mismatch", s.pay(bob, sub="alice"), bob)  # another principal's cart
    act = s.cart(action="cancel_room")
    denied(s, 403, "cart_mismatch", s.pay(act), act)
    denied(s, 403, "cart_mismatch", s.pay(s.cart()), c)  # hash of another cart
    denied(s, 403, "amount_mismatch", s.pay(c, total={"value": 1, "currency": "EUR"}), c)
    denied(s, 403, "spend_cap_exceeded", s.pay(c, cap=10000), c)
    # A cart is paid once, even with a second, fresh payment mandate.
    assert s.book(s.pay(c), c)[0] == 201
    denied(s, 403, "cart_used", s.pay(c), c)
    s.gw.stop()
    replay_ok(s)


def test_concurrent_cap_exactly_ten(s):
    """Cap 10,000 EUR a day, 30 clients at once each paying a distinct 1,000 EUR cart: exactly
    10 forwarded, 20 refused, whatever the interleaving; twenty times."""
    for round_ in range(20):
        who = f"alice-{round_}"
        pairs = []
        for _ in range(30):
            c = s.cart(total=100000, sub=who)
            pairs.append((s.pay(c, cap=1000000, sub=who), c))
        before = s.bookings()
        results = []
        start = threading.Barrier(30)

        def one(p, c):
            start.wait()
            st, _, body, _ = s.book(p, c)
            results.append(body.get("error", st) if st != 201 else 201)

        threads = [threading.Thread(target=one, args=pc) for pc in pairs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results.count(201) == 10, (round_, results)
        assert results.count("spend_cap_exceeded") == 20, (round_, results)
        assert s.bookings() - before == 10
    s.gw.stop()
    replay_ok(s)


def test_merchant_500_releases(s):
    c1 = s.cart(total=15000)
    st, _, body, _ = s.book(s.pay(c1, cap=20000), c1, "?simulate=500")
    assert st == 500 and body["error"] == "simulated failure"  # passed through unchanged
    c2 = s.cart(total=15000)  # fits only because the first was released
    assert s.book(s.pay(c2, cap=20000), c2)[0] == 201
    s.gw.stop()
    replay_ok(s)


def test_merchant_hang_keeps(s):
    c1 = s.cart(total=15000)
    st, _, body, _ = s.book(s.pay(c1, cap=20000), c1, "?simulate=hang")
    assert (st, body["error"]) == (504, "upstream_timeout")
    c2 = s.cart(total=15000)  # would fit only if the unknown one were released
    denied(s, 403, "spend_cap_exceeded", s.pay(c2, cap=20000), c2)
    s.gw.stop()
    replay_ok(s)


def test_kill9_between_reservation_and_outcome(s):
    c1 = s.cart(total=15000)

    def pay_and_hang():
        try:
            s.book(s.pay(c1, cap=20000), c1, "?simulate=hang")
        except Exception:  # the gateway is killed under this request
            pass

    t = threading.Thread(target=pay_and_hang)
    t.start()
    time.sleep(0.4)  # decided, committed, forwarded; the merchant hangs
    s.gw.stop(signal.SIGKILL)
    t.join(10)
    s.start()
    c2 = s.cart(total=15000)
    denied(s, 403, "spend_cap_exceeded", s.pay(c2, cap=20000), c2)
    c3 = s.cart(total=5000)
    assert s.book(s.pay(c3, cap=20000), c3)[0] == 201
    s.gw.stop()
    replay_ok(s)


def test_refused_upstream_releases_the_reservation(shop):
    """Nothing listens upstream: the payment was never sent, so its reservation is released
    (SPEC §2.1 step 6), not kept as unknown; with a 20,000 all-time cap a second 15,000 payment
    still fits."""
    shop.start(upstream=False)
    for _ in range(2):
        c = shop.cart(total=15000)
        st, _, body, _ = shop.book(shop.pay(c, cap=20000, period="total"), c)
        assert (st, body["error"]) == (502, "upstream_unavailable"), body
    shop.gw.stop()
    r = run(binary("mandate-audit"), "export", "--db", os.path.join(shop.d, "gateway.db"))
    spends = [json.loads(l).get("spend") for l in r.stdout.splitlines()
              if '"kind":"outcome"' in l]
    assert spends == ["released", "released"]


def test_revoked_cart_key_or_cart_stops_payment(s):
    """SPEC §2.3: a revocation names a kid of any issuer; the merchant's cart key and a cart's
    jti stop the payments that use them."""
    c = s.cart(total=1000)
    payload = json.loads(__import__("base64").urlsafe_b64decode(c.split(".")[1] + "=="))
    assert s.admin("POST", "/admin/revocations", {"jti": payload["jti"]})[0] == 201
    denied(s, 403, "mandate_revoked", s.pay(c), c)
    c2 = s.cart(total=1000)
    assert s.admin("POST", "/admin/revocations", {"kid": "lux1"})[0] == 201
    denied(s, 403, "mandate_revoked", s.pay(c2), c2)
