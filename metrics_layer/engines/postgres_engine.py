"""PostgreSQL (and the wire-compatible Materialize and RisingWave) through psycopg 3."""

from __future__ import annotations

import threading
from typing import Iterator

from ..query import Column
from .base import Cancel, Engine, EngineError

_TYPES = {
    16: "boolean", 20: "bigint", 21: "integer", 23: "integer", 26: "bigint", 700: "double", 701: "double",
    1700: "decimal", 25: "text", 1043: "text", 19: "text", 18: "text", 1042: "text", 1082: "date",
    1114: "timestamp", 1184: "timestamp", 1186: "interval",
}


class PostgresEngine(Engine):
    def __init__(self, url: str, dialect: str = "postgres"):
        import psycopg

        self._psycopg = psycopg
        self.url = url
        self.dialect = dialect
        self._local = threading.local()
        self._connections: list = []
        self._lock = threading.Lock()

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            try:
                connection = self._psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            except self._psycopg.Error as e:
                raise EngineError(f"cannot connect to {self.dialect} at {_redact(self.url)}: {e}".strip(), "08006") from None
            if self.dialect == "postgres":
                connection.execute("SET TIME ZONE 'UTC'")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def stream(self, sql: str, cancel: Cancel | None = None, batch_size: int = 10_000) -> tuple[list[Column], Iterator[list[tuple]]]:
        connection = self._connection()
        if cancel is not None:
            cancel.bind(connection.cancel_safe)
        cursor = connection.cursor()
        try:
            cursor.execute(sql)
            columns = [Column(d.name, _TYPES.get(d.type_code, "unknown")) for d in cursor.description or []]
        except self._psycopg.Error as e:
            if cancel is not None:
                cancel.bind(None)
            raise self._error(e, cancel) from None

        def batches() -> Iterator[list[tuple]]:
            try:
                while True:
                    batch = cursor.fetchmany(batch_size)
                    if not batch:
                        return
                    yield batch
            except self._psycopg.Error as e:
                raise self._error(e, cancel) from None
            finally:
                cursor.close()
                if cancel is not None:
                    cancel.bind(None)

        return columns, batches()

    def run_statements(self, statements, transaction: bool = True) -> None:
        connection = self._connection()
        try:
            if transaction:
                with connection.transaction():
                    for sql in statements:
                        connection.execute(sql)
            else:
                for sql in statements:
                    connection.execute(sql)
        except self._psycopg.Error as e:
            raise self._error(e, None) from None

    def relation_names(self) -> list[str]:
        """Tables and views of every schema on the search path (PostgreSQL; the others: the current one)."""
        if self.dialect != "postgres":
            return super().relation_names()
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = ANY (current_schemas(false))"
        return [str(row[0]) for row in self.execute(sql).rows]

    def _error(self, error, cancel: Cancel | None) -> EngineError:
        if cancel is not None and cancel.cancelled:
            return EngineError(cancel.reason, "57014")
        if isinstance(error, self._psycopg.OperationalError) and getattr(self._local, "connection", None) is not None:
            if self._local.connection.closed:
                self._local.connection = None
        code = getattr(error, "sqlstate", None) or "58000"
        return EngineError(f"{self.dialect}: {str(error).strip()}", code)

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
