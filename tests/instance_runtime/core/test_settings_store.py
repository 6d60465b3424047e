"""core.settings and core.settings_validation: PocketBase's decoding, masking and validation."""

from __future__ import annotations

import copy
import sqlite3
from typing import Any

import pytest

from instance_runtime.core import settings
from instance_runtime.core.errors import errors_to_json
from instance_runtime.core.settings_validation import validate


def test_objects_merge_lists_replace_unknown_and_null_are_ignored() -> None:
    base = copy.deepcopy(settings.DEFAULTS)
    out = settings.patched(
        base,
        {
            "meta": {"appName": "X", "nope": 1},
            "rateLimits": {"rules": [{"label": "/api/", "maxRequests": 5}]},
            "smtp": {"host": None},
            "extra": True,
        },
    )
    assert out["meta"]["appName"] == "X" and out["meta"]["appURL"] == base["meta"]["appURL"]
    assert "nope" not in out["meta"] and "extra" not in out
    assert out["rateLimits"]["rules"] == [
        {"label": "/api/", "audience": "", "duration": 0, "maxRequests": 5}
    ]
    assert out["smtp"]["host"] == base["smtp"]["host"]
    assert base == settings.DEFAULTS, "the input is never changed"


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ({"batch": {"enabled": "yes"}}, "batch.enabled"),
        ({"batch": {"maxRequests": 1.5}}, "batch.maxRequests"),
        ({"batch": {"maxRequests": True}}, "batch.maxRequests"),
        ({"meta": "x"}, "meta"),
        ({"superuserIPs": "1.2.3.4"}, "superuserIPs"),
        ({"superuserIPs": [1]}, "superuserIPs.0"),
        ({"rateLimits": {"rules": [{"label": 3}]}}, "rateLimits.rules.0.label"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(patch: dict[str, Any], path: str) -> None:
    with pytest.raises(settings.SettingsTypeError) as caught:
        settings.patched(settings.DEFAULTS, patch)
    assert caught.value.path == path


def test_a_whole_number_written_as_a_float_is_an_integer() -> None:
    assert settings.patched(settings.DEFAULTS, {"batch": {"timeout": 4.0}})["batch"]["timeout"] == 4


def test_secrets_are_kept_but_never_shown() -> None:
    values = settings.patched(
        settings.DEFAULTS,
        {"smtp": {"password": "p"}, "s3": {"secret": "s"}, "backups": {"s3": {"secret": "b"}}},
    )
    shown = settings.public(values)
    assert "password" not in shown["smtp"] and "secret" not in shown["s3"]
    assert "secret" not in shown["backups"]["s3"]
    assert values["smtp"]["password"] == "p", "public() copies"


def test_stored_settings_load_over_the_defaults() -> None:
    conn = sqlite3.connect(":memory:")
    assert settings.load(conn) == settings.DEFAULTS
    settings.store(conn, settings.patched(settings.DEFAULTS, {"meta": {"appName": "Stored"}}))
    loaded = settings.load(conn)
    assert loaded["meta"]["appName"] == "Stored"
    assert loaded["smtp"]["password"] == ""


def test_the_defaults_are_valid() -> None:
    assert validate(settings.DEFAULTS) == {}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"meta": {"appName": ""}}, {"meta": {"appName": "validation_required"}}),
        ({"meta": {"appURL": "nope"}}, {"meta": {"appURL": "validation_is_url"}}),
        ({"smtp": {"enabled": True, "host": ""}}, {"smtp": {"host": "validation_required"}}),
        ({"smtp": {"authMethod": "CRAM"}}, {"smtp": {"authMethod": "validation_in_invalid"}}),
        (
            {"batch": {"maxBodySize": -1}},
            {"batch": {"maxBodySize": "validation_min_greater_equal_than_required"}},
        ),
        (
            {"logs": {"maxDays": -1}},
            {"logs": {"maxDays": "validation_min_greater_equal_than_required"}},
        ),
        (
            {"superuserIPs": ["10.0.0.0/33"]},
            {"superuserIPs": {"0": "validation_invlaid_ip_or_subnet"}},
        ),
        (
            {"backups": {"cron": "0 0 * * *", "cronMaxKeep": 0}},
            {"backups": {"cronMaxKeep": "validation_required"}},
        ),
        (
            {
                "rateLimits": {
                    "rules": [{"label": "a:b", "maxRequests": 1, "duration": 1, "audience": "@x"}]
                }
            },
            {"rateLimits": {"rules": {"0": {"audience": "validation_in_invalid"}}}},
        ),
    ],
)
def test_what_pocketbase_refuses_is_refused(
    patch: dict[str, Any], expected: dict[str, Any]
) -> None:
    found = errors_to_json(validate(settings.patched(settings.DEFAULTS, patch)))

    def codes(node: dict[str, Any]) -> dict[str, Any]:
        return {k: v["code"] if "code" in v else codes(v) for k, v in node.items()}

    assert codes(found) == expected
