"""The per-collection record codec gives exactly what the general paths give: `decode` what
`from_db` gives field by field, `serialize` PocketBase's JSON with its keys in sorted order."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from instance_runtime.core import records
from instance_runtime.core.fields import from_db
from instance_runtime.core.models import Collection, Field
from instance_runtime.core.record_codec import codec_of, email_visible
from instance_runtime.core.request_info import SUPERUSERS, RequestInfo
from instance_runtime.core.system_collections import SYSTEM_COLLECTIONS


def _reference(
    coll: Collection,
    record: dict[str, Any],
    info: RequestInfo,
    expand: dict[str, Any] | None,
    show_email: bool,
) -> dict[str, Any]:
    """`records.serialize` as it was before the codec (the contract it keeps)."""
    out: dict[str, Any] = {"collectionId": coll.id, "collectionName": coll.name}
    for f in coll.fields:
        if coll.is_auth and f.name in ("password", "tokenKey"):
            continue
        if f.hidden and not info.is_superuser:
            continue
        if f.type == "password":
            out[f.name] = ""
            continue
        out[f.name] = record.get(f.name, f.zero_value())
    hide_email = not show_email and not email_visible(coll, record, info)
    if coll.is_auth and "email" in out and hide_email:
        del out["email"]
    if expand is not None:
        out["expand"] = expand
    return dict(sorted(out.items()))


def _users() -> Collection:
    raw = next(c for c in SYSTEM_COLLECTIONS if c["name"] == "users")
    coll = Collection.from_json(copy.deepcopy(raw))
    coll.fields.append(Field(name="secret", type="text", hidden=True))
    coll.fields.append(Field(name="zeta", type="number"))
    return coll


def _base() -> Collection:
    return Collection(
        name="items",
        fields=[
            Field(name="id", type="text", system=True),
            Field(name="title", type="text"),
            Field(name="n", type="number"),
            Field(name="tags", type="select", options={"maxSelect": 3, "values": ["a", "b"]}),
            Field(name="one", type="select", options={"maxSelect": 1, "values": ["a", "b"]}),
            Field(name="data", type="json"),
            Field(name="ok", type="bool"),
            Field(name="where", type="geoPoint"),
            Field(name="Alpha", type="text", hidden=True),
        ],
    )


def _infos(users: Collection) -> dict[str, RequestInfo]:
    superusers = Collection(name=SUPERUSERS, type="auth")
    return {
        "guest": RequestInfo(),
        "owner": RequestInfo(auth={"id": "u1"}, auth_collection=users),
        "other user": RequestInfo(auth={"id": "u2"}, auth_collection=users),
        "superuser": RequestInfo(auth={"id": "s1"}, auth_collection=superusers),
    }


@pytest.mark.parametrize("who", ["guest", "owner", "other user", "superuser"])
@pytest.mark.parametrize("expand", [None, {}, {"rel": {"id": "x"}}])
@pytest.mark.parametrize("show_email", [False, True])
@pytest.mark.parametrize("visible", [False, True])
def test_serialize_matches_the_general_path(
    who: str, expand: dict[str, Any] | None, show_email: bool, visible: bool
) -> None:
    users = _users()
    info = _infos(users)[who]
    record = {f.name: f.zero_value() for f in users.fields}
    record.update(id="u1", email="a@example.com", emailVisibility=visible, secret="s", zeta=2)
    record["password"], record["tokenKey"] = "hash", "key"
    got = records.serialize(users, record, info, expand, show_email=show_email)
    want = _reference(users, record, info, expand, show_email)
    assert got == want and list(got) == list(want)
    assert "password" not in got and "tokenKey" not in got

    base = _base()
    partial = {"id": "r1", "title": "t"}  # fields missing from the record: their zero values
    got = records.serialize(base, partial, info, expand)
    want = _reference(base, partial, info, expand, False)
    assert got == want and list(got) == list(want)
    assert got["tags"] == [] and got["tags"] is not records.serialize(base, partial, info)["tags"]


def test_a_field_named_like_an_added_key_takes_the_general_path() -> None:
    coll = Collection(name="odd", fields=[Field(name="id", type="text"), Field("expand", "text")])
    assert not codec_of(coll).fast
    record = {"id": "r1", "expand": "mine"}
    assert records.serialize(coll, record, RequestInfo()) == {
        "collectionId": coll.id,
        "collectionName": "odd",
        "expand": "mine",
        "id": "r1",
    }
    assert records.serialize(coll, record, RequestInfo(), {"x": 1})["expand"] == {"x": 1}


_RAW_VALUES: list[Any] = [
    None,
    "",
    "text",
    '["a","b","a"]',
    "[not json",
    "[1, 2]",
    b"bytes",
    0,
    7,
    -3,
    2**53,
    2**53 + 1,
    2.5,
    2.0,
    float("inf"),
    True,
    '{"lon": 1, "lat": 2}',
    "1",
    "true",
]


@pytest.mark.parametrize("raw", _RAW_VALUES, ids=repr)
def test_decode_matches_from_db_for_every_field_type(raw: Any) -> None:
    coll = _base()
    row = [raw] * len(coll.fields)
    decoded = codec_of(coll).decode(row)
    assert decoded == {f.name: from_db(f, raw) for f in coll.fields}
    assert records.row_to_record(coll, coll.field_names(), row) == decoded


def test_a_collection_whose_fields_change_gets_a_new_codec() -> None:
    coll = _base()
    first = codec_of(coll)
    assert codec_of(coll) is first
    coll.fields = [*coll.fields, Field(name="extra", type="number")]
    second = codec_of(coll)
    assert second is not first and "extra" in second.names
    row = [None] * len(coll.fields)
    assert records.row_to_record(coll, coll.field_names(), row)["extra"] == 0
