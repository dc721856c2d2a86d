"""PostgreSQL (and the wire-compatible Materialize and RisingWave) through psycopg 3.

Connections come from a bounded pool (`pool_size` in the project file, default 4): a query
takes one for as long as it reads rows and gives it back on every path (rows read, error,
cancel, time-out, the iterator dropped unread). An idle connection is checked before reuse
without a round trip (a socket the engine wrote to or closed while idle is dead: an admin
shutdown or restart), and a read that fails because the engine closed its connection is
retried once on a fresh one.

Time-outs hold whatever the engine does: the session's `statement_timeout` (PostgreSQL) lets
the engine stop the statement itself, and the client-side deadline (`Cancel`) sends a cancel
request and, if the statement has not returned within a short grace, abandons the connection
(shuts its socket), which wakes the waiting thread even when the engine is frozen.
"""

from __future__ import annotations

import functools
import itertools
import os
import select
import socket
import threading
import time
from typing import Iterator

from ..query import Column, Result
from .base import Cancel, Engine, EngineError

_TYPES = {
    16: "boolean", 20: "bigint", 21: "integer", 23: "integer", 26: "bigint", 700: "double", 701: "double",
    1700: "decimal", 25: "text", 1043: "text", 19: "text", 18: "text", 1042: "text", 1082: "date",
    1114: "timestamp", 1184: "timestamp", 1186: "interval",
}

DEFAULT_POOL_SIZE = 4
POOL_WAIT = 30.0  # seconds a query waits for a free connection before 53300 (503)
CONNECT_TIMEOUT = 5  # seconds to open a connection (a frozen engine accepts TCP and never answers)
ABANDON_GRACE = 0.5  # seconds between a cancel request and abandoning the connection

# SQLSTATEs of a connection the engine closed: admin shutdown, crash shutdown, cannot connect now.
_CLOSED_BY_ENGINE = {"57P01", "57P02", "57P03"}

# Session set-up per engine: what each accepts (Materialize and RisingWave keep their own defaults).
_SESSION_SETUP = {
    "postgres": lambda timeout: ["SET TIME ZONE 'UTC'"]
    + ([f"SET statement_timeout = {int(timeout * 1000)}"] if timeout else []),
}


class _Lease:
    """One query's hold on a pooled connection; `interrupt` may come from any thread."""

    __slots__ = ("connection", "lock", "released", "abandoned", "interrupted", "done")

    def __init__(self, connection):
        self.connection = connection
        self.lock = threading.Lock()
        self.released = False
        self.abandoned = False
        self.interrupted = False  # a cancel request may still be on its way: never reuse
        self.done = threading.Event()

    def interrupt(self) -> None:
        """Ask the engine to cancel; abandon the connection if the statement is still running
        after ABANDON_GRACE. Never blocks the caller (a frozen engine never answers)."""
        self.interrupted = True
        threading.Thread(target=self._cancel_then_abandon, name="pg-cancel", daemon=True).start()

    def _cancel_then_abandon(self) -> None:
        canceller = threading.Thread(target=self._send_cancel, daemon=True)
        canceller.start()
        if self.done.wait(ABANDON_GRACE):
            return
        self.abandon()

    def _send_cancel(self) -> None:
        try:
            self.connection.cancel_safe(timeout=5)
        except Exception:
            pass

    def abandon(self) -> None:
        """Shut the connection's socket: the thread waiting on it gets an error at once."""
        with self.lock:
            if self.released or self.abandoned:
                return
            self.abandoned = True
            try:
                fd = self.connection.pgconn.socket
                sock = socket.socket(fileno=os.dup(fd))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()
            except Exception:
                pass


