"""The collection model round-trips PocketBase's JSON and its `_collections` rows."""

from __future__ import annotations

from instance_runtime.core.models import Collection, Field
from instance_runtime.core.system_collections import SYSTEM_COLLECTIONS


def test_system_collections_round_trip_json_and_rows() -> None:
    for raw in SYSTEM_COLLECTIONS:
        coll = Collection.from_json(raw)
        data = {**raw, "created": "", "updated": ""}
        assert coll.to_json() == data
        assert Collection.from_row(coll.to_row()).to_json() == data


def test_ids_are_pocketbase_checksums() -> None:
    assert Collection(name="_superusers", type="auth").id == "pbc_3142635823"
    assert Field(name="id", type="text").id == "text3208210256"


def test_field_defaults_and_helpers() -> None:
    many = Field.from_json({"name": "tags", "type": "select", "values": ["a"], "maxSelect": 2})
    one = Field.from_json({"name": "tag", "type": "select", "values": ["a"]})
    assert many.is_multiple and not one.is_multiple
    assert many.column_definition() == "JSON DEFAULT '[]' NOT NULL"
    assert one.column_definition() == "TEXT DEFAULT '' NOT NULL"
    assert Field(name="n", type="number").to_json()["min"] is None
    coll = Collection(name="c", fields=[many, one])
    assert coll.field("tags") is many and coll.field("nope") is None


def test_token_secrets_never_leave_the_database() -> None:
    coll = Collection(name="u", type="auth", options={"authToken": {"duration": 5, "secret": "s"}})
    assert coll.to_json()["authToken"] == {"duration": 5}
    assert "secret" in coll.to_row()["options"]
