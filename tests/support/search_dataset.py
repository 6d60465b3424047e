"""A small dataset that exercises the filter language: relations (single, multiple, to a
superuser-only collection), back-relations (with and without a unique index), select, json,
geoPoint, date, bool, number, a hidden field, the auth collection `users`, and awkward values
(empty, NULL JSON, `%`, `_`, quotes, backslashes, non-ASCII). View rules differ from the list
rules so that `expand` chains are cut in different places for a guest, the verified user
`a@example.com` and the unverified `b@example.com` (the `users` rules are PocketBase's default:
each user sees only itself).

`load(client)` creates it through the PocketBase API (superuser client) with fixed ids, so the
same data can be put in PocketBase and in our runtime and queried on both.
"""

from __future__ import annotations

from typing import Any

import httpx

USERS_ID = "_pb_users_auth_"
USER_PASSWORD = "user-password-123"


def _autodates() -> list[dict[str, Any]]:
    return [
        {"name": "created", "type": "autodate", "onCreate": True, "onUpdate": False},
        {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
    ]


COLLECTIONS: list[dict[str, Any]] = [
    {
        "id": "col_tags0000001",
        "name": "tags",
        "type": "base",
        "listRule": "",
        "viewRule": "weight >= 2 || @request.auth.id != ''",
        "fields": [
            {"name": "name", "type": "text"},
            {"name": "weight", "type": "number"},
            *_autodates(),
        ],
    },
    {
        "id": "col_vault000001",
        "name": "vault",
        "type": "base",
        "listRule": None,
        "viewRule": "@request.auth.id != ''",
        "fields": [{"name": "code", "type": "text"}],
    },
    {
        "id": "col_posts000001",
        "name": "posts",
        "type": "base",
        "listRule": "",
        "viewRule": "",
        "fields": [
            {"name": "title", "type": "text"},
            {"name": "views", "type": "number"},
            {"name": "published", "type": "bool"},
            {"name": "author", "type": "relation", "collectionId": USERS_ID, "maxSelect": 1},
            {"name": "tags", "type": "relation", "collectionId": "col_tags0000001", "maxSelect": 5},
            {
                "name": "vault",
                "type": "relation",
                "collectionId": "col_vault000001",
                "maxSelect": 1,
            },
            {"name": "category", "type": "select", "values": ["a", "b", "c"], "maxSelect": 1},
            {"name": "labels", "type": "select", "values": ["x", "y", "z"], "maxSelect": 3},
            {"name": "meta", "type": "json"},
            {"name": "location", "type": "geoPoint"},
            {"name": "publishedAt", "type": "date"},
            {"name": "secretNote", "type": "text", "hidden": True},
            *_autodates(),
        ],
    },
    {
        "id": "col_comments001",
        "name": "comments",
        "type": "base",
        "listRule": "",
        "viewRule": "post.published = true || @request.auth.verified = true",
        "fields": [
            {"name": "post", "type": "relation", "collectionId": "col_posts000001", "maxSelect": 1},
            {"name": "body", "type": "text"},
            {"name": "rating", "type": "number"},
            {"name": "tags", "type": "relation", "collectionId": "col_tags0000001", "maxSelect": 3},
            {"name": "flag", "type": "select", "values": ["on"], "maxSelect": 1},
            *_autodates(),
        ],
    },
    {
        "id": "col_profiles001",
        "name": "profiles",
        "type": "base",
        "listRule": "",
        "viewRule": "bio != '' || @request.context = 'expand'",
        "fields": [
            {"name": "user", "type": "relation", "collectionId": USERS_ID, "maxSelect": 1},
            {"name": "bio", "type": "text"},
        ],
        "indexes": ["CREATE UNIQUE INDEX `idx_profiles_user` ON `profiles` (`user`)"],
    },
]


def _id(prefix: str, n: int) -> str:
    return f"{prefix}{n:0{15 - len(prefix)}d}"


U = [_id("u", i) for i in range(1, 5)]
T = [_id("t", i) for i in range(1, 6)]
P = [_id("p", i) for i in range(1, 9)]

RECORDS: dict[str, list[dict[str, Any]]] = {
    "users": [
        {
            "id": U[0],
            "email": "a@example.com",
            "name": "Alice",
            "emailVisibility": True,
            "verified": True,
        },
        {"id": U[1], "email": "b@example.com", "name": "Bob", "emailVisibility": False},
        {"id": U[2], "email": "c@example.com", "name": "", "emailVisibility": True},
        {"id": U[3], "email": "d@example.com", "name": "alice smith"},
    ],
    "tags": [
        {"id": T[0], "name": "go", "weight": 1},
        {"id": T[1], "name": "python", "weight": 2},
        {"id": T[2], "name": "rust", "weight": 3},
        {"id": T[3], "name": "", "weight": 0},
        {"id": T[4], "name": "Py_thon%", "weight": 5},
    ],
    "vault": [{"id": _id("v", 1), "code": "x1"}],
    "posts": [
        {
            "id": P[0],
            "title": "Hello World",
            "views": 10,
            "published": True,
            "author": U[0],
            "tags": [T[0], T[1]],
            "vault": _id("v", 1),
            "category": "a",
            "labels": ["x", "y"],
            "meta": {"a": 1, "b": {"c": "deep"}, "arr": [1, 2, 3]},
            "location": {"lon": 23.32, "lat": 42.69},
            "publishedAt": "2024-01-02 03:04:05.000Z",
            "secretNote": "s1",
        },
        {
            "id": P[1],
            "title": "hello again",
            "views": 0,
            "published": False,
            "author": U[1],
            "tags": [T[1]],
            "category": "b",
            "labels": ["z"],
            "meta": {"a": 2},
            "secretNote": "s2",
        },
        {
            "id": P[2],
            "title": "",
            "views": -5.5,
            "meta": None,
            "publishedAt": "2030-06-01 00:00:00.000Z",
        },
        {
            "id": P[3],
            "title": "100% sure_thing",
            "views": 100,
            "published": True,
            "author": U[2],
            "tags": [T[2], T[3], T[4]],
            "category": "c",
            "labels": ["x"],
            "meta": "just a string",
            "location": {"lon": -0.12, "lat": 51.5},
        },
        {
            "id": P[4],
            "title": "Ünïcödé 'quote' \"dq\" back\\slash",
            "views": 3,
            "author": U[3],
            "tags": [T[0]],
            "meta": [1, "two", None],
            "category": "a",
        },
        {
            "id": P[5],
            "title": "null",
            "views": 1000000,
            "published": True,
            "author": U[0],
            "tags": [T[0], T[1], T[2]],
            "labels": ["x", "y", "z"],
            "meta": 5,
        },
        {
            "id": P[6],
            "title": "  spaced  ",
            "views": 7,
            "author": U[1],
            "meta": True,
            "tags": [T[4]],
        },
        {
            "id": P[7],
            "title": "PYTHON",
            "views": 8,
            "author": U[0],
            "labels": ["y"],
            "meta": {"a": None},
        },
    ],
    "comments": [
        {"id": _id("c", 1), "post": P[0], "body": "nice", "rating": 5, "tags": [T[0]]},
        {"id": _id("c", 2), "post": P[0], "body": "meh", "rating": 2},
        {"id": _id("c", 3), "post": P[1], "body": "great", "rating": 4, "tags": [T[1], T[2]]},
        {"id": _id("c", 4), "post": P[3], "body": "", "rating": 0},
        {"id": _id("c", 5), "body": "orphan", "rating": 1},
    ],
    "profiles": [
        {"id": _id("r", 1), "user": U[0], "bio": "alice bio"},
        {"id": _id("r", 2), "user": U[1], "bio": ""},
    ],
}


def load(client: httpx.Client) -> None:
    """Create the collections and records through the API of a superuser `client`."""
    for collection in COLLECTIONS:
        resp = client.post("/api/collections", json=collection)
        if resp.status_code != 200:
            raise AssertionError(f"collection {collection['name']}: {resp.text}")
    for name in ("users", "tags", "vault", "posts", "comments", "profiles"):
        for record in RECORDS[name]:
            body = dict(record)
            if name == "users":
                body["password"] = body["passwordConfirm"] = USER_PASSWORD
            resp = client.post(f"/api/collections/{name}/records", json=body)
            if resp.status_code != 200:
                raise AssertionError(f"record {name}/{record['id']}: {resp.text}")