class ConnectionPool:
    """At most `size` connections to the engine, opened on demand, reused while healthy."""

    def __init__(self, open_connection, size: int, wait: float = POOL_WAIT):
        self._open = open_connection
        self.size = max(1, int(size))
        self.wait = wait
        self._idle: list = []
        self._in_use = 0
        self._cond = threading.Condition()
        self._closed = False

    @property
    def open_connections(self) -> int:
        with self._cond:
            return self._in_use + len(self._idle)

    def acquire(self, cancel: Cancel | None = None) -> _Lease:
        deadline = time.monotonic() + self.wait
        with self._cond:
            while True:
                if cancel is not None and cancel.cancelled:
                    raise EngineError(cancel.reason, "57014")
                while self._idle:
                    connection = self._idle.pop()
                    if _healthy(connection):
                        self._in_use += 1
                        return _Lease(connection)
                    _close_quietly(connection)
                if self._in_use < self.size:
                    self._in_use += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EngineError(
                        f"all {self.size} engine connections are busy (waited {self.wait:g} s); "
                        "raise pool_size in metrics_layer.yml or retry later", "53300")
                self._cond.wait(min(left, 0.25))
        return _Lease(self._connect(cancel))

    def _connect(self, cancel: Cancel | None):
        """A new connection (its slot already counted in use), opened in a thread of its own so
        that a cancel or deadline need not wait for a frozen engine's connect time-out: the
        connection, once open, joins the idle ones."""
        if cancel is None:
            try:
                return self._open()
            except BaseException:
                self._give_back(None)
                raise
        outcome: dict = {}
        done = threading.Event()
        state = {"abandoned": False}
        lock = threading.Lock()

        def opener():
            try:
                outcome["connection"] = self._open()
            except BaseException as e:
                outcome["error"] = e
            with lock:
                done.set()
                if state["abandoned"]:
                    self._give_back(outcome.get("connection"))

        threading.Thread(target=opener, name="pg-connect", daemon=True).start()
        while not done.wait(0.05):
            if cancel.cancelled:
                with lock:
                    if not done.is_set():
                        state["abandoned"] = True
                        raise EngineError(cancel.reason, "57014")
                break
        if "error" in outcome:
            self._give_back(None)
            raise outcome["error"]
        return outcome["connection"]

    def _give_back(self, connection) -> None:
        """Return a slot counted in use: `connection` becomes idle (None: the slot is free)."""
        keep = connection is not None and not self._closed and _healthy(connection)
        with self._cond:
            self._in_use -= 1
            if keep:
                self._idle.append(connection)
            self._cond.notify()
        if connection is not None and not keep:
            _close_quietly(connection)

    def release(self, lease: _Lease) -> None:
        with lease.lock:
            if lease.released:
                return
            lease.released = True
            lease.done.set()
        if lease.abandoned or lease.interrupted:
            self._give_back(None)
            _close_quietly(lease.connection)
        else:
            self._give_back(lease.connection)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            _close_quietly(connection)


def _healthy(connection) -> bool:
    """Open, idle outside a transaction, and nothing unread on its socket (an idle connection
    the engine wrote to has been told to go: 57P01 on shutdown, or the socket was closed)."""
    try:
        if connection.closed or connection.broken:
            return False
        from psycopg.pq import TransactionStatus

        if connection.info.transaction_status != TransactionStatus.IDLE:
            return False
        readable, _, _ = select.select([connection.pgconn.socket], [], [], 0)
        return not readable
    except Exception:
        return False


def _close_quietly(connection) -> None:
    try:
        connection.close()
    except Exception:
        pass


def _is_read(sql: str) -> bool:
    head = sql.lstrip().lstrip("(").lstrip()[:6].upper()
    return head.startswith(("SELECT", "WITH", "VALUES", "TABLE", "SHOW"))


