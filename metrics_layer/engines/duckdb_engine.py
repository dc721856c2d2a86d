"""DuckDB in-process: the embedded default. One connection; queries run on a small pool of cursors.

Cursors are reused: a fresh cursor's first query costs ~0.1-0.3 ms more than on a warm one. A
cursor goes back to the pool only once its stream is exhausted: a stream may be paused and
consumed later from another thread (portals, cursors, JDBC fetch size), so a cursor with a
live stream is never shared. Streams closed early, or failed, close their cursor instead.

Hot SQL skips DuckDB's parser: a SELECT seen `prepare_threshold` times is prepared on the
cursor that runs it (`PREPARE ml_N AS <sql>`, then `EXECUTE ml_N`); each cursor keeps an LRU
of its prepared statements (they belong to one DuckDB connection). DuckDB 2.0 still re-binds
and re-plans a prepared SELECT over tables at every EXECUTE (it cannot prove the catalog
unchanged), so this saves the parse only: ~0.1 ms of the ~0.7 ms of a small aggregate.
Preparing costs a parse and a plan, hence the threshold: a one-off query runs plainly.

Small results of deterministic SELECTs are kept in an exact result cache (result_cache.py):
repeated dashboard queries skip DuckDB's ~0.5 ms per query while the data is unchanged.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from collections import OrderedDict
from typing import Iterator

from sqlglot import exp

from ..query import Column, Result
from .base import Cancel, Engine, EngineError, rows_of, type_kind
from .result_cache import ResultCache

_TYPES = {
    "BOOLEAN": "boolean", "TINYINT": "integer", "SMALLINT": "integer", "INTEGER": "integer",
    "UTINYINT": "integer", "USMALLINT": "integer", "UINTEGER": "bigint", "BIGINT": "bigint",
    "UBIGINT": "decimal", "HUGEINT": "decimal", "UHUGEINT": "decimal", "FLOAT": "double", "DOUBLE": "double",
    "VARCHAR": "text", "DATE": "date", "TIMESTAMP": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamp",
    "TIMESTAMP_NS": "timestamp", "TIMESTAMP_MS": "timestamp", "TIMESTAMP_S": "timestamp", "INTERVAL": "interval",
}

# Only single read-only queries are prepared: `PREPARE x AS a; b` would run `b` right away,
# and a statement that writes must never run twice (see DuckDBEngine._run).
REFRESHED_COPY = "metrics_layer_refreshed"  # the catalog name of attach_refreshed_copy's database

_PREPARABLE = re.compile(r"\s*\(*\s*(?:SELECT|WITH)\b", re.I)
_WRITES = re.compile(
    r"\b(?:INSERT|UPDATE|DELETE|MERGE|CREATE|DROP|ALTER|TRUNCATE|COPY|ATTACH|DETACH|PRAGMA|SET|RESET|CALL|"
    r"EXPORT|IMPORT|INSTALL|LOAD|CHECKPOINT|VACUUM|PREPARE|EXECUTE|DEALLOCATE)\b", re.I)


def _preparable(sql: str) -> bool:
    return ";" not in sql and _PREPARABLE.match(sql) is not None and _WRITES.search(sql) is None


def column_type(duckdb_type: str) -> str:
    name = str(duckdb_type)
    if name.startswith("DECIMAL"):
        return "decimal"
    return _TYPES.get(name, "text" if name == "UUID" else "unknown")


class _PooledCursor:
    """A DuckDB cursor and the prepared statements made on it (SQL text -> statement name)."""

    __slots__ = ("cursor", "prepared")

    def __init__(self, cursor) -> None:
        self.cursor = cursor
        self.prepared: OrderedDict[str, str] = OrderedDict()


class DuckDBEngine(Engine):
    dialect = "duckdb"
    pool_size = 8  # idle cursors kept for reuse
    prepare_threshold = 5  # runs of the same SELECT before it is prepared (0: never prepare)
    prepared_per_cursor = 64  # prepared statements kept per cursor (least recently used go)
    _seen_limit = 4096  # SQL texts counted towards prepare_threshold
    _NEVER = -1  # in _seen: the SQL failed as a prepared statement; run it plainly
    small_rows = 2048  # a result up to this size streams as rows the next time its SQL runs

    def __init__(self, path: str = ":memory:", read_only: bool = False, result_cache: bool = True):
        import duckdb

        self.url = f"duckdb:///{path}"
        self.path = path
        self._duckdb = duckdb
        try:
            # Read-only takes DuckDB's shared file lock: other processes may read the file too, and
            # none may write it while we hold it (what keeps the result cache exact). A file that
            # does not exist yet is created (read-write).
            read_only = read_only and path != ":memory:" and os.path.exists(path)
            self._connection = duckdb.connect(path, read_only=read_only)
            self.read_only = read_only
        except duckdb.Error as e:
            holder = re.search(r"\(PID (\d+)\)", str(e)) if "lock" in str(e).lower() else None
            if holder is not None:  # DuckDB: one process writes a file, or several only read it
                if read_only:
                    why = (f"cannot read DuckDB database {path!r}: process {holder.group(1)} holds its write lock (a deploy or "
                           "refresh, or serve with deploy: {refresh: true}); wait for it to finish or stop it")
                else:
                    why = (f"cannot write DuckDB database {path!r}: process {holder.group(1)} (e.g. metrics-layer serve) has it "
                           "open; stop it first (serve refreshes due materializations itself, into a copy beside the file), "
                           "or set deploy: {refresh: true} in metrics_layer.yml to have serve hold the write lock and "
                           "refresh them in the file")
                raise EngineError(why + " (DuckDB lets one process write a file, or several only read it)") from None
            raise EngineError(f"cannot open DuckDB database {path!r}: {e}") from None
        self._connection.execute("SET TimeZone = 'UTC'")
        self._idle: list[_PooledCursor] = []
        self._pool_lock = threading.Lock()
        self._names = itertools.count(1)
        self._seen: OrderedDict[str, int] = OrderedDict()  # SQL text -> runs (up to the threshold) or _NEVER
        self._seen_lock = threading.Lock()
        self._small: OrderedDict[str, None] = OrderedDict()  # SQL texts whose last result was small
        self._closed = False
        self.result_cache = ResultCache(path) if result_cache else None

    # ---- the cursor pool -------------------------------------------------------------

    def _take(self) -> _PooledCursor:
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()  # the most recently used: its statements are warm
        # DuckDB connections are not thread-safe; a cursor is a connection of its own to the
        # same database, so queries on different cursors run side by side.
        return _PooledCursor(self._connection.cursor())

    def _give_back(self, pooled: _PooledCursor) -> None:
        with self._pool_lock:
            if not self._closed and len(self._idle) < self.pool_size:
                self._idle.append(pooled)
                return
        _close_quietly(pooled.cursor)

    # ---- running SQL -------------------------------------------------------------------

    def _hot(self, sql: str) -> bool:
        """Count a run of `sql`; True once it has run prepare_threshold times."""
        with self._seen_lock:
            runs = self._seen.get(sql, 0)
            if runs == self._NEVER:
                return False
            runs += 1
            self._seen[sql] = min(runs, self.prepare_threshold)
            self._seen.move_to_end(sql)
            if len(self._seen) > self._seen_limit:
                self._seen.popitem(last=False)
        return runs >= self.prepare_threshold

    def _small_result(self, sql: str) -> bool:
        """Whether the last complete run of `sql` returned at most `small_rows` rows."""
        with self._seen_lock:
            return sql in self._small

    def _note_size(self, sql: str, rows: int) -> None:
        """Remember whether `sql` returned a small result (it then streams as rows: prepared,
        cached, without the Arrow set-up) or a large one (Arrow)."""
        with self._seen_lock:
            if rows <= self.small_rows:
                self._small[sql] = None
                self._small.move_to_end(sql)
                if len(self._small) > self._seen_limit:
                    self._small.popitem(last=False)
            else:
                self._small.pop(sql, None)

    def _never_prepare(self, sql: str) -> None:
        with self._seen_lock:
            self._seen[sql] = self._NEVER
            self._seen.move_to_end(sql)

    def _run(self, pooled: _PooledCursor, sql: str, cancel: Cancel | None) -> None:
        """Execute `sql` on the cursor, through a prepared statement when it is a hot SELECT."""
        cursor, prepared = pooled.cursor, pooled.prepared
        name = prepared.get(sql)
        if (name is None and self.prepare_threshold and self.prepared_per_cursor and _preparable(sql)
                and self._hot(sql)):
            name = f"ml_{next(self._names)}"
            try:
                cursor.execute(f"PREPARE {name} AS {sql}")
            except self._duckdb.Error:
                if cancel is not None and cancel.cancelled:
                    raise
                self._never_prepare(sql)
                name = None  # not preparable, or invalid: the plain SQL below says why
            else:
                prepared[sql] = name
                if len(prepared) > self.prepared_per_cursor:
                    _, oldest = prepared.popitem(last=False)
                    try:
                        cursor.execute(f"DEALLOCATE {oldest}")
                    except self._duckdb.Error:
                        pass
        elif name is not None:
            prepared.move_to_end(sql)
        if name is None:
            cursor.execute(sql)
            return
        if cancel is not None and cancel.cancelled:
            # Cancelled while preparing: an interrupt of an idle cursor does not stick.
            raise EngineError(cancel.reason, "57014")
        try:
            cursor.execute(f"EXECUTE {name}")
        except self._duckdb.Error:
            if cancel is not None and cancel.cancelled:
                raise
            # A failure (a table dropped since, a value that does not convert...): forget the
            # statement and run the SQL plainly, once, so that the error is DuckDB's own
            # message for that SQL (a prepared statement's errors lack the "LINE 1: ..."
            # excerpt), or the result if it now succeeds. Only SELECTs get here: no writes
            # run twice.
            prepared.pop(sql, None)
            try:
                cursor.execute(f"DEALLOCATE {name}")
            except self._duckdb.Error:
                pass
            self._never_prepare(sql)
            cursor.execute(sql)

    def stream(self, sql: str, cancel: Cancel | None = None, batch_size: int = 2048) -> tuple[list[Column], Iterator[list[tuple]]]:
        # (fetchmany of ~2,000 rows measured ~15% faster than 10,000: the batch stays in cache)
        cache, signature = self.result_cache, None
        if cache is not None:
            hit = cache.get(sql)
            if hit is not None:
                columns, rows = hit
                return list(columns), (rows[i:i + batch_size] for i in range(0, len(rows), batch_size))
        # The caller may consume the batches later, from another thread, while this thread
        # runs other queries (the SQL endpoint streams portals that way): the cursor is the
        # stream's until it is exhausted.
        pooled = self._take()
        cursor = pooled.cursor
        if cancel is not None:
            cancel.bind(cursor.interrupt)
        try:
            if cache is not None:
                if not _preparable(sql):
                    cache.clear()  # may write (an in-memory database changes only this way)
                elif cache.cacheable(sql, cursor):
                    signature = cache.signature()  # before the query: rows never predate it
            self._run(pooled, sql, cancel)
            columns = [Column(d[0], column_type(d[1])) for d in cursor.description or []]
        except self._duckdb.Error as e:
            _abandon(cursor, cancel)
            raise (EngineError(cancel.reason, "57014") if cancel is not None and cancel.cancelled
                   else EngineError(f"DuckDB: {e}")) from None
        except BaseException:
            _abandon(cursor, cancel)
            raise

        def batches() -> Iterator[list[tuple]]:
            exhausted = False
            kept: list[tuple] | None = [] if signature is not None else None  # rows for the cache
            count = 0
            try:
                while True:
                    try:
                        batch = cursor.fetchmany(batch_size)
                    except self._duckdb.Error as e:
                        if cancel is not None and cancel.cancelled:
                            raise EngineError(cancel.reason, "57014") from None
                        raise EngineError(f"DuckDB: {e}") from None
                    if not batch:
                        exhausted = True
                        self._note_size(sql, count)
                        if kept is not None:
                            cache.put(sql, signature, columns, kept)
                        return
                    count += len(batch)
                    if kept is not None:
                        kept.extend(batch)
                        if len(kept) > cache.max_rows:
                            kept = None
                    yield batch
            finally:
                # Unbind first: once the cursor is back in the pool, a late cancel of this
                # stream must not interrupt someone else's query.
                if cancel is not None:
                    cancel.bind(None)
                if exhausted:
                    self._give_back(pooled)
                else:
                    _close_quietly(cursor)  # closed early or failed: a fresh cursor next time

        return columns, batches()

    # DuckDB types whose Arrow form the SQL endpoint encodes column-wise (values.ColumnarEncoder),
    # and whose Python values from Arrow equal a cursor's (for the rows it still converts).
    _ARROW_TYPES = frozenset({
        "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "HUGEINT",
        "FLOAT", "DOUBLE", "VARCHAR", "DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE"})

    def stream_arrow(self, sql: str, cancel: Cancel | None = None, batch_size: int = 16_384):
        """A large result as Arrow: (columns, Arrow schema, iterator of RecordBatches), or None when
        `stream` should run it instead: a result cache hit, a statement that is not a plain
        SELECT, pyarrow not installed, a column type without a columnar encoding, or SQL whose last run returned a
        small result (at most `small_rows`: rows then cost less than setting up Arrow, ~0.5 ms,
        and hot SQL is prepared). The first run of any SQL, and SQL whose results are large,
        stream as Arrow.

        DuckDB streams the batches from a relation's record batch reader: the result is never
        materialized, whatever its size (a DB-API result's Arrow output and prepared statements
        would be). The rows skip the result cache (a small result is still kept: converted at
        the end) and prepared statements (they save a parse, nothing for a large result).
        """
        cache = self.result_cache
        if not _have_pyarrow() or not _preparable(sql) or self._small_result(sql) or (cache is not None and cache.peek(sql)):
            return None
        pooled = self._take()
        cursor = pooled.cursor
        if cancel is not None:
            cancel.bind(cursor.interrupt)
        signature = None
        try:
            if cache is not None and cache.cacheable(sql, cursor):
                signature = cache.signature()
            relation = cursor.sql(sql)
            types = [str(t) for t in relation.types]
            if not all(t in self._ARROW_TYPES or t.startswith("DECIMAL") for t in types):
                if cancel is not None:
                    cancel.bind(None)
                self._give_back(pooled)
                return None
            columns = [Column(name, column_type(t)) for name, t in zip(relation.columns, types)]
            if any(t in ("HUGEINT", "TIMESTAMP WITH TIME ZONE") for t in types):
                signature = None  # their Python values from Arrow differ in type from a cursor's
            reader = relation.to_arrow_reader(batch_size)
        except self._duckdb.Error as e:
            _abandon(cursor, cancel)
            raise (EngineError(cancel.reason, "57014") if cancel is not None and cancel.cancelled
                   else EngineError(f"DuckDB: {e}")) from None
        except BaseException:
            _abandon(cursor, cancel)
            raise

        def batches():
            exhausted = False
            kept: list | None = [] if signature is not None else None  # batches for the cache
            count = 0
            try:
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        exhausted = True
                        self._note_size(sql, count)
                        if kept is not None:
                            from ..serve.pgwire.values import arrow_rows

                            cache.put(sql, signature, columns, [row for b in kept for row in arrow_rows(b)])
                        return
                    except Exception as e:  # duckdb.Error, or pyarrow's wrapping of it
                        if cancel is not None and cancel.cancelled:
                            raise EngineError(cancel.reason, "57014") from None
                        message = str(e)
                        raise EngineError(message if message.startswith("DuckDB") else f"DuckDB: {message}") from None
                    count += batch.num_rows
                    if kept is not None:
                        kept = kept + [batch] if count <= cache.max_rows else None
                    yield batch
            finally:
                if cancel is not None:
                    cancel.bind(None)
                with _suppress():
                    reader.close()
                if exhausted:
                    self._give_back(pooled)
                else:
                    _close_quietly(cursor)

        return columns, reader.schema, batches()

    def execute_with_table(self, name, table, sql, cancel=None, timeout=None) -> Result:
        """The Arrow table is registered on a cursor of its own (a view of that connection only,
        read in place: nothing is copied, and a read-only database stays unwritten)."""
        cancel = cancel or Cancel()
        timer = cancel.deadline(timeout)
        cursor = self._connection.cursor()
        cancel.bind(cursor.interrupt)
        try:
            cursor.register(name, table)
            cursor.execute(sql)
            columns = [Column(d[0], column_type(d[1])) for d in cursor.description or []]
            rows = cursor.fetchall()
        except self._duckdb.Error as e:
            if cancel.cancelled:
                raise EngineError(cancel.reason, "57014") from None
            raise EngineError(f"DuckDB: {e}") from None
        finally:
            cancel.bind(None)
            if timer is not None:
                timer.cancel()
            _close_quietly(cursor)
        return Result(columns, rows, sql)

    def run_statements(self, statements, transaction: bool = True) -> None:
        cursor = self._connection.cursor()  # its own connection: the transaction is this call's
        try:
            if transaction:
                cursor.execute("BEGIN TRANSACTION")
            for sql in statements:
                cursor.execute(sql)
            if transaction:
                cursor.execute("COMMIT")
        except self._duckdb.Error as e:
            if transaction:
                try:
                    cursor.execute("ROLLBACK")
                except self._duckdb.Error:
                    pass
            raise EngineError(f"DuckDB: {e}") from None
        finally:
            _close_quietly(cursor)
            if self.result_cache is not None:
                self.result_cache.clear()  # an in-memory database changes without a file to tell

    def attach_refreshed_copy(self) -> str:
        """Attach `<name>.refreshed.duckdb` beside the read-only file, writable, as the catalog
        that refreshed materializations go to (deploy.refresh): other processes keep reading the
        file itself (its materializations as last refreshed there), and this one holds the
        copy's write lock. Returns the copy's path."""
        if not self.read_only:
            raise EngineError("a DuckDB database opened for writing refreshes its materializations in place")
        root, ext = os.path.splitext(self.path)
        path = f"{root}.refreshed{ext or '.duckdb'}"
        attach = exp.Attach(this=exp.Alias(this=exp.Literal.string(path), alias=exp.to_identifier(REFRESHED_COPY)),
                            expressions=[exp.AttachOption(this=exp.var("READ_WRITE"))])
        try:
            self._connection.execute(attach.sql(dialect="duckdb"))
        except self._duckdb.Error as e:
            holder = re.search(r"\(PID (\d+)\)", str(e))
            if holder is not None:
                raise EngineError(f"cannot write {path!r}, the copy materializations are refreshed into: process "
                                  f"{holder.group(1)} (another metrics-layer serve) holds it") from None
            raise EngineError(f"cannot attach {path!r}, the copy materializations are refreshed into: {e}") from None
        self.refreshed_copy = REFRESHED_COPY
        if self.result_cache is not None:
            self.result_cache.trust(REFRESHED_COPY, path)  # written only here, through run_statements
        return path

    def describe(self, relation: exp.Expression) -> dict[str, str]:
        """DuckDB's DESCRIBE, on a cursor of its own: it binds the query without running it, and
        stays out of the result cache and the prepared-statement counts."""
        sql = exp.Describe(this=rows_of(relation)).sql(dialect="duckdb")
        cursor = self._connection.cursor()
        try:
            rows = cursor.execute(sql).fetchall()
        except self._duckdb.Error as e:
            raise EngineError(f"DuckDB: {e}") from None
        finally:
            _close_quietly(cursor)
        return {str(row[0]): type_kind(column_type(row[1])) for row in rows}

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for pooled in idle:
            _close_quietly(pooled.cursor)
        self._connection.close()


_PYARROW: list[bool] = []


def _have_pyarrow() -> bool:
    """pyarrow is optional (the `features` extra): without it every result streams as rows."""
    if not _PYARROW:
        try:
            import pyarrow  # noqa: F401
            import pyarrow.compute  # noqa: F401
        except ImportError:
            _PYARROW.append(False)
        else:
            _PYARROW.append(True)
    return _PYARROW[0]


def _suppress():
    import contextlib

    return contextlib.suppress(Exception)


def _abandon(cursor, cancel: Cancel | None) -> None:
    """A statement that failed to start: unbind its cancel, close its cursor."""
    if cancel is not None:
        cancel.bind(None)
    _close_quietly(cursor)


def _close_quietly(cursor) -> None:
    try:
        cursor.close()
    except Exception:
        pass
