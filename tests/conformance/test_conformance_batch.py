"""Batch API (pb.createBatch()): all or nothing, and its limits; batches with file uploads,
whose stored files must also be the same as PocketBase's (a failed batch stores nothing)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conformance.harness import EMAIL, PASSWORD, REFERENCE, Conformance
from tests.conformance.scenarios import BATCH, BATCH_FILES
from tests.support.engines import EngineProcess


@pytest.mark.parametrize("scenario", BATCH)
def test_batch(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)


# --- batches with files: the same traces, and the same files left in each engine's storage ---

STORED_BY_SCENARIO = {"batch-files-upload": "bfu_docs", "batch-files-rollback": "bfr_docs"}
_RANDOM = re.compile(r"_[a-z0-9]{10}(?=[._])")


def _stored_files(engine: EngineProcess, collection: str) -> list[str]:
    """The masked names of every file the engine stores for `collection` (PocketBase's
    `.attrs` sidecars left out), sorted."""
    with httpx.Client(base_url=engine.url, timeout=30) as client:
        auth = client.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        )
        token = auth.json()["token"]
        coll = client.get(f"/api/collections/{collection}", headers={"Authorization": token})
        coll_id = coll.json()["id"]
    folder = engine.root / "pb_data" / "storage" / coll_id
    names = [p.name for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".attrs")]
    return sorted(_RANDOM.sub("_<random>", name) for name in names)


@pytest.mark.parametrize("scenario", BATCH_FILES)
def test_batch_files(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)
    if engine == REFERENCE:
        return
    collection = STORED_BY_SCENARIO[scenario]
    reference = _stored_files(conformance.engines[REFERENCE], collection)
    candidate = _stored_files(conformance.engines[engine], collection)
    assert candidate == reference  # a failed batch left no file behind, as on PocketBase