class PostgresEngine(Engine):
    def __init__(self, url: str, dialect: str = "postgres", pool_size: int | None = None,
                 statement_timeout: float | None = None):
        import psycopg

        self._psycopg = psycopg
        self.url = url
        self.dialect = dialect
        self.statement_timeout = statement_timeout
        self.pool = ConnectionPool(self._open, pool_size or DEFAULT_POOL_SIZE)
        self._ping_lock = threading.Lock()

    def _open(self):
        try:
            connection = self._psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except self._psycopg.Error as e:
            raise EngineError(f"cannot connect to {self.dialect} at {_redact(self.url)}: {e}".strip(), "08006") from None
        try:
            for statement in _SESSION_SETUP.get(self.dialect, lambda _: [])(self.statement_timeout):
                connection.execute(statement)
        except self._psycopg.Error as e:
            _close_quietly(connection)
            raise EngineError(f"cannot set up a {self.dialect} session: {e}".strip(), "08006") from None
        return connection

    def stream(self, sql: str, cancel: Cancel | None = None, batch_size: int = 10_000) -> tuple[list[Column], Iterator[list[tuple]]]:
        attempts = 2 if _is_read(sql) else 1
        for attempt in range(attempts):
            lease = self.pool.acquire(cancel)
            if cancel is not None:
                cancel.bind(lease.interrupt)
            cursor = lease.connection.cursor()
            rows = stream = None
            try:
                if attempts == 2 and _chunked_rows():
                    # A read streams (libpq chunked rows): the rows come off the socket as they
                    # are consumed, so a client that stops reading stops PostgreSQL too, and the
                    # server never holds the whole result. An empty result tells no columns to
                    # a stream: it is asked again plainly (cheap, it is empty).
                    stream = cursor.stream(sql, size=batch_size)
                    first = next(stream, None)
                    if first is None:
                        stream = None
                        cursor.execute(sql)
                    else:
                        rows = itertools.chain((first,), stream)
                else:
                    cursor.execute(sql)
                columns = [Column(d.name, _TYPES.get(d.type_code, "unknown")) for d in cursor.description or []]
            except self._psycopg.Error as e:
                if cancel is not None:
                    cancel.bind(None)
                self.pool.release(lease)
                if attempt + 1 < attempts and self._closed_by_engine(e, lease, cancel):
                    continue  # a stale connection (engine restarted): once more on a fresh one
                raise self._error(e, cancel, lease) from None
            except BaseException:
                if cancel is not None:
                    cancel.bind(None)
                self.pool.release(lease)
                raise
            return columns, _Batches(self, lease, cursor, cancel, batch_size, rows, stream)
        raise AssertionError("unreachable")

    def _closed_by_engine(self, error, lease: _Lease, cancel: Cancel | None) -> bool:
        if (cancel is not None and cancel.cancelled) or lease.abandoned:
            return False
        if getattr(error, "sqlstate", None) in _CLOSED_BY_ENGINE:
            return True
        return isinstance(error, self._psycopg.OperationalError) and (lease.connection.closed or lease.connection.broken)

    def run_statements(self, statements, transaction: bool = True) -> None:
        lease = self.pool.acquire(None)
        connection = lease.connection
        try:
            if transaction:
                with connection.transaction():
                    for sql in statements:
                        connection.execute(sql)
            else:
                for sql in statements:
                    connection.execute(sql)
        except self._psycopg.Error as e:
            raise self._error(e, None, lease) from None
        finally:
            self.pool.release(lease)

    def execute_with_table(self, name, table, sql, cancel=None, timeout=None) -> Result:
        """COPY the Arrow table into a temporary table on one pooled connection, ANALYZE it (so the
        planner knows its size), run `sql` there and drop the table."""
        from psycopg import sql as pgsql

        cancel = cancel or Cancel()
        timer = cancel.deadline(timeout)
        lease = self.pool.acquire(cancel)
        cancel.bind(lease.interrupt)
        connection = lease.connection
        relation = pgsql.Identifier(name)
        columns_sql = pgsql.SQL(", ").join(
            pgsql.SQL("{} {}").format(pgsql.Identifier(field.name), pgsql.SQL(_pg_type(field.type))) for field in table.schema)
        try:
            try:
                connection.execute(pgsql.SQL("CREATE TEMPORARY TABLE {} ({})").format(relation, columns_sql))
                with connection.cursor().copy(pgsql.SQL("COPY {} FROM STDIN").format(relation)) as copy:
                    for row in zip(*(column.to_pylist() for column in table.columns)):
                        copy.write_row(row)
                connection.execute(pgsql.SQL("ANALYZE {}").format(relation))
                cursor = connection.execute(sql)
                columns = [Column(d.name, _TYPES.get(d.type_code, "unknown")) for d in cursor.description or []]
                rows = cursor.fetchall()
            finally:
                if not (connection.closed or connection.broken):
                    connection.execute(pgsql.SQL("DROP TABLE IF EXISTS {}").format(relation))
        except self._psycopg.Error as e:
            raise self._error(e, cancel, lease) from None
        finally:
            cancel.bind(None)
            if timer is not None:
                timer.cancel()
            self.pool.release(lease)
        return Result(columns, rows, sql)

    def relation_names(self) -> list[str]:
        """Tables and views of every schema on the search path (PostgreSQL; the others: the current one)."""
        if self.dialect != "postgres":
            return super().relation_names()
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = ANY (current_schemas(false))"
        return [str(row[0]) for row in self.execute(sql).rows]

    def _error(self, error, cancel: Cancel | None, lease: _Lease | None = None) -> EngineError:
        if cancel is not None and cancel.cancelled:
            return EngineError(cancel.reason, "57014")
        code = getattr(error, "sqlstate", None)
        if code is None and isinstance(error, self._psycopg.OperationalError):
            code = "08006"  # the connection was lost mid-query
        return EngineError(f"{self.dialect}: {str(error).strip()}", code or "58000")

    def close(self) -> None:
        self.pool.close()


