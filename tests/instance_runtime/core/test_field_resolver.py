"""The record field resolver against PocketBase 0.40.6 itself.

The dataset of `tests/support/search_dataset.py` is created in a real PocketBase; our compiled
SQL runs on PocketBase's own `data.db` (read-only, while it serves), so the storage layout is
exactly PocketBase's, and every answer is compared with what PocketBase answers over HTTP for
the same filter, sort, rule and caller (superuser, guest, user).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instance_runtime.core.field_resolver import (
    RecordFieldResolver,
    build_record_query,
    build_records_query,
    superuser_only_violation,
)
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.tools.search import FilterError, build_filter
from tests.support import search_dataset as ds
from tests.support.filter_generator import FIELDS, OPERATORS, FilterGenerator
from tests.support.filter_reference import Reference, filter_reference

P = ds.P
U1 = ds.U[0]


@pytest.fixture(scope="module")
def ref() -> Iterator[Reference]:
    with filter_reference() as reference:
        yield reference


EXPECTED: list[tuple[str, list[str]]] = [
    ("title ~ 'hello'", [P[0], P[1]]),
    ("title = null", [P[2]]),
    ("title != ''", [P[0], P[1], P[3], P[4], P[5], P[6], P[7]]),
    ("title = 'null'", [P[5]]),
    ("title ~ '100%'", [P[3]]),
    ("title ~ 'sure_'", [P[3]]),
    ("title ~ \"'quote'\" && title ~ '\\\\'", [P[4]]),
    ("title:lower = 'python'", [P[7]]),
    ("views > 7 && views <= 100", [P[0], P[3], P[7]]),
    ("views = -5.5 || views >= 1000000", [P[2], P[5]]),
    ("published = true", [P[0], P[3], P[5]]),
    ("published != true", [P[1], P[2], P[4], P[6], P[7]]),
    ("author = ''", [P[2]]),
    ("author.id = 'u00000000000001'", [P[0], P[5], P[7]]),
    ("author.name ~ 'alice'", [P[0], P[4], P[5], P[7]]),
    ("author.email ~ 'b@'", [P[1], P[6]]),
    ("author.verified = true", [P[0], P[5], P[7]]),
    ("tags.name = 'python'", [P[1]]),
    ("tags.name ?= 'python'", [P[0], P[1], P[5]]),
    ("tags.name ?~ 'py'", [P[0], P[1], P[3], P[5], P[6]]),
    ("tags.weight > 0", [P[0], P[1], P[4], P[5], P[6]]),
    ("tags.weight ?> 2", [P[3], P[5], P[6]]),
    ("tags:length = 0", [P[2], P[7]]),
    ("tags:length > 2", [P[3], P[5]]),
    ("tags:each = 't00000000000001'", [P[4]]),
    ("tags:each ?= 't00000000000001'", [P[0], P[4], P[5]]),
    ("tags ~ 't00000000000003'", [P[3], P[5]]),
    ("labels:each ?= 'z'", [P[1], P[5]]),
    ("labels:each = 'x'", [P[3]]),
    ("labels ?= 'x'", []),
    ("category = 'a'", [P[0], P[4]]),
    ("meta.a > 1", [P[1]]),
    ("meta.a = null", [P[2], P[3], P[4], P[5], P[6], P[7]]),
    ("meta.b.c = 'deep'", [P[0]]),
    ("meta.arr.1 = 2", [P[0]]),
    ("meta.1 = 'two'", [P[4]]),
    ("meta = 5 || meta = true", [P[5], P[6]]),
    ("meta = 'just a string'", [P[3]]),
    ("meta = null", [P[2]]),
    ("location.lat > 50", [P[3]]),
    ("geoDistance(location.lon, location.lat, 23.3, 42.7) < 10", [P[0]]),
    ("publishedAt > '2025-01-01'", [P[2]]),
    ("publishedAt > @now", [P[2]]),
    ("publishedAt < @now && publishedAt != ''", [P[0]]),
    ("strftime('%Y', publishedAt) = '2024'", [P[0]]),
    ("comments_via_post.rating > 3", [P[1]]),
    ("comments_via_post.rating ?> 3", [P[0], P[1]]),
    ("comments_via_post.tags.name ?= 'rust'", [P[1]]),
    ("comments_via_post.id = null", [P[2], P[4], P[5], P[6], P[7]]),
    ("author.profiles_via_user.bio = 'alice bio'", [P[0], P[5], P[7]]),
    ("author.posts_via_author.views ?> 50", [P[0], P[3], P[5], P[7]]),
    ("@collection.tags.weight ?> 4 && views > 50", [P[3], P[5]]),
    ("@collection.comments:c.post = id && @collection.comments:c.rating >= 4", []),  # all rows
    ("@collection.comments:c.post ?= id && @collection.comments:c.rating ?>= 4", [P[0], P[1]]),
    ("secretNote = 's1'", [P[0]]),
    ("vault.code = 'x1'", [P[0]]),
    ("(title ~ 'hello' || views > 50) && published = true", [P[0], P[3], P[5]]),
    ("title ~ 'hello' || views > 50 && published = true", [P[0], P[1], P[3], P[5]]),
]


@pytest.mark.parametrize(("filter", "ids"), EXPECTED)
def test_expected_results_match_pocketbase(ref: Reference, filter: str, ids: list[str]) -> None:
    assert ref.pb_list("su", "posts", filter=filter, sort="id") == ids
    assert ref.our_list("su", "posts", filter=filter, sort="id") == ids


RESTRICTED = [
    ("guest", "author.name ~ 'alice'", []),  # users' list rule: id = @request.auth.id
    ("user", "author.name ~ 'alice'", [P[0], P[5], P[7]]),
    # the joined collection's rule is ANDed to the whole filter (rows of other authors go)
    ("user", "author.name != 'x' || title = 'PYTHON'", [P[0], P[2], P[5], P[7]]),
    ("guest", "tags.name ?= 'python'", [P[0], P[1], P[5]]),
    ("guest", "secretNote = 's1'", "ERR 400"),  # hidden field
    ("su", "secretNote = 's1'", [P[0]]),
    ("guest", "vault.code = 'x1'", "ERR 400"),  # superuser-only collection
    ("user", "vault = 'v00000000000001'", [P[0]]),  # the column itself needs no join
    ("guest", "author.email ~ '@'", []),
    ("user", "author.email ~ '@'", [P[0], P[5], P[7]]),
    ("guest", "@collection.tags.name ?= 'go'", "ERR 403"),
    ("guest", "@request.auth.id = ''", "ERR 403"),
    ("guest", "unknown = 1", "ERR 400"),
    ("guest", "title:upper = 1", "ERR 400"),
]


@pytest.mark.parametrize(("who", "filter", "expected"), RESTRICTED)
def test_restricted_callers_match_pocketbase(
    ref: Reference, who: str, filter: str, expected: list[str] | str
) -> None:
    assert ref.pb_list(who, "posts", filter=filter, sort="id") == expected
    assert ref.our_list(who, "posts", filter=filter, sort="id") == expected


@pytest.mark.parametrize("who", ["su", "guest", "user"])
def test_generated_filters_and_sorts_match_pocketbase(ref: Reference, who: str) -> None:
    gen = FilterGenerator(seed={"su": 11, "guest": 12, "user": 13}[who])
    mismatches = []
    for _ in range(50):
        filter, sort = gen.filter(), gen.sort()
        theirs = ref.pb_list(who, "posts", filter=filter, sort=sort)
        ours = ref.our_list(who, "posts", filter=filter, sort=sort)
        if theirs != ours:
            mismatches.append((filter, sort, theirs, ours))
    assert mismatches == []


REQUEST_RULES = [
    # (list rule of comments, query params, headers)
    ("@request.auth.id != ''", {}, {}),
    ("@request.auth.id = ''", {}, {}),
    ("@request.auth.email = 'a@example.com' && rating > 3", {}, {}),
    ("@request.auth.name = 'Alice' && body != ''", {}, {}),
    ("@request.auth.profiles_via_user.bio ?~ 'alice'", {}, {}),
    ("@request.auth.collectionName = 'users'", {}, {}),
    ("@request.auth.verified = true", {}, {}),
    ("@request.query.min:isset = true && rating >= @request.query.min", {"min": "4"}, {}),
    ("@request.query.missing:isset = true", {}, {}),
    ("@request.query.q:lower = 'great' && body = 'great'", {"q": "GREAT"}, {}),
    ("@request.headers.x_token = 'secret'", {}, {"X-Token": "secret"}),
    ("@request.headers.x_token = 'secret'", {}, {"X-Token": "other"}),
    ("@request.method = 'GET' && @request.context = 'default'", {}, {}),
    ("@request.body.x:isset = false && rating > 4", {}, {}),
    ("post.author = @request.auth.id", {}, {}),
    ("@collection.posts.author ?= @request.auth.id && post.author != ''", {}, {}),
]


@pytest.mark.parametrize(("rule", "query", "headers"), REQUEST_RULES)
def test_request_fields_in_rules_match_pocketbase(
    ref: Reference, rule: str, query: dict[str, str], headers: dict[str, str]
) -> None:
    resp = ref.su.patch("/api/collections/comments", json={"listRule": rule})
    assert resp.status_code == 200, resp.text
    for who in ("guest", "user"):
        client = ref.client(who)
        resp = client.get(
            "/api/collections/comments/records",
            params={"perPage": "500", "sort": "id", **query},
            headers=headers,
        )
        theirs = [i["id"] for i in resp.json()["items"]] if resp.status_code == 200 else "ERR"
        all_query = {"perPage": "500", "sort": "id", **query}
        norm_headers = {k.lower().replace("-", "_"): v for k, v in headers.items()}
        ours = ref.our_list(who, "comments", sort="id", query=all_query, headers=norm_headers)
        assert (who, ours) == (who, theirs)


UPDATE_RULES = [
    ("@request.body.rating:isset = true", {"rating": 1}),
    ("@request.body.rating:isset = true", {"body": "x"}),
    ("@request.body.body:changed = false", {"body": "nice"}),
    ("@request.body.body:changed = false", {"body": "other"}),
    ("@request.body.body:changed = true", {"body": "other"}),
    ("@request.body.body:changed = false", {"rating": 3}),
    ("@request.body.tags:length > 1", {"tags": [ds.T[0], ds.T[1]]}),
    ("@request.body.tags:length > 1", {"tags": [ds.T[0]]}),
    ("@request.body.tags:each ?= 't00000000000002'", {"tags": [ds.T[0], ds.T[1]]}),
    ("@request.body.tags:each = 't00000000000002'", {"tags": [ds.T[0], ds.T[1]]}),
    ("@request.body.tags:each ?~ 't0'", {"tags": [ds.T[0]]}),
    ("@request.body.body:lower = 'nice'", {"body": "NICE"}),
    ("@request.body.rating > rating", {"rating": 9}),
    ("@request.body.rating > rating", {"rating": 1}),
    ("@request.body.rating = 5", {"rating": "5"}),
    ("@request.body.post.title ~ 'hello'", {"post": P[1]}),
    ("@request.body.post.title ~ 'hello'", {"post": P[3]}),
    ("@request.body.tags.name ?= 'go'", {"tags": [ds.T[0], ds.T[2]]}),
    ("@request.body.tags.name = 'go'", {"tags": [ds.T[0], ds.T[2]]}),
    ("@request.body.post = post", {"post": P[0]}),
    ("@request.method = 'PATCH' && @request.body.missing = null", {"body": "b"}),
]


@pytest.mark.parametrize(("rule", "body"), UPDATE_RULES)
def test_body_modifiers_in_update_rules_match_pocketbase(
    ref: Reference, rule: str, body: dict[str, Any]
) -> None:
    """PocketBase checks the update rule first (404 when it fails) and validates the body after:
    an invalid `flag` makes a passing rule a 400, so nothing is ever written."""
    resp = ref.su.patch("/api/collections/comments", json={"updateRule": rule})
    assert resp.status_code == 200, resp.text
    record_id = "c00000000000001"  # post p1, body "nice", rating 5, tags [t1]
    resp = ref.user.patch(
        f"/api/collections/comments/records/{record_id}", json={**body, "flag": "invalid"}
    )
    theirs = {404: "rule fails", 400: "rule passes"}[resp.status_code]
    schema = ref.schema
    comments = schema.find("comments")
    assert comments is not None
    info = ref.info("user", method="PATCH", body=body)
    query = build_record_query(comments, schema, info, record_id, rule=comments.updateRule)
    expr = query.build('"comments"."id"')
    found = ref.conn.execute(expr.sql, dict(expr.params)).fetchone() is not None
    assert ("rule passes" if found else "rule fails") == theirs


def test_errors_and_limits(ref: Reference) -> None:
    schema = ref.schema
    posts = schema.find("posts")
    assert posts is not None
    guest = RecordFieldResolver(schema, posts, RequestInfo(), False)
    su = RecordFieldResolver(schema, posts, ref.info("su"), True)
    for name in [
        "unknown",
        "title.x",
        "author.unknown",
        "secretNote",
        "vault.code",
        "tags.",
        "title:nope",
        "@collection.nope.x",
        "@collection.tags",
        "users_via_nope.x",
        "comments_via_body.id",
        "@request",
        "@request.nope",
        "#x",
        "",
        " ",
        "author." + "posts_via_author.author." * 3 + "id",
    ]:
        with pytest.raises(FilterError):
            guest.resolve(name)
    assert su.resolve("secretNote").identifier == '"posts"."secretNote"'
    assert su.resolve("author.id").identifier == '"posts"."author"'  # no join for single .id
    assert su.joins == []
    deep = "author.posts_via_author.author.posts_via_author.author.id"
    assert su.resolve(deep).identifier.endswith('."author"')
    for bad_sort in ["@request.query.x", "title,", "nope", "-secretNote"]:
        with pytest.raises(FilterError):
            build_records_query(posts, schema, RequestInfo(), sort=bad_sort)
    su_info = ref.info("su", body={"title": "x"})
    for bad_sort in ["@request.body.title:changed", "@request.body.title", "null"]:
        with pytest.raises(FilterError):
            build_records_query(posts, schema, su_info, sort=bad_sort, superuser=True)
    assert superuser_only_violation("a = @request.auth.id") == (
        "Only superusers can filter by @request."
    )
    assert superuser_only_violation("", "@collection.x.y") == (
        "Only superusers can filter by @collection."
    )
    assert superuser_only_violation("title = 1", "-views") is None


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    *FIELDS,
                    "nope",
                    "secretNote",
                    "vault.code",
                    "@request.auth.id",
                    "@request.body.tags:each",
                    "@request.query.x:lower",
                ]
            ),
            st.sampled_from(OPERATORS),
            st.sampled_from([*FIELDS, "'§x'", "7357", "null", "@now", "@request.headers.a"]),
            st.sampled_from(["&&", "||"]),
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(["su", "guest", "user"]),
)
def test_any_generated_filter_runs_or_fails_cleanly(
    ref: Reference, parts: list[tuple[str, str, str, str]], who: str
) -> None:
    text = " ".join(f"{j} {a} {op} {b}" for a, op, b, j in parts).split(" ", 1)[1]
    schema = ref.schema
    posts = schema.find("posts")
    assert posts is not None
    try:
        query = build_records_query(
            posts,
            schema,
            ref.info(who, body={"tags": ["t1"]}),
            rule=posts.listRule,
            filter=text,
            superuser=who == "su",
        )
    except FilterError:
        return
    expr = query.build()
    assert "§" not in expr.sql and "7357" not in expr.sql
    ref.conn.execute(expr.sql, dict(expr.params)).fetchall()
    ref.conn.execute(query.build_count("_rowid_").sql, dict(expr.params)).fetchall()


def test_changed_placeholder_never_reaches_sql(ref: Reference) -> None:
    schema = ref.schema
    comments = schema.find("comments")
    assert comments is not None
    resolver = RecordFieldResolver(schema, comments, ref.info("user", body={"body": "x"}), True)
    expr = build_filter("@request.body.body:changed = true || body:lower = 'x'", resolver)
    assert "@changed@" not in expr.sql
