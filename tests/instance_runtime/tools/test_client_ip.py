"""tools.client_ip: PocketBase's RealIP behind trusted proxy headers, and IP lists."""

from __future__ import annotations

from instance_runtime.tools.client_ip import ip_in_list, real_ip

HEADERS = {"x-forwarded-for": ["9.9.9.9", "1.1.1.1, bogus, 2.2.2.2"], "x-real-ip": ["::1"]}


def _values(name: str) -> list[str]:
    return HEADERS.get(name.lower(), [])


def test_without_trusted_headers_the_remote_address_is_the_client() -> None:
    assert real_ip("127.0.0.1", _values, [], False) == "127.0.0.1"


def test_the_last_header_value_rightmost_or_leftmost_ip() -> None:
    assert real_ip("127.0.0.1", _values, ["X-Forwarded-For"], False) == "2.2.2.2"
    assert real_ip("127.0.0.1", _values, ["X-Forwarded-For"], True) == "1.1.1.1"


def test_absent_headers_are_skipped_and_ipv6_is_written_out() -> None:
    assert real_ip("127.0.0.1", _values, ["CF-Connecting-IP", "X-Real-IP"], False) == (
        "0000:0000:0000:0000:0000:0000:0000:0001"
    )


def test_ip_lists_hold_addresses_and_subnets() -> None:
    assert ip_in_list(["10.0.0.0/8", "192.168.1.1"], "10.2.3.4")
    assert ip_in_list(["10.0.0.0/8", "192.168.1.1"], "192.168.1.1")
    assert not ip_in_list(["10.0.0.0/8", "nope"], "11.0.0.1")
    assert not ip_in_list([], "10.0.0.1") and not ip_in_list(["10.0.0.0/8"], "")
