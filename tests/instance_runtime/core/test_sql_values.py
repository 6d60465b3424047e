"""`core.sql_values`: values as PocketBase's SQL console prints them (the expected texts are
PocketBase 0.40.6's answers to the same queries)."""

from __future__ import annotations

import pytest

from instance_runtime.core.sql_values import console_value, go_float, go_text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.5, "1.5"),
        (1.0, "1"),
        (2.0, "2"),
        (100000000.0, "1e+08"),
        (1e300, "1e+300"),
        (0.00001, "1e-05"),
        (0.0001, "0.0001"),
        (123456.0, "123456"),
        (1234567.0, "1.234567e+06"),
        (-2.5e-7, "-2.5e-07"),
        (0.1 + 0.2, "0.30000000000000004"),
        (0.0, "0"),
        (-0.0, "-0"),
        (float("inf"), "+Inf"),
        (float("nan"), "NaN"),
    ],
)
def test_floats_as_go_formats_them(value: float, text: str) -> None:
    assert go_float(value) == text


@pytest.mark.parametrize(
    ("value", "decltype", "text"),
    [
        (None, "TEXT", None),
        (9223372036854775807, "", "9223372036854775807"),
        ("é", "", "é"),
        (b"A", "BLOB", "A"),
        (b"\x00\xff", "", "\x00\ufffd"),
        ("2024-01-01 10:00:00", "DATETIME", "2024-01-01T10:00:00Z"),
        ("2024-01-01T10:00:00.123Z", "timestamp", "2024-01-01T10:00:00.123Z"),
        ("2024-01-01", "DATE", "2024-01-01T00:00:00Z"),
        ("2024-01-01 10:00", "DATETIME", "2024-01-01T10:00:00Z"),
        ("2024-01-01 10:00:00.5+02:00", "DATETIME", "2024-01-01T10:00:00.5+02:00"),
        ("2024-02-30", "DATE", "2024-02-30"),
        ("nope", "DATETIME", "nope"),
        ("2024-01-01 10:00:00", "TEXT", "2024-01-01 10:00:00"),
    ],
)
def test_console_values(value: object, decltype: str, text: str | None) -> None:
    assert console_value(value, decltype) == text


def test_invalid_utf8_is_replaced_byte_by_byte() -> None:
    assert go_text(b"a\xe2\x82b") == "a\ufffd\ufffdb"
    assert go_text(b"\xed\xa0\x80") == "\ufffd" * 3
    assert go_text("ok é".encode()) == "ok é"
