"""PocketBase's filter and sort language, compiled to parameterised SQLite SQL.

Pure: knows nothing of collections; the knowledge of fields, relations and `@request.*` comes
through a `FieldResolver` (the runtime's is `instance_runtime.core.field_resolver`).

    resolver = SimpleFieldResolver("id", "name", "created")
    where = build_filter("name ~ 'abc' && created > @todayStart", resolver)
    conn.execute(f"SELECT * FROM t WHERE {where.sql}", where.params)

Modules: `lexer` (tokens), `parser` (tree), `compiler` (SQL), `functions` (`geoDistance`,
`strftime`), `macros` (`@now`...), `sort`, `query` (`SelectQuery`), `resolver` (the seam and
its result types), `simple` (`SimpleFieldResolver`), `sqlfn` (JSON helpers).
"""

from instance_runtime.tools.search.compiler import (
    DEFAULT_MAX_EXPRESSIONS,
    MAX_FILTER_LENGTH,
    build_comparison,
    build_filter,
    replace_placeholders,
)
from instance_runtime.tools.search.errors import FilterError
from instance_runtime.tools.search.parser import parse
from instance_runtime.tools.search.query import SelectQuery
from instance_runtime.tools.search.resolver import (
    Expr,
    FieldResolver,
    Join,
    MultiMatchSubquery,
    Names,
    NullFallback,
    ResolverResult,
    SelectQueryLike,
    merge_params,
    quote_column,
)
from instance_runtime.tools.search.simple import SimpleFieldResolver
from instance_runtime.tools.search.sort import SortField, build_sort, parse_sort

__all__ = [
    "DEFAULT_MAX_EXPRESSIONS",
    "MAX_FILTER_LENGTH",
    "Expr",
    "FieldResolver",
    "FilterError",
    "Join",
    "MultiMatchSubquery",
    "Names",
    "NullFallback",
    "ResolverResult",
    "SelectQuery",
    "SelectQueryLike",
    "SimpleFieldResolver",
    "SortField",
    "build_comparison",
    "build_filter",
    "build_sort",
    "merge_params",
    "parse",
    "parse_sort",
    "quote_column",
    "replace_placeholders",
]
