"""The superusers' SQL console (PocketBase 0.39+'s `POST /api/sql`): run a query on the
instance's own database, through the runtime's single-writer database.

Contract: `await run_sql(app, query)` returns PocketBase's result
`{"execTime": ms, "affectedRows": n, "columns": [{"name", "type", "nullable"}], "rows": [[...]]}`
or raises `SqlConsoleError` (its message is PocketBase's raw error text, e.g. `SQL logic error:
no such column: x (1)`); `validate_query(value)` applies PocketBase's form rules first.

- As PocketBase, a query whose text starts with INSERT, CREATE, UPDATE, DELETE, DROP, DETACH,
  ALTER or REPLACE (case-insensitive, after leading whitespace) is a *write*: all of its
  statements run in one transaction of the writer (all or nothing), no rows are returned, and
  `affectedRows` is the count of the last INSERT/UPDATE/DELETE among them (0 when none ran).
  Anything else is a *read*: its statements run in order on a read connection and the rows of
  the last one come back (at most `max_rows`, columns even when there is none); `affectedRows`
  is 0. A read whose statements write (`WITH ... INSERT`, `SELECT 1; DELETE ...`, which
  PocketBase runs outside any transaction) runs again, whole, in one transaction of the writer.
  Blank statements (`;;`, comments) are skipped; an empty query is `empty query`.
- Values are strings or null (`core.sql_values`); `type` is the column's declared type in upper
  case ("" for an expression), `nullable` always true (as PocketBase's driver reports it). The
  declared types come from SQLite itself: a temporary view of the last statement, made and
  rolled back on the writer (readers cannot), which neither runs nor changes anything.
- After every write the collections are reloaded in the same transaction (a query may change
  `_collections`); a query that leaves them unreadable, or that ended the writer's transaction
  (an `OR ROLLBACK` conflict), is refused.
- A query runs for at most `timeout` seconds (PocketBase: 3 minutes), then `interrupted (9)`.

What a tenant's superuser may not do, although PocketBase lets it: the console runs under an
SQLite authorizer that refuses (`SQL logic error: not authorized (1)`, PocketBase's wording for
`load_extension`, which both refuse) `ATTACH` and `DETACH` — so no other file, not even the
runtime's own `auxiliary.db`, is opened — `VACUUM` in all its forms (`VACUUM INTO` writes a file
anywhere), transaction control (`BEGIN`, `COMMIT`, `SAVEPOINT`...: the writer's transaction is
the runtime's), `PRAGMA` with a value or argument except the introspection ones listed in
`_PRAGMAS_WITH_ARGUMENT` and `PRAGMA wal_checkpoint` (checkpoints are the runtime's, or
Litestream's), and temporary tables, views, triggers and indexes (they would outlive the request
on a shared connection). Everything else on the instance's own database is allowed, as in
PocketBase: reading every table (`_superusers` password hashes included), writing any of them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from instance_runtime.core.app import App, SchemaChange
from instance_runtime.core.errors import FieldError, ValidationErrors, bad_request
from instance_runtime.core.schema import Schema
from instance_runtime.core.sql_values import console_value, go_text
from instance_runtime.core.views import sqlite_error_text
from instance_runtime.tools.sql_statements import split_statements

MAX_ROWS = 1000
MAX_QUERY_LENGTH = 5000
TIMEOUT_S = 180.0

WRITE_PREFIXES = ("INSERT", "CREATE", "UPDATE", "DELETE", "DROP", "DETACH", "ALTER", "REPLACE")

_SQLITE_READONLY = 8
_SQLITE_INTERRUPT = 9
_SQLITE_AUTH = 23
_NOT_AUTHORIZED = "SQL logic error: not authorized (1)"
_PROGRESS_STEPS = 1000
_PROBE_VIEW = "pf_sql_console_probe"

_PRAGMAS_WITH_ARGUMENT = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
    }
)
_PRAGMAS_REFUSED = frozenset({"wal_checkpoint"})
_CREATE_TEMP = frozenset(
    {
        sqlite3.SQLITE_CREATE_TEMP_INDEX,
        sqlite3.SQLITE_CREATE_TEMP_TABLE,
        sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
        sqlite3.SQLITE_CREATE_TEMP_VIEW,
    }
)
_REFUSED_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_ATTACH,
        sqlite3.SQLITE_DETACH,
        sqlite3.SQLITE_TRANSACTION,
        sqlite3.SQLITE_SAVEPOINT,
    }
)


class SqlConsoleError(Exception):
    """The query failed; the message is PocketBase's raw error text."""


