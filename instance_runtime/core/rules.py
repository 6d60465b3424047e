"""The one place where the runtime calls the filter/sort compiler (`tools/search`).

Contract: `build_filter` / `build_sort` turn a filter or sort expression about `coll`, as seen
by the request `info`, into an `SqlFragment`: SQL text over the table named like the collection
(quoted), extra `LEFT JOIN`s, named `:param` values, and whether rows may repeat (then the
caller selects DISTINCT). Any malformed expression, unknown or forbidden field raises the 400
`ApiError` PocketBase answers; nothing else escapes. Values never become SQL text.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass
from typing import Any

from instance_runtime.core.errors import ApiError, bad_request
from instance_runtime.core.models import Collection
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools.dbutils import quote


@dataclass
class SqlFragment:
    sql: str = ""
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    joins: str = ""
    distinct: bool = False


def _compiler() -> Any | None:
    """The filter compiler package when it is installed (it lands separately)."""
    try:
        return importlib.import_module("instance_runtime.core.filters")
    except ImportError:
        return None


def build_filter(
    schema: Schema,
    coll: Collection,
    expr: str,
    info: RequestInfo,
    *,
    allow_hidden: bool,
) -> SqlFragment:
    """See the module docstring."""
    compiler = _compiler()
    if compiler is None:
        raise bad_request()
    try:
        result: SqlFragment = compiler.build_filter(
            schema, coll, expr, info, allow_hidden=allow_hidden
        )
    except ApiError:
        raise
    except Exception as exc:
        raise bad_request() from exc
    return result


def build_sort(
    schema: Schema,
    coll: Collection,
    sort: str,
    info: RequestInfo,
    *,
    allow_hidden: bool,
) -> SqlFragment:
    """An ORDER BY clause (without the keywords) for `sort` ("" for none)."""
    if not sort.strip():
        return SqlFragment()
    compiler = _compiler()
    if compiler is not None:
        try:
            result: SqlFragment = compiler.build_sort(
                schema, coll, sort, info, allow_hidden=allow_hidden
            )
        except ApiError:
            raise
        except Exception as exc:
            raise bad_request() from exc
        return result
    # Fallback until the compiler lands: plain field names, @random and @rowid.
    table = quote(coll.name)
    terms = []
    for raw in sort.split(","):
        item = raw.strip()
        if not item:
            continue
        desc = item.startswith("-")
        name = item.lstrip("+-")
        if name == "@random":
            terms.append("RANDOM()")
            continue
        if name == "@rowid":
            terms.append(f"{table}._rowid_ {'DESC' if desc else 'ASC'}")
            continue
        f = coll.field(name)
        if f is None or (f.hidden and not allow_hidden):
            raise bad_request()
        terms.append(f"{table}.{quote(name)} {'DESC' if desc else 'ASC'}")
    return SqlFragment(", ".join(terms))


def filter_collection_ids(conn: Any, expr: str) -> set[str]:
    """Ids of the collections matching `expr` (fields id, name, type, system, created,
    updated), for `GET /api/collections?filter=`."""
    compiler = _compiler()
    if compiler is None:
        raise bad_request()
    try:
        ids: set[str] = compiler.filter_collection_ids(conn, expr)
    except ApiError:
        raise
    except Exception as exc:
        raise bad_request() from exc
    return ids


def rule_problem(schema: Schema, coll: Collection, rule: str | None) -> str | None:
    """Why `rule` cannot be compiled for `coll` (PocketBase's "Raw error"), or None when it
    can (None and "" always can). Used to validate collections before they are saved."""
    if not rule:
        return None
    compiler = _compiler()
    if compiler is None:
        return None
    # A superuser-less, body-less request: only the rule's own structure is checked.
    probe_schema = Schema([*(c for c in schema.all() if c.id != coll.id), coll])
    try:
        compiler.build_filter(probe_schema, coll, rule, RequestInfo(), allow_hidden=True)
    except ApiError as exc:
        return exc.message
    except Exception as exc:
        text = re.sub(r"'([^']*)'", r'"\1"', str(exc))  # Go's %q quoting
        return text if text.endswith(".") else text + "."
    return None
