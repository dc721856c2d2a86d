"""DuckDB in-process: the embedded default. One connection, a cursor per worker thread."""

from __future__ import annotations

import threading
from typing import Iterator

from ..query import Column
from .base import Cancel, Engine, EngineError

_TYPES = {
    "BOOLEAN": "boolean", "TINYINT": "integer", "SMALLINT": "integer", "INTEGER": "integer",
    "UTINYINT": "integer", "USMALLINT": "integer", "UINTEGER": "bigint", "BIGINT": "bigint",
    "UBIGINT": "decimal", "HUGEINT": "decimal", "UHUGEINT": "decimal", "FLOAT": "double", "DOUBLE": "double",
    "VARCHAR": "text", "DATE": "date", "TIMESTAMP": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamp",
    "TIMESTAMP_NS": "timestamp", "TIMESTAMP_MS": "timestamp", "TIMESTAMP_S": "timestamp", "INTERVAL": "interval",
}


def column_type(duckdb_type: str) -> str:
    name = str(duckdb_type)
    if name.startswith("DECIMAL"):
        return "decimal"
    return _TYPES.get(name, "text" if name == "UUID" else "unknown")


class DuckDBEngine(Engine):
    dialect = "duckdb"

    def __init__(self, path: str = ":memory:", read_only: bool = False):
        import duckdb

        self.url = f"duckdb:///{path}"
        self.path = path
        self._duckdb = duckdb
        try:
            self._connection = duckdb.connect(path, read_only=read_only and path != ":memory:")
        except duckdb.Error as e:
            raise EngineError(f"cannot open DuckDB database {path!r}: {e}") from None
        self._connection.execute("SET TimeZone = 'UTC'")
        self._local = threading.local()

    def _cursor(self):
        # DuckDB connections are not thread-safe; a cursor per thread shares the database
        # without serialising queries on one connection.
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._connection.cursor()
        return cursor

    def stream(self, sql: str, cancel: Cancel | None = None, batch_size: int = 10_000) -> tuple[list[Column], Iterator[list[tuple]]]:
        # A cursor of its own (~4 us): the caller may consume the batches later, from another
        # thread, while this thread runs other queries (the SQL endpoint streams portals that way).
        cursor = self._connection.cursor()
        if cancel is not None:
            cancel.bind(cursor.interrupt)
        try:
            cursor.execute(sql)
        except self._duckdb.Error as e:
            cursor.close()
            if cancel is not None:
                cancel.bind(None)
                if cancel.cancelled:
                    raise EngineError(cancel.reason, "57014") from None
            raise EngineError(f"DuckDB: {e}") from None
        columns = [Column(d[0], column_type(d[1])) for d in cursor.description or []]

        def batches() -> Iterator[list[tuple]]:
            try:
                while True:
                    try:
                        batch = cursor.fetchmany(batch_size)
                    except self._duckdb.Error as e:
                        if cancel is not None and cancel.cancelled:
                            raise EngineError(cancel.reason, "57014") from None
                        raise EngineError(f"DuckDB: {e}") from None
                    if not batch:
                        return
                    yield batch
            finally:
                cursor.close()
                if cancel is not None:
                    cancel.bind(None)

        return columns, batches()

    def close(self) -> None:
        self._connection.close()