def validate_query(value: Any) -> str:
    """PocketBase's form: a string (else `None`), required, at most 5000 characters; raises
    PocketBase's 400 (`ApiError`). A non-string value is the caller's loading error."""
    query = "" if value is None else str(value)
    errors: ValidationErrors = {}
    if query == "":
        errors["query"] = FieldError("validation_required", "Cannot be blank.")
    elif len(query) > MAX_QUERY_LENGTH:
        errors["query"] = FieldError(
            "validation_length_too_long",
            "The length must be no more than {{.max}}.",
            {"max": MAX_QUERY_LENGTH, "min": 0},
        )
    if errors:
        raise bad_request("An error occurred while validating the submitted data.", errors)
    return query


def is_write_query(query: str) -> bool:
    """PocketBase's loose check of a query's kind (see the module docstring)."""
    upper = query.strip().upper()
    return not upper.startswith("SELECT") and upper.startswith(WRITE_PREFIXES)


# --------------------------------------------------------------------------- running


def _authorizer(*, probing: bool = False) -> Callable[..., int]:
    def decide(action: int, arg1: str | None, arg2: str | None, *_: str | None) -> int:
        if action in _REFUSED_ACTIONS:
            return sqlite3.SQLITE_DENY
        if action in _CREATE_TEMP:
            allowed = probing and action == sqlite3.SQLITE_CREATE_TEMP_VIEW
            return sqlite3.SQLITE_OK if allowed else sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _PRAGMAS_REFUSED:
                return sqlite3.SQLITE_DENY
            if arg2 is not None and name not in _PRAGMAS_WITH_ARGUMENT:
                return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() == "load_extension":
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    return decide


@contextmanager
def _guarded(conn: sqlite3.Connection, deadline: float, *, probing: bool = False) -> Iterator[None]:
    """The console's authorizer, time limit and text decoding on `conn`, then its own again."""
    conn.set_authorizer(_authorizer(probing=probing))
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)
    conn.text_factory = go_text
    try:
        yield
    finally:
        conn.text_factory = str
        conn.set_progress_handler(None, 0)
        conn.set_authorizer(None)


def _error_text(exc: sqlite3.Error) -> str:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == _SQLITE_AUTH:
        return _NOT_AUTHORIZED
    if code is not None and code & 0xFF == _SQLITE_INTERRUPT:
        return f"interrupted ({_SQLITE_INTERRUPT})"
    if str(exc).startswith("not authorized"):
        return _NOT_AUTHORIZED
    return sqlite_error_text(exc)


@dataclass
class _Outcome:
    names: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    affected: int = 0
    types: list[str] = field(default_factory=list)


def _drain(cursor: sqlite3.Cursor) -> None:
    for _row in cursor:
        pass


def _run_statements(
    conn: sqlite3.Connection, statements: list[str], *, rows: bool, max_rows: int
) -> _Outcome:
    """Execute `statements` in order; the last one's rows when `rows` (a read), else the count
    of the last INSERT/UPDATE/DELETE (a write)."""
    outcome = _Outcome()
    before = conn.total_changes
    for index, statement in enumerate(statements):
        cursor = conn.execute(statement)
        if rows and index == len(statements) - 1 and cursor.description is not None:
            outcome.names = [d[0] for d in cursor.description]
            outcome.rows = cursor.fetchmany(max_rows)
            cursor.close()  # the rest is not read: end the statement (and its snapshot) now
        else:
            _drain(cursor)
    if not rows and (conn.total_changes != before or _ran_dml(statements)):
        outcome.affected = int(conn.execute("SELECT changes()").fetchone()[0])
    return outcome


