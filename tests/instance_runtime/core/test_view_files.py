"""`core.view_files.view_query_sources`: which collection field each column of a view query is,
parsed as PocketBase's `parseQueryToFields` does (aliases of tables and columns, joins, comments,
DISTINCT, ON and WHERE clauses skipped, expressions and `id` columns left out)."""

from __future__ import annotations

import pytest

from instance_runtime.core.models import Collection
from instance_runtime.core.schema import Schema
from instance_runtime.core.view_files import view_query_sources


def _coll(name: str, *fields: str) -> Collection:
    return Collection.from_json(
        {
            "id": "pbc_" + name,
            "name": name,
            "type": "base",
            "fields": [{"name": "id", "type": "text"}]
            + [{"name": f, "type": "file"} for f in fields],
        }
    )


SCHEMA = Schema([_coll("posts", "cover", "Gallery"), _coll("notes", "att", "cover")])


def _sources(query: str) -> dict[str, tuple[str, str]]:
    found = view_query_sources(SCHEMA, query)
    return {column: (coll.name, name) for column, (coll, name) in found.items()}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("select id, cover from posts", {"cover": ("posts", "cover")}),
        ("SELECT p.id, p.cover AS pic, p.gallery g FROM posts p", {
            "pic": ("posts", "cover"), "g": ("posts", "Gallery"),
        }),
        (
            "select n.id, n.cover, p.cover as postCover from notes n "
            "left outer join posts as p on p.id = n.post and p.cover != '' where n.att != ''",
            {"cover": ("notes", "cover"), "postCover": ("posts", "cover")},
        ),
        ("select distinct id, `cover` from `posts`;", {"cover": ("posts", "cover")}),
        (
            "select id, /* a comment, with a comma */ cover -- the end\n from posts",
            {"cover": ("posts", "cover")},
        ),
        (
            "select id, (select count(*) from notes) as n, coalesce(cover, '') as c, "
            "missing from posts group by id",
            {},
        ),
        ("select id, cover from Posts", {}),  # table names are matched exactly
        ("select p.id as postId from posts p", {}),  # an id column is no file field
    ],
)  # fmt: skip
def test_view_query_sources(query: str, expected: dict[str, tuple[str, str]]) -> None:
    assert _sources(query) == expected