@functools.lru_cache(maxsize=1)
def _chunked_rows() -> bool:
    """libpq 17+ streams rows in chunks (cursor.stream(size=...)); older ones fetch whole results."""
    try:
        import psycopg

        return psycopg.pq.version() >= 170000
    except Exception:
        return False



class _Batches:
    """Row batches of one statement; the connection goes back to the pool when they are read,
    fail, or the iterator is closed or dropped (even before its first batch)."""

    def __init__(self, engine: PostgresEngine, lease: _Lease, cursor, cancel: Cancel | None, batch_size: int,
                 rows: Iterator[tuple] | None = None, stream=None):
        self._engine = engine
        self._rows = rows  # a streaming read's rows (cursor.stream), else fetched from the cursor
        self._stream = stream  # the cursor.stream generator, closed (its query cancelled) if left early
        self._lease: _Lease | None = lease
        self._cursor = cursor
        self._cancel = cancel
        self._batch_size = batch_size

    def __iter__(self):
        return self

    def __next__(self) -> list[tuple]:
        if self._lease is None:
            raise StopIteration
        try:
            if self._rows is not None:
                batch = list(itertools.islice(self._rows, self._batch_size))
            else:
                batch = self._cursor.fetchmany(self._batch_size)
        except self._engine._psycopg.Error as e:
            lease = self._lease
            self.close()
            raise self._engine._error(e, self._cancel, lease) from None
        except BaseException:
            self.close()
            raise
        if not batch:
            self.close()
            raise StopIteration
        return batch

    def close(self) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        stream, self._rows, self._stream = self._stream, None, None
        try:
            if stream is not None:
                stream.close()  # a stream left early cancels its query and drains what came
        except Exception:
            pass
        try:
            self._cursor.close()
        except Exception:
            pass
        if self._cancel is not None:
            self._cancel.bind(None)
        self._engine.pool.release(lease)

    def __del__(self):
        self.close()


def _pg_type(arrow_type) -> str:
    """The PostgreSQL column type for an Arrow type of a spine column."""
    import pyarrow as pa

    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP"
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_floating(arrow_type):
        return "DOUBLE PRECISION"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_decimal(arrow_type):
        return "NUMERIC"
    return "TEXT"


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