def _ran_dml(statements: list[str]) -> bool:
    """Whether a DML statement (that may have changed nothing) ran."""
    return any(
        s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE", "REPLACE")) for s in statements
    )


def _declared_types(
    conn: sqlite3.Connection, statement: str, count: int, deadline: float
) -> list[str]:
    """The declared type of each result column of `statement` (SQLite's own: a temporary view
    of it, rolled back), "" for expressions or when the statement makes no view."""
    conn.execute("SAVEPOINT pf_sql_types")
    try:
        with _guarded(conn, deadline, probing=True):
            conn.execute(f"CREATE TEMP VIEW {_PROBE_VIEW} AS {statement}")
            info = conn.execute(f"PRAGMA temp.table_info({_PROBE_VIEW})").fetchall()
        types = [str(row[2] or "").upper() for row in info]
    except sqlite3.Error:
        types = []
    finally:
        conn.execute("ROLLBACK TO pf_sql_types")
        conn.execute("RELEASE pf_sql_types")
    return types if len(types) == count else [""] * count


def _on_writer(
    statements: list[str], *, rows: bool, max_rows: int, deadline: float
) -> Callable[[sqlite3.Connection, Schema], SchemaChange[_Outcome]]:
    def run(conn: sqlite3.Connection, schema: Schema) -> SchemaChange[_Outcome]:
        with _guarded(conn, deadline):
            outcome = _run_statements(conn, statements, rows=rows, max_rows=max_rows)
        if not conn.in_transaction:
            raise SqlConsoleError("the query ended the transaction; it was rolled back")
        if outcome.names:
            outcome.types = _declared_types(conn, statements[-1], len(outcome.names), deadline)
        try:
            reloaded = Schema.load(conn)
        except Exception as exc:
            raise SqlConsoleError(
                f"the collections cannot be loaded after the query: {exc}"
            ) from exc
        return SchemaChange(outcome, reloaded)

    return run


async def run_sql(
    app: App, query: str, *, max_rows: int = MAX_ROWS, timeout: float = TIMEOUT_S
) -> dict[str, Any]:
    """See the module docstring."""
    started = time.monotonic()
    deadline = started + timeout
    query = query.strip()
    if not query:
        raise SqlConsoleError("empty query")
    statements = split_statements(query)
    write = is_write_query(query)
    try:
        if write:
            outcome = await app.write_schema(
                _on_writer(statements, rows=False, max_rows=max_rows, deadline=deadline)
            )
        else:
            outcome = await _read(app, statements, max_rows=max_rows, deadline=deadline)
    except sqlite3.Error as exc:
        raise SqlConsoleError(_error_text(exc)) from exc
    types = outcome.types or [""] * len(outcome.names)
    return {
        "execTime": int((time.monotonic() - started) * 1000),
        "affectedRows": outcome.affected,
        "columns": [
            {"name": n, "type": t, "nullable": True}
            for n, t in zip(outcome.names, types, strict=True)
        ],
        "rows": [
            [console_value(v, t) for v, t in zip(row, types, strict=True)] for row in outcome.rows
        ],
    }


async def _read(app: App, statements: list[str], *, max_rows: int, deadline: float) -> _Outcome:
    """A read on a reader; run again on the writer when it turns out to write."""

    def on_reader(conn: sqlite3.Connection, schema: Schema) -> _Outcome:
        with _guarded(conn, deadline):
            return _run_statements(conn, statements, rows=True, max_rows=max_rows)

    try:
        outcome = await app.read(on_reader)
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF != _SQLITE_READONLY:
            raise
        return await app.write_schema(
            _on_writer(statements, rows=True, max_rows=max_rows, deadline=deadline)
        )
    if outcome.names:

        def probe(conn: sqlite3.Connection) -> list[str]:
            return _declared_types(conn, statements[-1], len(outcome.names), deadline)

        # on the writer (readers cannot even make a temporary view); it changes nothing, so
        # it goes to the database itself, not through the app's writes (no cache to drop)
        outcome.types = await app.db.write(probe)
    return outcome
