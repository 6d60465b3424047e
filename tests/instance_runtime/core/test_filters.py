"""`core.filters`, the seam `core.rules` calls: fragments assembled the way the records API
assembles them give PocketBase's answers; `build_list_query` covers what fragments cannot."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from instance_runtime.core import filters
from instance_runtime.core.errors import ApiError
from instance_runtime.core.rules import SqlFragment
from instance_runtime.tools.dbutils import quote
from instance_runtime.tools.search import FilterError
from tests.support import search_dataset as ds
from tests.support.filter_reference import Reference, filter_reference

P = ds.P


@pytest.fixture(scope="module")
def ref() -> Iterator[Reference]:
    with filter_reference() as reference:
        yield reference


def assemble(ref: Reference, who: str, filter: str, sort: str) -> list[str]:
    """As `core.records.list_records` does: rule, filter and sort fragments in one SELECT."""
    schema = ref.schema
    coll = schema.find("posts")
    assert coll is not None
    info = ref.info(who)
    parts: list[SqlFragment] = []
    if not info.is_superuser and coll.listRule:
        parts.append(filters.build_filter(schema, coll, coll.listRule, info, allow_hidden=True))
    if filter:
        allow = info.is_superuser
        parts.append(filters.build_filter(schema, coll, filter, info, allow_hidden=allow))
    order = filters.build_sort(schema, coll, sort, info, allow_hidden=info.is_superuser)
    joins = "".join(p.joins for p in [*parts, order])
    where = " AND ".join(f"({p.sql})" for p in parts) or "1=1"
    params: dict[str, object] = {}
    for p in [*parts, order]:
        params.update(p.params)
    distinct = "DISTINCT " if any(p.distinct for p in [*parts, order]) else ""
    table = quote(coll.name)
    sql = f"SELECT {distinct}{table}.id FROM {table} {joins} WHERE {where}"
    if order.sql:
        sql += f" ORDER BY {order.sql}"
    return [row[0] for row in ref.conn.execute(sql, params)]


FRAGMENT_CASES = [
    ("su", "tags.name ?= 'python' && author.name ~ 'a'", "-views,id"),
    ("su", "secretNote != '' || comments_via_post.rating > 3", "author.name,id"),
    ("guest", "tags.weight > 0", "tags:length,-title,id"),
    ("guest", "@collection.tags.name ?= 'go'", "id"),
    ("user", "author.name ~ 'alice'", "-@rowid"),
    ("guest", "views > 0", "author.name,id"),  # the sort's join brings the users' list rule
    ("user", "", "-author.name,tags.name,id"),
]


@pytest.mark.parametrize(("who", "filter", "sort"), FRAGMENT_CASES)
def test_fragments_match_pocketbase(ref: Reference, who: str, filter: str, sort: str) -> None:
    expected = ref.pb_list(who, "posts", filter=filter, sort=sort)
    try:
        got: list[str] | str = assemble(ref, who, filter, sort)
    except ApiError as err:
        got = f"ERR {err.status}"
    assert got == expected


@pytest.mark.parametrize(
    ("who", "filter", "sort"),
    [
        ("guest", "views > 0", "author.name,id"),  # the sort's join brings the users' rule
        ("user", "title != ''", "-author.name,id"),
        ("su", "tags.name ?= 'go'", "tags.name,id"),
        ("guest", "@request.auth.id = ''", "id"),
        ("guest", "", "@collection.tags.name"),
    ],
)
def test_list_query_matches_pocketbase(ref: Reference, who: str, filter: str, sort: str) -> None:
    schema = ref.schema
    coll = schema.find("posts")
    assert coll is not None
    expected = ref.pb_list(who, "posts", filter=filter, sort=sort)
    try:
        query = filters.build_list_query(schema, coll, ref.info(who), filter=filter, sort=sort)
    except ApiError as err:
        assert expected == f"ERR {err.status}"
        return
    page = query.build(f"{quote(coll.name)}.id", limit=500)
    assert [row[0] for row in ref.conn.execute(page.sql, dict(page.params))] == expected
    count = query.build_count("_rowid_")
    assert ref.conn.execute(count.sql, dict(count.params)).fetchone()[0] == len(expected)


def test_errors(ref: Reference) -> None:
    schema = ref.schema
    coll = schema.find("posts")
    assert coll is not None
    guest = ref.info("guest")
    with pytest.raises(ApiError) as forbidden:
        filters.build_filter(schema, coll, "@request.auth.id = ''", guest, allow_hidden=False)
    assert (forbidden.value.status, forbidden.value.message) == (
        403,
        "Only superusers can filter by @request.",
    )
    # a rule may use @request (allow_hidden=True is how rules are compiled)
    filters.build_filter(schema, coll, "@request.auth.id = ''", guest, allow_hidden=True)
    for bad in ["title = ", "secretNote = 1", "'" + "x" * 3600 + "' = title"]:
        with pytest.raises(FilterError):
            filters.build_filter(schema, coll, bad, guest, allow_hidden=False)
    with pytest.raises(FilterError):
        filters.build_sort(schema, coll, "nope", guest, allow_hidden=False)
    assert filters.build_sort(schema, coll, "", guest, allow_hidden=False) == SqlFragment()


def test_filter_collection_ids(ref: Reference) -> None:
    ids = filters.filter_collection_ids(
        ref.conn, "name ~ 'post' || (system = true && type = 'auth')"
    )
    assert ids == {"col_posts000001", "pbc_3142635823"}
    with pytest.raises(FilterError):
        filters.filter_collection_ids(ref.conn, "fields ~ 'x'")
