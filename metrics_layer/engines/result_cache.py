"""An exact result cache for the embedded DuckDB engine.

DuckDB answers even a tiny aggregate in ~0.5 ms (it plans every query afresh), which caps a
dashboard's repeated small queries at ~1,000/s. On embedded DuckDB the data cannot change
behind our back: a DuckDB file is locked by the process that opens it (another process cannot
write it while we hold it), so results change only when (a) something in this process commits
a write, or (b) the query reads something outside the database or the clock. The cache keeps
small results keyed by SQL text and returns them only when neither can have happened:

(a) every entry carries the database's file signature (size and mtime of the file and its
    write-ahead log, taken before the query ran); any committed write changes the WAL or the
    file, so a changed signature empties the cache. An in-memory database has no files: only
    our own connection can write it, and the engine clears the cache on every non-SELECT.
(b) a query is cached only if every table it reads is a base table of the opened database (or
    a view over such tables), and it calls no clock, random, session or user-defined function
    (a trailing window without `as_of` reads the clock: never cached).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import sqlglot
from sqlglot import exp

from ..query import Column

# Functions whose value can change between two runs of the same SQL over the same data.
_UNSTABLE = {
    "now", "today", "get_current_timestamp", "get_current_time", "transaction_timestamp", "statement_timestamp",
    "localtimestamp", "localtime", "ago", "rand", "random", "uuid", "gen_random_uuid", "txid_current",
    "getvariable", "current_setting", "setseed", "nextval", "currval",
}


def _function_name(node: exp.Func) -> str:
    return (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()


class ResultCache:
    """Small results of deterministic SELECTs over the database's own tables, kept exact."""

    def __init__(self, path: str, max_rows: int = 10_000, max_total_rows: int = 200_000):
        self._files = () if path == ":memory:" else (path, path + ".wal")
        self.max_rows = max_rows
        self._max_total_rows = max_total_rows
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[list[Column], list[tuple]]] = OrderedDict()
        self._total_rows = 0
        self._verdicts: OrderedDict[str, bool | None] = OrderedDict()  # SQL text -> cacheable (None: seen once)
        self._signature = self.signature()
        self._unstable: frozenset[str] | None = None  # _UNSTABLE + DuckDB's volatile and user functions
        self._trusted: set[str] = set()  # attached databases only this process writes (see trust)
        self.hits = 0

    def trust(self, catalog: str, path: str) -> None:
        """Treat the attached database `catalog` (file `path`) as the database's own: this process
        holds its write lock and writes it only through the engine (which clears the cache), and
        its file signature joins the database's."""
        with self._lock:
            self._trusted.add(catalog)
            self._files = (*self._files, path, path + ".wal")
            self._signature = None
            self._renew(self.signature())

    # ---- validity ---------------------------------------------------------------------

    def signature(self) -> tuple:
        """What any committed write changes: the database file's and its WAL's size and mtime."""
        marks = []
        for name in self._files:
            try:
                st = os.stat(name)
                marks.append((st.st_size, st.st_mtime_ns))
            except OSError:
                marks.append(None)
        return tuple(marks)

    def clear(self) -> None:
        with self._lock:
            self._signature = None
            self._renew(self.signature())

    def _renew(self, signature: tuple) -> None:
        """Empty the cache (under the lock) if the database changed since it was filled."""
        if signature != self._signature:
            self._entries.clear()
            self._verdicts.clear()  # a table may have become a view over files
            self._unstable = None  # or a macro may have been created
            self._total_rows = 0
            self._signature = signature

    # ---- lookups and stores ---------------------------------------------------------

    def get(self, sql: str) -> tuple[list[Column], list[tuple]] | None:
        signature = self.signature()
        with self._lock:
            self._renew(signature)
            entry = self._entries.get(sql)
            if entry is None:
                return None
            self._entries.move_to_end(sql)
            self.hits += 1
            return entry

    def peek(self, sql: str) -> bool:
        """Whether `get(sql)` would answer now (not counted as a hit)."""
        signature = self.signature()
        with self._lock:
            self._renew(signature)
            return sql in self._entries

    def put(self, sql: str, signature: tuple, columns: list[Column], rows: list[tuple]) -> None:
        """Keep a result computed when the database had `signature` (taken before the query ran)."""
        if len(rows) > self.max_rows:
            return
        with self._lock:
            if signature != self._signature or signature != self.signature():
                return  # a write landed meanwhile: the rows may predate it
            old = self._entries.pop(sql, None)
            if old is not None:
                self._total_rows -= len(old[1])
            self._entries[sql] = (columns, rows)
            self._total_rows += len(rows)
            while self._total_rows > self._max_total_rows or len(self._entries) > 1024:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._total_rows -= len(evicted)

    # ---- which SQL may be cached ----------------------------------------------------

    def cacheable(self, sql: str, cursor: Any) -> bool:
        """Whether `sql` reads only the database's own tables and no clock (memoized per text).
        `cursor` is a DuckDB cursor to look the tables and functions up with.

        The analysis (~5 ms: a parse and catalog lookups) waits for the second run of a text:
        a one-off query pays nothing, a repeated one is cached from its second run on."""
        with self._lock:
            seen = sql in self._verdicts
            verdict = self._verdicts.get(sql)
            if not seen:
                self._remember(sql, None)  # None: seen once, not analysed
                return False
        if verdict is None:
            try:
                verdict = self._deterministic(sqlglot.parse_one(sql, read="duckdb"), cursor, depth=0)
            except Exception:
                verdict = False  # anything we cannot analyse is simply not cached
            with self._lock:
                self._remember(sql, verdict)
        return verdict

    def _remember(self, sql: str, verdict: bool | None) -> None:
        self._verdicts[sql] = verdict
        self._verdicts.move_to_end(sql)
        if len(self._verdicts) > 4096:
            self._verdicts.popitem(last=False)

    def _unstable_functions(self, cursor: Any) -> frozenset[str]:
        if self._unstable is None:
            rows = cursor.execute(
                "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
                "WHERE stability = 'VOLATILE' OR NOT internal").fetchall()
            self._unstable = frozenset(_UNSTABLE | {name for (name,) in rows})
        return self._unstable

    def _deterministic(self, tree: exp.Expression, cursor: Any, depth: int) -> bool:
        if depth > 8:
            return False
        unstable = self._unstable_functions(cursor)
        for node in tree.find_all(exp.Func):
            name = _function_name(node)
            if name in unstable or name.startswith("current_"):
                return False
        ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        for table in tree.find_all(exp.Table):
            if not isinstance(table.this, exp.Identifier):
                return False  # a table function: read_parquet(...), range(...)
            if not table.catalog and not table.db and table.name.lower() in ctes:
                continue
            if not self._own_table(table, cursor, depth):
                return False
        return True

    def _own_table(self, table: exp.Table, cursor: Any, depth: int) -> bool:
        """A base table of the opened database, or a view whose own SQL is deterministic."""
        database = cursor.execute("SELECT current_database()").fetchone()[0]
        if table.catalog and table.catalog != database:
            if table.catalog not in self._trusted:
                return False  # an attached database may be written by others
            database = table.catalog
        schema = table.db or "main"
        found = cursor.execute(
            "SELECT 'table', NULL FROM duckdb_tables() WHERE database_name = ? AND lower(schema_name) = lower(?) "
            "AND lower(table_name) = lower(?) UNION ALL SELECT 'view', sql FROM duckdb_views() WHERE database_name = ? "
            "AND lower(schema_name) = lower(?) AND lower(view_name) = lower(?) AND NOT internal",
            [database, schema, table.name] * 2).fetchall()
        if len(found) != 1:
            return False
        kind, view_sql = found[0]
        if kind == "table":
            return True
        return self._deterministic(sqlglot.parse_one(view_sql, read="duckdb").expression, cursor, depth + 1)
