"""What every engine offers: run SQL and return typed rows, stream big results, be cancelled."""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Iterator

from sqlglot import exp

from ..query import Column, QueryError, Result

# Column types as the engines report them (query.Column.type) -> the kinds the schema check
# compares: numeric, text, time, boolean, other.
_KINDS = {
    "integer": "numeric", "bigint": "numeric", "double": "numeric", "decimal": "numeric",
    "text": "text", "date": "time", "timestamp": "time", "boolean": "boolean",
}


def type_kind(column_type: str) -> str:
    """numeric, text, time, boolean or other: an engine-independent kind of a column type."""
    return _KINDS.get(column_type, "other")


def rows_of(relation: exp.Expression) -> exp.Select:
    """SELECT * over a model source (a table or a SELECT) that reads no rows: LIMIT 0."""
    source = relation.copy()
    if not isinstance(source, exp.Table):
        source = source.subquery("_source")
    return exp.select("*").from_(source).limit(0)


class EngineError(QueryError):
    """The engine refused or failed a query; the message carries the engine's own words."""

    def __init__(self, message: str, code: str = "58000"):
        super().__init__(message, code)


class Cancel:
    """A handle a caller keeps to interrupt a running query from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._interrupt: Callable[[], None] | None = None
        self.cancelled = False
        self.reason = "canceling statement due to user request"

    def bind(self, interrupt: Callable[[], None] | None) -> None:
        with self._lock:
            self._interrupt = interrupt
            if interrupt is not None and self.cancelled:
                interrupt()

    def deadline(self, timeout: float | None, reason: str = "query timed out after {:g} s") -> threading.Timer | None:
        """Cancel with `reason` (formatted with the timeout) once `timeout` seconds pass.

        None when there is no timeout; otherwise stop the returned timer when the query ends.
        """
        if not timeout:
            return None
        timer = threading.Timer(timeout, self.cancel, args=(reason.format(timeout),))
        timer.daemon = True
        timer.start()
        return timer

    def cancel(self, reason: str | None = None) -> None:
        with self._lock:
            self.cancelled = True
            if reason:
                self.reason = reason
            if self._interrupt is not None:
                self._interrupt()


class Engine:
    """Base class: subclasses implement `stream`; `execute` collects it."""

    dialect = "duckdb"
    url = ""
    read_only = False  # a DuckDB file opened read-only (shared with other processes) cannot be written
    # An attached database this process writes refreshed materializations into, when the
    # database itself is read-only (DuckDB under serve); deploy.refresh and routing use it.
    refreshed_copy: str | None = None

    def stream(self, sql: str, cancel: Cancel | None = None, batch_size: int = 10_000) -> tuple[list[Column], Iterator[list[tuple]]]:
        raise NotImplementedError

    def execute(self, sql: str, cancel: Cancel | None = None, timeout: float | None = None) -> Result:
        cancel = cancel or Cancel()
        timer = cancel.deadline(timeout)
        try:
            columns, batches = self.stream(sql, cancel)
            rows = [row for batch in batches for row in batch]
        finally:
            if timer is not None:
                timer.cancel()
        return Result(columns, rows, sql)

    def execute_with_table(self, name: str, table, sql: str, cancel: Cancel | None = None,
                           timeout: float | None = None) -> Result:
        """Run `sql` with the Arrow table `table` visible to it as the temporary relation `name`
        (a training set's spine), dropped afterwards."""
        raise EngineError(f"{self.dialect} cannot take a temporary table of rows (a training set's spine)", "0A000")

    def run_statements(self, statements: Iterable[str], transaction: bool = True) -> None:
        """Run statements that return no rows (DDL, writes) in order; with `transaction`, in one
        transaction: all of them take effect or none does. Raises EngineError on the first failure."""
        for sql in statements:  # an engine without transactional DDL runs them one by one
            self.execute(sql)

    def describe(self, relation: exp.Expression) -> dict[str, str]:
        """Column name -> kind (see type_kind) of a table or SELECT, reading no rows.

        Raises EngineError when the relation does not exist or the SELECT fails.
        """
        columns = self.execute(rows_of(relation).sql(dialect=self.dialect)).columns
        return {c.name: type_kind(c.type) for c in columns}

    def relation_names(self) -> list[str]:
        """Tables and views of the current schema (for did-you-mean). Raises EngineError when unreachable."""
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        return [str(row[0]) for row in self.execute(sql).rows]

    def ping(self) -> None:
        """Raise EngineError when the engine cannot be reached."""
        self.execute("SELECT 1")

    def close(self) -> None:
        pass
