"""Remote key sets in the wallet (SPEC §7): a merchant's carts checked against the key set at its
`jwks_uri`, fetched by the wallet with the gateway's fetcher on the wallet's one loop. The key
server (http.server on 127.0.0.1, in this process) is test_jwks_remote's: it counts fetches."""
import os

import pytest

from conftest import Stack, binary, keygen, run, wait_for, write_json, _jwk
from test_jwks_remote import KeyServer


@pytest.fixture
def keyserver():
    ks = KeyServer()
    yield ks
    ks.stop()


def remote_stack(d, procs, ks):
    """The conftest stack with the wallet's merchant keys at ks's jwks_uri instead of a file (the
    gateway keeps its file)."""
    s = Stack(d, procs)
    s.wallet_conf["merchants"] = [{"id": "lux-hotels", "jwks_uri": ks.uri}]
    write_json(s.wallet_path, s.wallet_conf)
    ks.set_keys(os.path.join(d, "lux-hotels.jwks.json"))
    keygen(d, "lux-hotels-2", kid="lux2")  # the merchant's next key, published when a test says
    with open(os.path.join(d, "lux-hotels-2.pem"), "rb") as f:
        s.merchant_key2 = _jwk.JWK.from_pem(f.read())
    s.jwks2 = os.path.join(d, "lux-hotels-2.jwks.json")
    return s


def readyz(s):
    st, _, body, _ = s.request("GET", "/readyz", port=s.wallet_port)
    return st, body


def pay(s, cart):
    st, _, body, _ = s.w("POST", "/v1/mandates/payment", {"cart": cart})
    return st, body and body.get("error")


def test_cart_checked_with_the_fetched_set(tmp_path, procs, keyserver):
    keyserver.start()
    s = remote_stack(str(tmp_path), procs, keyserver).start()
    wait_for(lambda: readyz(s)[0] == 200, what="the merchant's key set")
    assert keyserver.count() == 1
    assert pay(s, s.cart(total=12000)) == (201, None)
    # A cart the merchant really signed (its demo service, through the gateway) is paid and booked.
    cart = s.quote("standard")
    st, _, body, _ = s.w("POST", "/v1/mandates/payment", {"cart": cart})
    assert st == 201, body
    assert s.book(body["mandate"], cart)[0] == 201
    # Another key of the same merchant is unknown: refused as an invalid cart, not a 503.
    assert pay(s, s.cart(total=12000, key=s.merchant_key2, kid="lux2")) == (422, "cart_invalid")


def test_rotation_is_picked_up_with_one_refetch(tmp_path, procs, keyserver):
    keyserver.start()
    s = remote_stack(str(tmp_path), procs, keyserver).start()
    wait_for(lambda: readyz(s)[0] == 200, what="the merchant's key set")
    keyserver.set_keys(s.jwks2)  # the merchant rotates: lux1 is gone, lux2 is new
    new_cart = lambda: s.cart(total=12000, key=s.merchant_key2, kid="lux2")  # noqa: E731
    assert pay(s, new_cart()) == (422, "cart_invalid")
    wait_for(lambda: pay(s, new_cart()) == (201, None), what="the rotated key in use")
    assert keyserver.count() == 2
    assert "refetched for an unknown kid" in s.wallet.output()
    assert pay(s, s.cart(total=12000)) == (422, "cart_invalid")  # lux1 is gone


def test_merchant_without_keys_gets_503_then_recovers(tmp_path, procs, keyserver):
    s = remote_stack(str(tmp_path), procs, keyserver).start()
    s.wallet.expect_error(r"jwks merchant lux-hotels: fetching .* failed: .*no keys yet")
    wait_for(lambda: "no keys yet" in s.wallet.output(), what="the failed first fetch logged")
    st, body = readyz(s)
    assert st == 503 and body["error"] == "unavailable", body
    assert body["message"] == "no keys fetched yet for merchant lux-hotels", body
    # SPEC §7: a cart of a merchant whose keys never came is the wallet's 503, not a refusal.
    st, _, body, _ = s.w("POST", "/v1/mandates/payment", {"cart": s.cart(total=12000)})
    assert st == 503 and body["error"] == "unavailable" and "jwks_uri" in body["message"], body
    # Minting intents does not need the merchant's keys.
    assert s.intent("search")
    keyserver.start()
    wait_for(lambda: readyz(s)[0] == 200, timeout=15, what="recovery")
    assert pay(s, s.cart(total=12000)) == (201, None)


def test_config_rules_are_the_gateways(tmp_path, procs):
    s = Stack(str(tmp_path), procs)

    def check(merchant):
        s.wallet_conf["merchants"] = [merchant]
        write_json(s.wallet_path, s.wallet_conf)
        return run(binary("mandate-wallet"), "--config", s.wallet_path, "--check-config")

    for uri, why in [("http://192.0.2.1/jwks.json", "loopback"),
                     ("ftp://127.0.0.1/jwks.json", "https://"),
                     ("https://user@keys.example/jwks.json", "user information")]:
        r = check({"id": "lux-hotels", "jwks_uri": uri})
        assert r.returncode != 0 and "merchants[0].jwks_uri" in r.stderr and why in r.stderr, \
            (uri, r.stderr)
    r = check({"id": "lux-hotels", "jwks_uri": "http://127.0.0.1:9/jwks.json",
               "jwks_file": "lux-hotels.jwks.json"})
    assert r.returncode != 0 and "not both" in r.stderr, r.stderr
    r = check({"id": "lux-hotels", "jwks_uri": "http://127.0.0.1:9/jwks.json",
               "jwks_ca_file": "lux-hotels.jwks.json"})
    assert r.returncode != 0 and "merchants[0].jwks_ca_file" in r.stderr, r.stderr
    r = check({"id": "lux-hotels", "jwks_file": "lux-hotels.jwks.json",
               "jwks_ca_file": "lux-hotels.jwks.json"})
    assert r.returncode != 0 and "only with jwks_uri" in r.stderr, r.stderr
    r = check({"id": "lux-hotels"})
    assert r.returncode != 0 and "merchants[0].jwks_file" in r.stderr, r.stderr
    r = check({"id": "lux-hotels", "jwks_uri": "http://127.0.0.1:9/jwks.json"})
    assert r.returncode == 0, r.stderr
