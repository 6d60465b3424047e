"""Sign-in hand-offs: single use, bound to their host, short-lived, safely embedded."""

from __future__ import annotations

from proxy.handoff import HandoffStore, handoff_page


def test_a_code_is_redeemed_once_on_its_host_only() -> None:
    store = HandoffStore()
    code = store.issue("Shop.localhost", {"k": "v"}, "/_/")
    assert store.redeem("other.localhost", code) is None
    assert store.redeem("shop.localhost", code) is None  # burnt by the wrong host
    code = store.issue("shop.localhost", {"k": "v"}, "/_/")
    handoff = store.redeem("shop.localhost", code)
    assert handoff is not None and handoff.storage == {"k": "v"} and handoff.then == "/_/"
    assert store.redeem("shop.localhost", code) is None


def test_an_expired_code_is_refused() -> None:
    store = HandoffStore(ttl_s=-1)
    code = store.issue("shop.localhost", {"k": "v"}, "/_/")
    assert store.redeem("shop.localhost", code) is None


def test_the_page_cannot_be_broken_out_of() -> None:
    store = HandoffStore()
    code = store.issue("a.localhost", {"k": "</script><script>alert(1)</script>"}, "/_/")
    handoff = store.redeem("a.localhost", code)
    assert handoff is not None
    page = handoff_page(handoff, "n0nce").decode()
    assert page.count("</script>") == 1
    assert "<script nonce=n0nce>" in page
    assert "\\u003c/script\\u003e" in page
