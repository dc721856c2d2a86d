"""One client connection: the protocol state machine.

A `Connection` owns the protocol state of its client (prepared statements, portals and
cursors, transaction status) and calls the backend `Session` through the server's thread pool,
so the event loop never blocks on a query. Rows are fetched and encoded in the worker thread in
batches (~256 KiB) and written with flow control (the next batch is fetched only once the socket
has drained: a client that does not read holds about one batch here); a cursor or a suspended
portal simply keeps the backend's row iterator. A backend that returns `values.ArrowRows`
(the semantic backend over DuckDB) has its batches encoded column-wise (`ColumnarEncoder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import itertools
import logging
import ssl
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from . import protocol as p
from .auth import authenticate
from .backend import BackendError, ColumnDesc, Outcome, Session
from .sql import Command, CommandSyntaxError, Statement, Unterminated, parse_command, split_statements
from .values import ArrowRows, RowEncoder, decode_param, row_encoder, type_size

if TYPE_CHECKING:
    from .server import PgWireServer

log = logging.getLogger("metrics_layer.serve.pgwire")

BATCH_BYTES = 256 * 1024  # target size of one streamed batch of DataRows
MAX_BATCH_ROWS = 16384
INLINE_ROWS = 256  # materialized results up to this size are encoded on the event loop
STARTUP_TIMEOUT = 60.0  # seconds to finish startup and authentication (authentication_timeout)
_INERT = (inspect.GEN_CLOSED, inspect.GEN_CREATED)  # generator states in which close() runs no code


def _canceled() -> BackendError:
    return BackendError("canceling statement due to user request", "57014")


def _split(sql: str) -> list[Statement]:
    try:
        return split_statements(sql)
    except Unterminated as e:
        raise BackendError(f"syntax error: {e}", "42601", position=e.position) from None


def _tag_with_count(tag: str, count: int) -> str:
    return f"SELECT {count}" if tag == "SELECT" or tag.startswith("SELECT ") else tag


def _fetch_encoded(rows: Iterator, encoder: RowEncoder, want: int) -> tuple[bytes, int]:
    """Worker-thread side of streaming: pull up to `want` rows and encode them.

    Arrow results (values.ArrowRows) are encoded column-wise when every column has a columnar
    encoding (the same bytes), else converted to rows."""
    if isinstance(rows, ArrowRows):
        columnar = encoder.columnar()
        if columnar.accepts(rows.schema):
            pieces = rows.take(want)
            return (b"".join(encoder.encode(p) if isinstance(p, list) else columnar.encode(p) for p in pieces),
                    sum(len(p) if isinstance(p, list) else p.num_rows for p in pieces))
    batch = list(itertools.islice(rows, want))
    return encoder.encode(batch), len(batch)


def _execute_in_worker(
    session: Session, stmt: PreparedStatement, params: list, formats: list[int], encoder: Callable, want: int
) -> tuple:
    """Worker-thread side of starting a statement: execute it and, when it returns rows,
    fetch and encode the first batch in the same trip to the pool (a trip costs 0.1-0.2 ms).

    `formats` are the result format codes asked for (Session.execute). `encoder(columns)`
    gives the RowEncoder for the result, or None to fetch nothing yet. Returns (outcome, rows
    iterator, encoder, (data, n) of the first batch) - the last three None when nothing was
    fetched.
    """
    outcome = session.execute(stmt.sql, params, stmt.param_oids, formats)
    row_encoder = encoder(outcome.columns) if outcome.columns is not None and want else None
    if row_encoder is None:
        return outcome, None, None, None
    rows = iter(outcome.rows)
    try:
        return outcome, rows, row_encoder, _fetch_encoded(rows, row_encoder, want)
    except BaseException:
        close = getattr(outcome.rows, "close", None)
        if close is not None:
            close()
        raise


def _encoder(columns: list[ColumnDesc], formats: list[int]) -> RowEncoder:
    """The RowEncoder for these columns in these formats (one per column)."""
    return row_encoder(tuple(c.type_oid for c in columns), tuple(formats), tuple(c.text_values for c in columns))


def _all_formats(codes: list[int], n: int) -> list[int]:
    """Format codes chosen by the server itself (none = text, or one for all) for n columns."""
    return list(codes) if len(codes) == n else [codes[0] if codes else 0] * n


def _with_text_values(described: list[ColumnDesc], columns: list[ColumnDesc]) -> list[ColumnDesc]:
    """The described columns, marked `text_values` where the executed result's columns are."""
    if not any(c.text_values for c in columns):
        return described
    return [dataclasses.replace(d, text_values=c.text_values) for d, c in zip(described, columns)]


