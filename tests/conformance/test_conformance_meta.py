"""Self-checks of the conformance harness: every JS scenario has a test, the normaliser masks
what differs between runs and nothing else, and two PocketBase runs compare equal."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conformance.harness import (
    EMAIL,
    PASSWORD,
    difference,
    list_scenarios,
    normalise,
    run_scenario,
    surprises_report,
)
from tests.conformance.scenarios import ALL
from tests.support.engines import EngineProcess, start_engine

NOW = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6ImFiYyJ9.c2lnbmF0dXJl"


def test_every_js_scenario_has_a_test() -> None:
    assert len(ALL) == len(set(ALL)), "a scenario is listed twice in scenarios.py"
    assert sorted(list_scenarios()) == sorted(ALL)


def test_ids_are_numbered_in_order_of_appearance_and_follow_relations() -> None:
    trace = {
        "steps": [
            {"step": "create", "ok": {"id": "zzzzzzzzzzzzzzz", "collectionId": "pbc_1"}},
            {"step": "child", "ok": {"parent": "zzzzzzzzzzzzzzz", "id": "aaaaaaaaaaaaaaa"}},
            {"step": "message", "ok": "Failed to find aaaaaaaaaaaaaaa."},
        ]
    }
    steps = normalise(trace, now=NOW)["steps"]
    # keys are visited sorted: collectionId before id
    assert steps[0]["ok"] == {"collectionId": "<other-id1>", "id": "<id2>"}
    assert steps[1]["ok"] == {"id": "<id3>", "parent": "<id2>"}
    assert steps[2]["ok"] == "Failed to find <id3>."


def test_short_ids_are_not_replaced_inside_text() -> None:
    trace = {"steps": [{"step": "view", "ok": [{"id": "1", "n": "1"}, {"msg": "Must be 10."}]}]}
    assert normalise(trace, now=NOW)["steps"][0]["ok"] == [
        {"id": "<other-id1>", "n": "<other-id1>"},
        {"msg": "Must be 10."},
    ]


def test_key_order_does_not_count() -> None:
    one = {"steps": [{"step": "s", "ok": {"b": 1, "id": "x1", "a": {"id": "x2", "c": 2}}}]}
    two = {"steps": [{"ok": {"a": {"c": 2, "id": "y2"}, "id": "y1", "b": 1}, "step": "s"}]}
    assert normalise(one, now=NOW) == normalise(two, now=NOW)


def test_tokens_and_current_times_are_masked_fixed_dates_are_not() -> None:
    trace = {
        "steps": [
            {"step": "auth", "ok": {"token": TOKEN, "created": "2031-05-06 07:00:00.123Z"}},
            {"step": "data", "ok": {"due": "2024-05-06 07:08:09.123Z", "text": f"x {TOKEN} y"}},
        ]
    }
    steps = normalise(trace, now=NOW)["steps"]
    assert steps[0]["ok"] == {"created": "<now>", "token": "<token>"}
    assert steps[1]["ok"] == {"due": "2024-05-06 07:08:09.123Z", "text": "x <token> y"}


def test_current_times_in_another_format_are_left_to_show() -> None:
    trace = {"steps": [{"step": "s", "ok": {"created": "2031-05-06T07:00:00Z"}}]}
    assert normalise(trace, now=NOW)["steps"][0]["ok"] == {"created": "2031-05-06T07:00:00Z"}


def test_kept_values_stay() -> None:
    trace = {
        "keep": ["givenid00000001"],
        "steps": [{"step": "s", "ok": {"id": "givenid00000001", "other": "givenid00000001"}}],
    }
    assert normalise(trace, now=NOW)["steps"][0]["ok"] == {
        "id": "givenid00000001",
        "other": "givenid00000001",
    }


def test_difference_names_the_steps_and_their_outcomes() -> None:
    reference = {
        "steps": [
            {"step": "same", "ok": 1},
            {"step": "create", "ok": {"title": "a"}},
            {"step": "refused", "error": {"status": 400, "response": {"message": "Bad."}}},
        ]
    }
    candidate = {
        "steps": [
            {"step": "same", "ok": 1},
            {"step": "create", "ok": {"title": "b"}},
            {"step": "refused", "error": {"status": 500, "response": {"message": "Oops."}}},
        ],
        "aborted": "boom",
    }
    assert difference("s", reference, reference) is None
    report = difference("s", reference, candidate)
    assert report is not None
    assert "differs from pocketbase in 2 of 3 steps" in report
    assert "pocketfleet aborted the scenario: boom" in report
    assert "'refused': error 400 -> error 500" in report
    assert '-    "title": "a"' in report
    assert '+    "title": "b"' in report


def test_surprises_are_reported() -> None:
    trace = {"steps": [], "surprises": [{"step": "x", "expected": 400, "got": 200}]}
    report = surprises_report("s", "pocketbase", trace)
    assert report is not None
    assert "step 'x': expected 400, got 200" in report
    assert surprises_report("s", "pocketbase", {"steps": [], "surprises": []}) is None


@pytest.fixture(scope="module")
def two_pocketbases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EngineProcess]]:
    root: Path = tmp_path_factory.mktemp("two-pocketbases")
    engines = [start_engine("pocketbase", root / name, EMAIL, PASSWORD) for name in ("a", "b")]
    try:
        yield engines
    finally:
        for engine in engines:
            engine.stop()


@pytest.mark.parametrize("scenario", ["records-expand", "superusers-auth"])
def test_two_pocketbase_runs_compare_equal(
    two_pocketbases: list[EngineProcess], scenario: str
) -> None:
    """What the normaliser leaves is deterministic: PocketBase against itself shows no diff."""
    a, b = two_pocketbases
    traces = run_scenario(scenario, {"a": a.url, "b": b.url})
    assert difference(scenario, normalise(traces["a"]), normalise(traces["b"]), ("a", "b")) is None