def _skip(rows: Iterator, count: int | None) -> int:
    """Worker-thread side of MOVE: consume up to `count` rows (all when None)."""
    return sum(1 for _ in (rows if count is None else itertools.islice(rows, count)))


@dataclass
class PreparedStatement:
    name: str
    sql: str  # one statement; "" for an empty query
    offset: int  # of `sql` in the client's query string, to shift error positions
    param_oids: list[int]
    columns: list[ColumnDesc] | None
    command: Command | None  # set when the server implements the statement itself


@dataclass
class Portal:
    """A bound statement ready to run, or an open cursor (DECLARE); shares one namespace."""

    name: str
    statement: PreparedStatement
    params: list[Any]
    formats: list[int]  # result format per column
    columns: list[ColumnDesc] | None
    hold: bool = False  # survives transaction end (DECLARE ... WITH HOLD)
    tag: str = "SELECT"
    rows: Iterator | None = None  # the backend's row iterator once running
    source: Any = None  # the Outcome.rows object, closed when the portal goes
    done: bool = False
    encoder: RowEncoder | None = field(default=None, repr=False)


class Connection:
    def __init__(self, server: PgWireServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.pid = 0
        self.secret = b""
        self.user = ""
        self.session: Session | None = None
        self.statements: dict[str, PreparedStatement] = {}
        self.portals: dict[str, Portal] = {}
        self.tx = "I"  # ReadyForQuery status: I idle, T in a transaction block, E failed block
        self.savepoints: list[str] = []
        self.ignore_till_sync = False
        self.implicit_block = False  # running a multi-statement simple Query (one implicit transaction)
        self._out: list[bytes] = []
        self.authenticated = False  # messages before authentication are capped at a few kB
        self._running = False  # a statement is executing: cancel requests apply
        self._cancel_requested = False
        self._inflight: asyncio.Future | None = None
        self.task: asyncio.Task | None = None
        self.closing = False  # cleanup has begun: shutdown must not interrupt it

    # ------------------------------------------------------------------ I/O

    def send(self, message: bytes) -> None:
        self._out.append(message)

    async def flush(self) -> None:
        if self._out:
            self.writer.write(b"".join(self._out))
            self._out.clear()
        await self.writer.drain()

    async def _send_now(self, message: bytes) -> None:
        self.send(message)
        await self.flush()

    async def read_message(self) -> tuple[bytes, bytes]:
        """The next message; one longer than allowed (a few kB before authentication, the
        configured cap after) is refused before its body is read, and the connection closes."""
        header = await self.reader.readexactly(5)
        length = int.from_bytes(header[1:5], "big", signed=True)
        if length < 4:
            raise p.ProtocolViolation("invalid message length")
        limit = self.server.max_message_bytes if self.authenticated else p.MAX_AUTH_MESSAGE_LENGTH
        if length > min(limit, p.MAX_MESSAGE_LENGTH):
            if self.authenticated:
                raise p.ProtocolViolation(
                    f"invalid message length: {length} bytes, more than the limit of {limit} "
                    "(sql: max_message_bytes in metrics_layer.yml)")
            raise p.ProtocolViolation("invalid message length")
        return header[:1], await self.reader.readexactly(length - 4)

    async def _split(self, sql: str) -> list[Statement]:
        """The query string's statements; a long one is cut in a worker (the event loop serves
        everyone), one over the configured length is refused (54000)."""
        limit = self.server.max_statement_length
        if len(sql) > limit:
            raise BackendError(
                f"statement is too long: {len(sql)} characters, more than the limit of {limit} "
                "(sql: max_statement_length in metrics_layer.yml)", "54000")
        if len(sql) > 65_536:
            return await self._backend(_split, sql)
        return _split(sql)

    async def _ready(self) -> None:
        self.send(p.ready_for_query(self.tx))
        await self.flush()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        try:
            if await asyncio.wait_for(self._startup(), STARTUP_TIMEOUT):
                await self._message_loop()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, ssl.SSLError):
            pass  # the client went away (or never finished starting up)
        except asyncio.CancelledError:  # server shutdown
            await self._final_error(BackendError(
                "terminating connection due to administrator command", "57P01", severity="FATAL"))
        except BackendError as e:  # FATAL: protocol violation, failed authentication...
            await self._final_error(e)
        except Exception:
            log.exception("pgwire connection %s failed", self.pid)
            await self._final_error(BackendError("internal server error", "XX000", severity="FATAL"))
        finally:
            self.closing = True
            await self._cleanup()

    async def _final_error(self, e: BackendError) -> None:
        e.severity = "FATAL"
        with contextlib.suppress(Exception):
            self.send(p.error_response(e))
            await asyncio.wait_for(self.flush(), 5)

    async def _cleanup(self) -> None:
        self.server._connections.pop(self.pid, None)
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            # Shutdown interrupted a backend call: stop it and let it finish before closing.
            self._request_backend_cancel()
            await asyncio.wait([inflight], timeout=30)
            if inflight.done() and not inflight.cancelled():
                inflight.exception()  # retrieved: the client was already told why we stop
        with contextlib.suppress(Exception):
            for portal in list(self.portals.values()):
                await self._close_portal(portal)
        if self.session is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(self.server._control_pool, self.session.close)
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 5)

    async def _startup(self) -> bool:
        """Negotiate encryption, read StartupMessage, authenticate, open the session.

        Returns False for connections that only carried a CancelRequest.
        """
        ssl_tried = False
        while True:
            length = struct.unpack("!i", await self.reader.readexactly(4))[0]
            if length < 8 or length > p.MAX_STARTUP_LENGTH:
                raise p.ProtocolViolation("invalid length of startup packet")
            body = await self.reader.readexactly(length - 4)
            code = struct.unpack("!i", body[:4])[0]
            if code == p.SSL_REQUEST and not ssl_tried:
                ssl_tried = True
                if self.server.ssl_context is None:
                    self.writer.write(b"N")
                    continue
                if len(getattr(self.reader, "_buffer", b"")):
                    # Bytes sent before the TLS handshake could be injected (CVE-2021-23214).
                    raise p.ProtocolViolation("received unencrypted data after SSL request")
                self.writer.write(b"S")
                await self.writer.drain()
                await self.writer.start_tls(self.server.ssl_context)
                continue
            if code == p.GSSENC_REQUEST:
                self.writer.write(b"N")
                continue
            if code == p.CANCEL_REQUEST and len(body) >= 12:
                self.server._cancel(struct.unpack("!i", body[4:8])[0], body[8:])
                return False
            if code >> 16 != 3:
                raise BackendError(
                    f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: server supports 3.0 to 3.0",
                    "0A000", severity="FATAL")
            params = p.parse_startup(body[4:])
            unsupported = [k for k in params if k.startswith("_pq_.")]
            if code & 0xFFFF or unsupported:
                self.send(p.negotiate_protocol_version(0, unsupported))
            break

        self.user = params.get("user", "")
        if not self.user:
            raise BackendError("no PostgreSQL user name specified in startup packet", "28000", severity="FATAL")
        database = params.get("database") or self.user
        await authenticate(self.server.auth_method, self.server.users, self.user, self._send_now, self.read_message,
                           self.server.login_throttle, self.writer.get_extra_info("peername"))
        self.authenticated = True
        self.send(p.AUTH_OK)

        try:
            self.session = await self._call(self.server.backend.open_session, self.user, database, dict(params))
        except BackendError as e:
            e.severity = "FATAL"
            raise
        except Exception as e:
            log.exception("open_session failed for user %r", self.user)
            raise BackendError(f"could not open session: {type(e).__name__}", "XX000", severity="FATAL") from None

        status = dict(self.server.parameters)
        status["application_name"] = p.clip_name(params.get("application_name", ""))
        status["session_authorization"] = self.user
        for name, value in status.items():
            self.send(p.parameter_status(name, value))
        self.pid, secret = self.server._register(self)
        self.secret = secret
        self.send(p.message(b"K", struct.pack("!i", self.pid) + secret))
        await self._ready()
        return True

    async def _message_loop(self) -> None:
        handlers: dict[bytes, Callable[[bytes], Any]] = {
            b"Q": self._on_query, b"P": self._on_parse, b"B": self._on_bind, b"D": self._on_describe,
            b"E": self._on_execute, b"C": self._on_close, b"S": self._on_sync, b"H": self._on_flush,
            b"F": self._on_function_call,
        }
        while True:
            kind, body = await self.read_message()
            if kind == b"X":
                return
            if kind in (b"d", b"c", b"f"):
                continue  # CopyData/CopyDone/CopyFail outside COPY are ignored, as PostgreSQL does
            handler = handlers.get(kind)
            if handler is None:
                raise p.ProtocolViolation(f"invalid frontend message type {kind[0]}")
            if self.ignore_till_sync and kind != b"S":
                continue  # after an error in extended query mode, skip to the next Sync
            try:
                await handler(body)
            except BackendError as e:
                if e.severity == "FATAL":
                    raise
                self.send(p.error_response(e))
                self._fail_transaction()
                self.ignore_till_sync = True
                # Sent now, as PostgreSQL does: a client may wait for it before sending Sync
                # (asyncpg's prepare sends Parse, Describe, Flush and waits).
                await self.flush()

    # ------------------------------------------------------------------ backend calls

    async def _call(self, fn: Callable, *args: Any) -> Any:
        """Run a blocking call in the worker pool; the event loop stays free."""
        job = self.server._pool.call(asyncio.get_running_loop(), fn, *args)
        self._inflight = job.future
        try:
            return await job.future
        except asyncio.CancelledError:
            if job.future.cancelled():
                # This task was cancelled (shutdown) but the thread keeps running: _cleanup
                # waits for it to return before closing the session.
                self._inflight = self.server._pool.detach(job)
            raise

    async def _backend(self, fn: Callable, *args: Any, offset: int = 0) -> Any:
        """A backend call; every failure becomes a BackendError (positions shifted by `offset`)."""
        try:
            return await self._call(fn, *args)
        except BackendError as e:
            if self._cancel_requested:
                raise _canceled() from None
            if e.position and offset:
                e.position += offset
            raise
        except RecursionError:
            if self._cancel_requested:
                raise _canceled() from None
            from .mapping import too_deep

            raise BackendError(too_deep().message, "54001") from None
        except Exception as e:
            if self._cancel_requested:
                raise _canceled() from None
            log.exception("backend raised in %s (sent to the client as XX000)", getattr(fn, "__name__", fn))
            raise BackendError(f"internal error: {type(e).__name__}: {str(e)[:200]}", "XX000") from None

    @contextlib.asynccontextmanager
    async def _statement(self):
        """The window in which a CancelRequest interrupts this connection."""
        self._running, self._cancel_requested = True, False
        try:
            yield
        finally:
            self._running = False

    def request_cancel(self) -> None:
        if self._running and self.session is not None:
            self._cancel_requested = True
            self._request_backend_cancel()

    def _request_backend_cancel(self) -> None:
        session = self.session
        if session is None:
            return

        def cancel() -> None:
            try:
                session.cancel()
            except Exception:
                log.exception("session.cancel failed")

        self.server._control_pool.submit(cancel)

    # ------------------------------------------------------------------ simple query

    async def _on_query(self, body: bytes) -> None:
        # A simple Query replaces the unnamed statement and portal.
        self.statements.pop("", None)
        if "" in self.portals:
            await self._close_portal(self.portals[""])
        try:
            r = p.Reader(body)
            sql = r.cstring()
            r.end()
            statements = await self._split(sql)
            if not statements:
                self.send(p.EMPTY_QUERY_RESPONSE)
            self.implicit_block = len(statements) > 1
            for st in statements:
                stmt = PreparedStatement("", st.text, st.offset, [], None, self._command(st))
                await self._execute(Portal("", stmt, [], [], None), None, simple=True)
        except BackendError as e:
            if e.severity == "FATAL":
                raise
            self.send(p.error_response(e))
            self._fail_transaction()
        finally:
            self.implicit_block = False
        if self.tx == "I":
            await self._close_portals()  # the implicit transaction ended
        await self._ready()

    async def _on_function_call(self, body: bytes) -> None:
        self.send(p.error_response(BackendError("function call messages are not supported", "0A000")))
        await self._ready()

    # ------------------------------------------------------------------ extended query

    async def _on_parse(self, body: bytes) -> None:
        name, query, oids = p.parse_parse(body)
        if name and name in self.statements:
            raise BackendError(f'prepared statement "{name}" already exists', "42P05")
        statements = await self._split(query)
        if len(statements) > 1:
            raise BackendError("cannot insert multiple commands into a prepared statement", "42601")
        if not statements:
            stmt = PreparedStatement(name, "", 0, oids, None, None)
        else:
            st = statements[0]
            cmd = self._command(st)
            self._check_not_aborted(cmd)
            param_oids, columns = oids, None
            if cmd is None or cmd.kind == "declare":
                sql, offset = (st.text, st.offset) if cmd is None else (cmd.query, st.offset + cmd.query_offset)
                described = self._cached_describe(sql, oids)
                if described is None:
                    async with self._statement():
                        described = await self._backend(self.session.describe, sql, list(oids), offset=offset)
                param_oids = [c or d for c, d in itertools.zip_longest(oids, described.param_oids, fillvalue=0)]
                columns = described.columns if cmd is None else None
            stmt = PreparedStatement(name, st.text, st.offset, param_oids, columns, cmd)
        self.statements[name] = stmt
        self.send(p.PARSE_COMPLETE)

    async def _on_bind(self, body: bytes) -> None:
        portal_name, stmt_name, param_formats, raw, result_formats = p.parse_bind(body)
        stmt = self.statements.get(stmt_name)
        if stmt is None:
            what = f'prepared statement "{stmt_name}"' if stmt_name else "unnamed prepared statement"
            raise BackendError(f"{what} does not exist", "26000")
        self._check_not_aborted(stmt.command)
        if len(raw) != len(stmt.param_oids):
            raise BackendError(
                f'bind message supplies {len(raw)} parameters, but prepared statement "{stmt_name}" '
                f"requires {len(stmt.param_oids)}", "08P01")
        formats = p.expand_formats(param_formats, len(raw), "bind message has {got} parameter formats but {n} parameters")
        params = [decode_param(oid, fmt, value, i + 1)
                  for i, (oid, fmt, value) in enumerate(zip(stmt.param_oids, formats, raw))]
        columns = self._statement_columns(stmt)
        out_formats = p.expand_formats(
            result_formats, len(columns or ()), "bind message has {got} result formats but query has {n} columns")
        if portal_name in self.portals:
            if portal_name:
                raise BackendError(f'portal "{portal_name}" already exists', "42P03")
            await self._close_portal(self.portals[""])
        self.portals[portal_name] = Portal(portal_name, stmt, params, out_formats, columns)
        self.send(p.BIND_COMPLETE)

    async def _on_describe(self, body: bytes) -> None:
        kind, name = p.parse_target(body)
        if kind == "S":
            stmt = self.statements.get(name)
            if stmt is None:
                raise BackendError(f'prepared statement "{name}" does not exist', "26000")
            self.send(p.parameter_description(stmt.param_oids))
            columns = self._statement_columns(stmt)
            self.send(self._row_description(columns, [0] * len(columns)) if columns is not None else p.NO_DATA)
        else:
            portal = self._portal(name)
            cols = portal.columns
            self.send(self._row_description(cols, portal.formats) if cols is not None else p.NO_DATA)

    async def _on_execute(self, body: bytes) -> None:
        name, max_rows = p.parse_execute(body)
        await self._execute(self._portal(name), max_rows or None, simple=False)

    async def _on_close(self, body: bytes) -> None:
        kind, name = p.parse_target(body)
        if kind == "S":
            self.statements.pop(name, None)
        elif name in self.portals:
            await self._close_portal(self.portals[name])
        self.send(p.CLOSE_COMPLETE)

    async def _on_sync(self, body: bytes) -> None:
        self.ignore_till_sync = False
        if self.tx == "I":
            await self._close_portals()  # the implicit transaction of the pipeline ended
        await self._ready()

    async def _on_flush(self, body: bytes) -> None:
        await self.flush()

    # ------------------------------------------------------------------ execution

    async def _execute(self, portal: Portal, limit: int | None, simple: bool) -> None:
        stmt = portal.statement
        if not stmt.sql:
            self.send(p.EMPTY_QUERY_RESPONSE)
            return
        self._check_not_aborted(stmt.command)
        # The window in which a CancelRequest interrupts this connection (as _statement()).
        self._running, self._cancel_requested = True, False
        try:
            if stmt.command is not None:
                await self._run_command(stmt.command, portal, simple)
            else:
                await self._run_query(portal, limit, simple)
        finally:
            self._running = False

    async def _run_query(self, portal: Portal, limit: int | None, simple: bool) -> None:
        first = None
        if portal.rows is None and not portal.done:
            started, first = await self._start(portal, adopt=simple, describe=simple, first=min(limit or 256, 256))
            if not started:
                self.send(p.command_complete(portal.tag))
                return
        if portal.done:
            self.send(p.command_complete(_tag_with_count(portal.tag, 0)))
            return
        sent, finished = await self._stream(portal, limit, first)
        if finished:
            portal.done = True
            await self._close_rows(portal)
            self.send(p.command_complete(_tag_with_count(portal.tag, sent)))
        else:
            self.send(p.PORTAL_SUSPENDED)

    async def _start(
        self, portal: Portal, adopt: bool, describe: bool = False, first: int = 0
    ) -> tuple[bool, tuple[bytes, int, int] | None]:
        """Execute a portal's statement and keep its rows; (False, None) when it returns none.

        With `adopt` (simple protocol, DECLARE) the result defines the columns, announced by a
        RowDescription if `describe`; otherwise it must match what Parse described. Up to
        `first` rows are fetched and encoded along with the execution: (data, n, wanted).
        """
        stmt = portal.statement
        described = portal.columns

        def encoder(columns: list[ColumnDesc]) -> RowEncoder | None:
            if adopt:
                return _encoder(columns, _all_formats(portal.formats, len(columns)))
            if described is None or len(described) != len(columns):
                return None  # a mismatch, reported below
            return _encoder(_with_text_values(described, columns), portal.formats)

        outcome, rows, portal.encoder, batch = await self._backend(
            _execute_in_worker, self.session, stmt, portal.params, list(portal.formats), encoder, first,
            offset=stmt.offset)
        self._report(outcome)
        portal.tag = outcome.command_tag
        columns = outcome.columns
        if adopt:
            portal.columns = columns
            if columns is not None:
                portal.formats = _all_formats(portal.formats, len(columns))
                if describe:
                    self.send(self._row_description(columns, portal.formats))
        elif (columns is None) != (portal.columns is None):
            await self._close_rows(Portal("", stmt, [], [], None, source=outcome.rows))
            raise BackendError("backend result does not match the described statement (rows vs no rows)", "XX000")
        elif columns is not None and len(columns) != len(portal.columns):
            await self._close_rows(Portal("", stmt, [], [], None, source=outcome.rows))
            raise BackendError(f"backend returned {len(columns)} columns but described {len(portal.columns)}", "XX000")
        if columns is None:
            portal.done = True
            return False, None
        if not adopt:
            portal.columns = _with_text_values(portal.columns, columns)  # for later encoders (FETCH)
        portal.source = outcome.rows
        portal.rows = rows if rows is not None else iter(outcome.rows)
        return True, None if batch is None else (*batch, first)

    def _report(self, outcome: Outcome) -> None:
        """Notices and parameter changes that came with a result."""
        for notice in outcome.notices:
            self.send(p.notice_response(BackendError(
                notice.message, notice.sqlstate, detail=notice.detail, hint=notice.hint, severity=notice.severity)))
        for name, value in outcome.parameter_status.items():
            self.send(p.parameter_status(name, value))

    async def _stream(
        self, portal: Portal, limit: int | None, first: tuple[bytes, int, int] | None = None
    ) -> tuple[int, bool]:
        """Send up to `limit` rows (all when None) of a portal; (rows sent, iterator exhausted)."""
        if portal.encoder is None:
            portal.encoder = _encoder(portal.columns, portal.formats)
        # A small materialized result cannot block: encode it here and save a thread hop.
        source = portal.source
        inline = isinstance(source, (list, tuple)) and len(source) <= INLINE_ROWS
        return await self._stream_rows(portal.rows, portal.encoder, limit, inline, first)

    async def _stream_rows(
        self, rows: Iterator, encoder: RowEncoder, limit: int | None, inline: bool = False,
        first: tuple[bytes, int, int] | None = None,
    ) -> tuple[int, bool]:
        """Send up to `limit` rows (all when None) from `rows`; (rows sent, iterator exhausted).
        `first` is a batch already fetched by `_start`: (data, rows in it, rows asked for).

        Batches are fetched and encoded in a worker thread, then written and drained (flow
        control). Reading ahead while writing was measured slower: the two threads then fight
        over the GIL and the socket writes wait for the encoder.
        """
        sent, batch = 0, 256  # batch: rows, adapted to ~BATCH_BYTES
        while limit is None or sent < limit:
            want = batch if limit is None else min(batch, limit - sent)
            if first is not None:
                (data, n, want), first = first, None
            elif inline:
                data, n = _fetch_encoded(rows, encoder, want)
            else:
                data, n = await self._backend(_fetch_encoded, rows, encoder, want)
            if n < want:  # the last batch goes out with CommandComplete and ReadyForQuery
                self.send(data)
                return sent + n, True
            sent += n
            self.send(data)
            await self.flush()  # write and wait for the socket to drain
            batch = max(16, min(MAX_BATCH_ROWS, BATCH_BYTES * n // max(len(data), 1)))
            if self._cancel_requested:
                raise _canceled()
        return sent, False

    async def _close_rows(self, portal: Portal) -> None:
        source, portal.source, portal.rows = portal.source, None, None
        close = getattr(source, "close", None)
        if close is None:
            return
        if inspect.isgenerator(source) and inspect.getgeneratorstate(source) in _INERT:
            # Exhausted (its `finally` already ran) or never started: closing runs no code,
            # so it needs no trip to the worker pool (most results end this way).
            source.close()
            return
        with contextlib.suppress(Exception):
            await self._call(close)

    async def _close_portal(self, portal: Portal) -> None:
        if self.portals.get(portal.name) is portal:
            del self.portals[portal.name]
        await self._close_rows(portal)

    async def _close_portals(self, keep_holdable: bool = True) -> None:
        for portal in list(self.portals.values()):
            if not (keep_holdable and portal.hold):
                await self._close_portal(portal)

    # ------------------------------------------------------------------ server-side commands

    def _command(self, st: Statement) -> Command | None:
        try:
            return parse_command(st.text)
        except CommandSyntaxError as e:
            raise BackendError(str(e), e.sqlstate, position=e.position + st.offset if e.position else None) from None

    def _check_not_aborted(self, cmd: Command | None) -> None:
        if self.tx == "E" and (cmd is None or cmd.kind not in ("commit", "rollback", "rollback_to")):
            raise BackendError("current transaction is aborted, commands ignored until end of transaction block", "25P02")

    def _fail_transaction(self) -> None:
        if self.tx == "T":
            self.tx = "E"

    def _warn(self, message: str, sqlstate: str) -> None:
        self.send(p.notice_response(BackendError(message, sqlstate, severity="WARNING")))

    async def _run_command(self, cmd: Command, portal: Portal, simple: bool) -> None:
        kind, tag = cmd.kind, cmd.tag
        if kind == "begin":
            if self.tx == "I":
                self.tx, self.savepoints = "T", []
            else:
                self._warn("there is already a transaction in progress", "25001")
        elif kind in ("commit", "rollback"):
            if self.tx == "I":
                if cmd.chain:
                    raise BackendError(f"{kind.upper()} AND CHAIN can only be used in transaction blocks", "25P01")
                self._warn("there is no transaction in progress", "25P01")
            elif self.tx == "E":
                tag = "ROLLBACK"
            self.tx, self.savepoints = ("T" if cmd.chain else "I"), []
            await self._close_portals()
        elif kind in ("savepoint", "release", "rollback_to"):
            if self.tx == "I":
                what = {"savepoint": "SAVEPOINT", "release": "RELEASE SAVEPOINT", "rollback_to": "ROLLBACK TO SAVEPOINT"}
                raise BackendError(f"{what[kind]} can only be used in transaction blocks", "25P01")
            if kind == "savepoint":
                self.savepoints.append(cmd.name)
            else:
                if cmd.name not in self.savepoints:
                    raise BackendError(f'savepoint "{cmd.name}" does not exist', "3B001")
                index = len(self.savepoints) - 1 - self.savepoints[::-1].index(cmd.name)
                # RELEASE drops the savepoint and later ones; ROLLBACK TO keeps it and recovers.
                del self.savepoints[index + (kind == "rollback_to"):]
                if kind == "rollback_to":
                    self.tx = "T"
        elif kind == "declare":
            await self._declare(cmd, portal)
        elif kind in ("fetch", "move"):
            tag = await self._fetch(cmd, portal, simple)
        elif kind == "close":
            if cmd.name is None:
                for other in list(self.portals.values()):
                    if other is not portal:
                        await self._close_portal(other)
            elif cmd.name in self.portals:
                await self._close_portal(self.portals[cmd.name])
            else:
                raise BackendError(f'cursor "{cmd.name}" does not exist', "34000")
        elif kind == "deallocate":
            if cmd.name is None:
                self.statements = {k: v for k, v in self.statements.items() if k == ""}
            elif self.statements.pop(cmd.name, None) is None:
                raise BackendError(f'prepared statement "{cmd.name}" does not exist', "26000")
        elif kind == "discard" and cmd.name == "all":
            if self.tx != "I" or self.implicit_block:
                raise BackendError("DISCARD ALL cannot run inside a transaction block", "25001")
            for other in list(self.portals.values()):
                if other is not portal:
                    await self._close_portal(other)
            self.statements = {k: v for k, v in self.statements.items() if k == ""}
        self.send(p.command_complete(tag))

    async def _declare(self, cmd: Command, portal: Portal) -> None:
        if not cmd.hold and self.tx == "I" and not self.implicit_block:
            raise BackendError("DECLARE CURSOR can only be used in transaction blocks", "25P01")
        if cmd.name in self.portals:
            raise BackendError(f'cursor "{cmd.name}" already exists', "42P03")
        stmt = portal.statement
        query = PreparedStatement(cmd.name, cmd.query, stmt.offset + cmd.query_offset, stmt.param_oids, None, None)
        cursor = Portal(cmd.name, query, portal.params, [int(cmd.binary)], None, hold=cmd.hold)
        started, _ = await self._start(cursor, adopt=True)  # formats become one per column
        if not started:
            raise BackendError("DECLARE CURSOR can only be used with queries that return rows", "42P11")
        self.portals[cmd.name] = cursor

    async def _fetch(self, cmd: Command, portal: Portal, simple: bool) -> str:
        cursor = self.portals.get(cmd.name)
        if cursor is None:
            raise BackendError(f'cursor "{cmd.name}" does not exist', "34000")
        if cursor.rows is None and not cursor.done:
            await self._start(cursor, adopt=False)  # a portal made by Bind, not executed yet
        if cursor.columns is None:
            raise BackendError(f'cursor "{cmd.name}" does not return rows', "24000")
        if cmd.kind == "move":
            moved = 0 if cursor.rows is None else await self._backend(_skip, cursor.rows, cmd.count)
            return f"MOVE {moved}"
        formats = cursor.formats if simple else portal.formats
        if simple:
            self.send(self._row_description(cursor.columns, formats))
        if cursor.rows is None:
            return "FETCH 0"
        sent, _ = await self._stream_rows(cursor.rows, _encoder(cursor.columns, formats), cmd.count)
        return f"FETCH {sent}"

    # ------------------------------------------------------------------ helpers

    def _portal(self, name: str) -> Portal:
        portal = self.portals.get(name)
        if portal is None:
            raise BackendError(f'portal "{name}" does not exist', "34000")
        return portal

    def _cached_describe(self, sql: str, oids: list[int]) -> Any:
        """The backend's remembered description of `sql`, if it offers one (an optional,
        non-blocking Session method): saves a trip to the worker pool per Parse."""
        cached = getattr(self.session, "cached_describe", None)
        if cached is None:
            return None
        try:
            return cached(sql, list(oids))
        except Exception:
            return None  # ask describe(), which reports errors properly

    def _statement_columns(self, stmt: PreparedStatement) -> list[ColumnDesc] | None:
        if stmt.command is not None and stmt.command.kind == "fetch":
            cursor = self.portals.get(stmt.command.name)  # FETCH returns its cursor's columns
            return cursor.columns if cursor is not None else None
        return stmt.columns

    @staticmethod
    def _row_description(columns: list[ColumnDesc], formats: list[int]) -> bytes:
        sizes = [type_size(c.type_oid, c.type_size) for c in columns]
        return p.row_description(columns, formats, sizes)
