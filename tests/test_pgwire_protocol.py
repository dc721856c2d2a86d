"""Protocol-level tests of the PostgreSQL wire server, driven by real clients.

The backend here is a TEST FIXTURE: it runs the SQL on an in-memory DuckDB, maps DuckDB types
to PostgreSQL OIDs, and understands two fixture-only statements:
  * `ECHO $1, $2, ...` returns its parameters as one row, typed as the parameters are (to test
    value codecs exactly, independent of DuckDB's type system);
  * SQL containing `python-error` raises a plain Python exception, `/*error-at:N*/` raises a
    BackendError with position N, `bad-value` returns a value that int4 cannot hold, and
    `SET application_name = '...'` reports a notice and a parameter change.
The semantic backend of metrics-layer is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

try:
    import metrics_layer  # noqa: F401
except ImportError:  # running without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import duckdb
import pg8000.native
import psycopg
import scramp
from psycopg import errors as pgerrors

from metrics_layer.serve.pgwire import (
    OID,
    BackendError,
    BackgroundServer,
    ColumnDesc,
    Described,
    Notice,
    Outcome,
    scram_verifier,
)

# ---------------------------------------------------------------------------------------
# Test fixture backend: DuckDB

_PG_TYPE_NAMES = {
    "bool": OID.BOOL, "boolean": OID.BOOL, "int2": OID.INT2, "smallint": OID.INT2, "int": OID.INT4,
    "int4": OID.INT4, "integer": OID.INT4, "int8": OID.INT8, "bigint": OID.INT8, "float4": OID.FLOAT4,
    "real": OID.FLOAT4, "float8": OID.FLOAT8, "double": OID.FLOAT8, "numeric": OID.NUMERIC,
    "decimal": OID.NUMERIC, "text": OID.TEXT, "varchar": OID.VARCHAR, "name": OID.NAME, "date": OID.DATE,
    "time": OID.TIME, "timestamp": OID.TIMESTAMP, "timestamptz": OID.TIMESTAMPTZ,
    "interval": OID.INTERVAL, "bytea": OID.BYTEA, "uuid": OID.UUID,
}
_DUCK_TYPES = {
    "BOOLEAN": OID.BOOL, "TINYINT": OID.INT2, "SMALLINT": OID.INT2, "INTEGER": OID.INT4,
    "BIGINT": OID.INT8, "UTINYINT": OID.INT2, "USMALLINT": OID.INT4, "UINTEGER": OID.INT8,
    "HUGEINT": OID.NUMERIC, "UBIGINT": OID.NUMERIC, "FLOAT": OID.FLOAT4, "DOUBLE": OID.FLOAT8,
    "VARCHAR": OID.TEXT, "BLOB": OID.BYTEA, "DATE": OID.DATE, "TIME": OID.TIME,
    "TIMESTAMP": OID.TIMESTAMP, "TIMESTAMP WITH TIME ZONE": OID.TIMESTAMPTZ,
    "INTERVAL": OID.INTERVAL, "UUID": OID.UUID,
}
_DUCK_ERRORS = [
    (duckdb.InterruptException, "57014"), (duckdb.CatalogException, "42P01"),
    (duckdb.ParserException, "42601"), (duckdb.BinderException, "42703"),
    (duckdb.ConversionException, "22P02"),
]


def _duck_oid(duck_type) -> int:
    name = str(duck_type)
    return OID.NUMERIC if name.startswith("DECIMAL") else _DUCK_TYPES.get(name, OID.TEXT)


def _pg_error(e: Exception) -> BackendError:
    for cls, code in _DUCK_ERRORS:
        if isinstance(e, cls):
            return BackendError(str(e).splitlines()[0], code)
    return BackendError(str(e), "XX000")


def _param_oids(sql: str, given: list[int]) -> list[int]:
    """Parameter types: the client's, else from `$n::type` casts in the SQL, else text."""
    n = max([int(m) for m in re.findall(r"\$(\d+)", sql)] + [len(given)])
    oids = [given[i] if i < len(given) else 0 for i in range(n)]
    for num, name in re.findall(r"\$(\d+)\s*::\s*(\w+)", sql):
        if not oids[int(num) - 1]:
            oids[int(num) - 1] = _PG_TYPE_NAMES.get(name.lower(), OID.TEXT)
    return [oid or OID.TEXT for oid in oids]


class DuckDBSession:
    def __init__(self, db: duckdb.DuckDBPyConnection):
        self.con = db.cursor()  # for probes; each execution gets its own cursor so that open
        self.active = None  # cursors/portals survive other statements on the connection
        self.executing = threading.Event()

    def describe(self, sql: str, param_oids: list[int]) -> Described:
        oids = _param_oids(sql, param_oids)
        if sql.upper().startswith("ECHO"):
            return Described(oids, [ColumnDesc(f"p{i + 1}", oid) for i, oid in enumerate(oids)])
        if "bad-value" in sql:
            return Described(oids, [ColumnDesc("n", OID.INT4)])
        if not re.match(r"(select|with|values|from|table|\()", sql, re.I):
            return Described(oids, None)
        try:
            rel = self.con.execute(f"DESCRIBE {sql}", [None] * len(oids)).fetchall()
        except duckdb.Error as e:
            raise _pg_error(e) from None
        return Described(oids, [ColumnDesc(row[0], _duck_oid(row[1])) for row in rel])

    def execute(self, sql: str, params: list, param_oids: list[int], result_formats: list[int]) -> Outcome:
        if sql.upper().startswith("ECHO"):
            oids = _param_oids(sql, param_oids)
            return Outcome([ColumnDesc(f"p{i + 1}", oid) for i, oid in enumerate(oids)], [tuple(params)])
        if m := re.match(r"SET application_name = '(.*)'$", sql, re.I):
            return Outcome(None, [], "SET", notices=[Notice("application name changed")],
                           parameter_status={"application_name": m[1]})
        if "bad-value" in sql:  # a value that cannot be sent as the declared type
            return Outcome([ColumnDesc("n", OID.INT4)], [(1,), ("many",)])
        if "python-error" in sql:
            raise RuntimeError("fixture exploded")
        if m := re.search(r"/\*error-at:(\d+)\*/", sql):
            raise BackendError("forced error", "42000", position=int(m[1]))
        cur = self.con.cursor()
        self.active = cur
        self.executing.set()
        try:
            cur.execute(sql, params or None)
        except duckdb.Error as e:
            self.active = None
            cur.close()
            raise _pg_error(e) from None
        if cur.description is None:
            self.active = None
            cur.close()
            return Outcome(None, [], sql.split()[0].upper())
        columns = [ColumnDesc(d[0], _duck_oid(d[1])) for d in cur.description]
        return Outcome(columns, self._stream(cur))

    def _stream(self, cur):
        try:
            while batch := cur.fetchmany(8192):
                yield from batch
        except duckdb.Error as e:
            raise _pg_error(e) from None
        finally:
            if self.active is cur:
                self.active = None
            cur.close()

    def cancel(self) -> None:
        # An interrupt that lands just before DuckDB starts the query is lost: repeat it
        # until the execution is gone (bounded).
        cur, deadline = self.active, time.monotonic() + 60
        while cur is not None and self.active is cur and time.monotonic() < deadline:
            cur.interrupt()
            time.sleep(0.02)

    def close(self) -> None:
        self.con.close()


class DuckDBBackend:
    def __init__(self):
        self.db = duckdb.connect()
        self.db.execute("SET GLOBAL TimeZone = 'UTC'")
        self.db.execute("CREATE TABLE items AS SELECT i AS id, 'item ' || i AS name, i * 1.5 AS price FROM range(1, 11) t(i)")
        self.sessions: dict[str, DuckDBSession] = {}  # by application_name, for tests to reach in

    def open_session(self, user: str, database: str, startup_params: dict[str, str]) -> DuckDBSession:
        if database == "nosuchdb":
            raise BackendError(f'database "{database}" does not exist', "3D000")
        session = DuckDBSession(self.db)
        self.sessions[startup_params.get("application_name", "")] = session
        return session


# ---------------------------------------------------------------------------------------
# Servers and clients

USERS = {"alice": "alice-pw", "bob": scram_verifier("bob-pw"), "carol": "md5" + hashlib.md5(b"carol-pwcarol").hexdigest()}


@pytest.fixture(scope="module")
def backend():
    return DuckDBBackend()


def _server(backend, method):
    return BackgroundServer(backend, host="127.0.0.1", port=0, users=USERS, auth_method=method).start()


@pytest.fixture(scope="module")
def scram_server(backend):
    srv = _server(backend, "scram-sha-256")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def md5_server(backend):
    srv = _server(backend, "md5")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def password_server(backend):
    srv = _server(backend, "password")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def trust_server(backend):
    srv = BackgroundServer(backend, host="127.0.0.1", port=0, auth_method="trust").start()
    yield srv
    srv.stop()


def connect(srv, user="alice", password="alice-pw", **kw) -> psycopg.Connection:
    kw.setdefault("autocommit", True)
    return psycopg.connect(host="127.0.0.1", port=srv.port, user=user, password=password, dbname="test",
                           connect_timeout=60, **kw)


@pytest.fixture
def conn(scram_server):
    with connect(scram_server) as c:
        yield c


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def aconnect(srv, user="alice", password="alice-pw", **kw):
    return await asyncpg.connect(host="127.0.0.1", port=srv.port, user=user, password=password,
                                 database="test", ssl=False, **kw)


class RawClient:
    """A minimal protocol client, to check exact message sequences."""

    def __init__(self, port: int, user: str = "alice", password: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""
        params = f"user\0{user}\0database\0test\0application_name\0raw\0\0".encode()
        body = struct.pack("!i", 196608) + params
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        self.auth_codes = []
        self.startup_messages = self.read_until_ready(password=password, user=user)

    def send(self, kind: bytes, body: bytes = b"") -> None:
        self.sock.sendall(kind + struct.pack("!i", len(body) + 4) + body)

    def _recv(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read(self) -> tuple[bytes, bytes]:
        kind = self._recv(1)
        length = struct.unpack("!i", self._recv(4))[0]
        return kind, self._recv(length - 4)

    def read_until_ready(self, password=None, user=None) -> list[tuple[bytes, bytes]]:
        out = []
        scram = None
        while True:
            kind, body = self.read()
            out.append((kind, body))
            if kind == b"R":
                code = struct.unpack("!i", body[:4])[0]
                self.auth_codes.append(code)
                if code == 3:
                    self.send(b"p", password.encode() + b"\0")
                elif code == 5:
                    inner = hashlib.md5((password + user).encode()).hexdigest()
                    self.send(b"p", b"md5" + hashlib.md5(inner.encode() + body[4:8]).hexdigest().encode() + b"\0")
                elif code == 10:
                    scram = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
                    first = scram.get_client_first().encode()
                    self.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
                elif code == 11:
                    scram.set_server_first(body[4:].decode())
                    self.send(b"p", scram.get_client_final().encode())
                elif code == 12:
                    scram.set_server_final(body[4:].decode())
            if kind in (b"Z",) or (kind == b"E" and self.is_fatal(body)):
                return out

    @staticmethod
    def fields(body: bytes) -> dict[str, str]:
        return {part[:1].decode(): part[1:].decode() for part in body.split(b"\0") if part}

    def is_fatal(self, body: bytes) -> bool:
        return self.fields(body).get("S") == "FATAL"

    def parse(self, sql: str, name: str = "", oids=()):
        self.send(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!h", len(oids))
                  + b"".join(struct.pack("!I", o) for o in oids))

    def bind(self, portal: str = "", stmt: str = "", params=(), result_formats=()):
        body = portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!h", 0) + struct.pack("!h", len(params))
        for p in params:
            body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
        body += struct.pack("!h", len(result_formats)) + b"".join(struct.pack("!h", f) for f in result_formats)
        self.send(b"B", body)

    def describe(self, kind: str, name: str = ""):
        self.send(b"D", kind.encode() + name.encode() + b"\0")

    def execute(self, portal: str = "", max_rows: int = 0):
        self.send(b"E", portal.encode() + b"\0" + struct.pack("!i", max_rows))

    def sync(self):
        self.send(b"S")

    def query(self, sql: str):
        self.send(b"Q", sql.encode() + b"\0")

    def kinds(self) -> tuple[str, list[tuple[bytes, bytes]]]:
        msgs = self.read_until_ready()
        return "".join(k.decode() for k, _ in msgs), msgs

    def close(self):
        try:
            self.send(b"X")
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def raw(trust_server):
    client = RawClient(trust_server.port)
    yield client
    client.close()


# ---------------------------------------------------------------------------------------
# psycopg


def test_psycopg_simple_query(conn):
    assert conn.info.server_version == 150000
    assert conn.info.parameter_status("server_encoding") == "UTF8"
    assert conn.info.parameter_status("DateStyle") == "ISO, MDY"
    cur = conn.execute("SELECT id, name, price FROM items WHERE id <= 3 ORDER BY id")
    assert cur.fetchall() == [(1, "item 1", Decimal("1.5")), (2, "item 2", Decimal("3.0")), (3, "item 3", Decimal("4.5"))]
    assert [c.name for c in cur.description] == ["id", "name", "price"]
    assert cur.statusmessage == "SELECT 3"


def test_psycopg_multiple_statements(conn):
    cur = conn.cursor()
    cur.execute("SELECT 1 AS a; SELECT 'two' AS b; -- trailing comment")
    assert cur.fetchall() == [(1,)]
    assert cur.nextset()
    assert cur.fetchall() == [("two",)]
    assert not cur.nextset()


def test_psycopg_params_client_and_server_side(conn):
    with psycopg.ClientCursor(conn) as cur:
        cur.execute("SELECT %s::int8 + 1, %s::text, %s", [41, "it's", None])
        assert cur.fetchone() == (42, "it's", None)
    cur = conn.execute("SELECT %s::int8 * 2 AS x, %s || '!' AS y", [21, "hi"], prepare=True)
    assert cur.fetchone() == (42, "hi!")


def test_psycopg_auto_prepare(conn, scram_server, backend):
    for i in range(6):  # psycopg prepares server-side from the 5th execution
        assert conn.execute("SELECT %s::int4 * 10 AS x", [i]).fetchone() == (i * 10,)
    names = [n for c in scram_server.server._connections.values() for n in c.statements if n]
    assert any(n.startswith("_pg3_") for n in names), names


def test_psycopg_binary_results(conn):
    cur = conn.cursor(binary=True)
    cur.execute("SELECT 1::SMALLINT, 2::INTEGER, 3::BIGINT, 1.5::FLOAT, 2.25::DOUBLE, 12.345::DECIMAL(10,3), "
                "true, 'héllo', '\\x00\\x01'::BLOB, DATE '2024-02-29', TIMESTAMP '2024-01-02 03:04:05.123456', "
                "TIMESTAMPTZ '2024-01-02 03:04:05+02', INTERVAL '1 day 2 hours', TIME '01:02:03', NULL::INTEGER")
    assert cur.fetchone() == (
        1, 2, 3, 1.5, 2.25, Decimal("12.345"), True, "héllo", b"\x00\x01", dt.date(2024, 2, 29),
        dt.datetime(2024, 1, 2, 3, 4, 5, 123456), dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=dt.timezone.utc),
        dt.timedelta(days=1, hours=2), dt.time(1, 2, 3), None)
    assert cur.pgresult.fformat(0) == 1


def test_psycopg_pipeline(conn):
    with conn.pipeline() as pipe:
        curs = [conn.execute("SELECT %s::int8 * 3", [i]) for i in range(5)]
        pipe.sync()
        assert [c.fetchone()[0] for c in curs] == [0, 3, 6, 9, 12]
    with pytest.raises(pgerrors.UndefinedTable):
        with conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("SELECT * FROM nowhere")
            conn.execute("SELECT 2")  # skipped by the server until Sync
    assert conn.execute("SELECT 4").fetchone() == (4,)


def test_concurrent_connections(scram_server):
    async def one(i):
        c = await aconnect(scram_server)
        try:
            return await c.fetchval("SELECT sum(i) FROM range($1::int8) t(i)", 10_000 * (i + 1))
        finally:
            await c.close()

    async def main():
        return await asyncio.gather(*(one(i) for i in range(20)))

    assert run(main()) == [sum(range(10_000 * (i + 1))) for i in range(20)]


def test_psycopg_server_side_cursor(scram_server):
    with connect(scram_server, autocommit=False) as c:
        with c.cursor(name="big") as cur:
            cur.itersize = 100
            cur.execute("SELECT i, 'row ' || i AS label FROM range(1000) t(i) WHERE i >= %s", [10])
            assert [d.name for d in cur.description] == ["i", "label"]
            rows = list(cur)
        assert len(rows) == 990 and rows[0] == (10, "row 10") and rows[-1] == (999, "row 999")
        with c.cursor(name="bin", binary=True) as cur:
            cur.execute("SELECT i FROM range(250) t(i)")
            assert cur.fetchmany(3) == [(0,), (1,), (2,)]
            cur.scroll(7)  # MOVE
            assert cur.fetchone() == (10,)
            assert len(cur.fetchall()) == 239
        c.commit()
    with connect(scram_server) as c:  # autocommit: needs WITH HOLD
        with c.cursor(name="held", withhold=True) as cur:
            cur.itersize = 7
            cur.execute("SELECT i FROM range(20) t(i)")
            assert [r[0] for r in cur] == list(range(20))


def test_psycopg_error_in_transaction(scram_server):
    with connect(scram_server, autocommit=False) as c:
        c.execute("SELECT 1")
        with pytest.raises(pgerrors.UndefinedTable):
            c.execute("SELECT * FROM no_such_table")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(pgerrors.InFailedSqlTransaction):
            c.execute("SELECT 1")
        c.rollback()
        assert c.execute("SELECT 2").fetchone() == (2,)
        c.commit()
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_psycopg_cancel(scram_server, backend):
    with connect(scram_server, application_name="cancel-me") as c:
        session = backend.sessions["cancel-me"]  # opened during connect
        errors = []

        def cancel_when_running():
            if not session.executing.wait(120):  # set by the fixture just before DuckDB starts the query
                errors.append("the query never started")
            try:
                c.cancel_safe()
            except Exception as e:  # pragma: no cover - reported by the assertion below
                errors.append(e)

        t = threading.Thread(target=cancel_when_running)
        t.start()
        with pytest.raises(pgerrors.QueryCanceled) as info:  # 10^11 rows: only a cancel ends it in time
            c.execute("SELECT count(*) FROM range(1000000000) a, range(100) b")
        t.join(120)
        assert not t.is_alive() and not errors
        assert info.value.sqlstate == "57014"
        assert "canceling statement due to user request" in str(info.value)
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_backend_exception_is_xx000_and_connection_survives(conn):
    with pytest.raises(pgerrors.InternalError_) as info:
        conn.execute("SELECT 'python-error'")
    assert info.value.sqlstate == "XX000" and "RuntimeError" in str(info.value)
    assert conn.execute("SELECT 3").fetchone() == (3,)


def test_unencodable_value_is_an_error_not_a_dropped_connection(conn):
    cur = conn.execute("SELECT 'bad-value'")  # text format: a str is sent as the value's text
    assert cur.pgresult.get_value(1, 0) == b"many"
    with pytest.raises(pgerrors.InternalError_, match="cannot send str value 'many' as integer"):
        conn.cursor(binary=True).execute("SELECT 'bad-value'")
    assert conn.execute("SELECT 5").fetchone() == (5,)


def test_error_position_is_shifted_to_the_whole_query(conn):
    with pytest.raises(psycopg.Error) as info:
        conn.execute("SELECT 1; SELECT /*error-at:8*/ 2")
    assert info.value.sqlstate == "42000"
    assert info.value.diag.statement_position == str(10 + 8)


def test_transaction_commands_and_savepoints(conn):
    assert conn.execute("BEGIN").statusmessage == "BEGIN"
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert conn.execute("SAVEPOINT a").statusmessage == "SAVEPOINT"
    with pytest.raises(pgerrors.UndefinedTable):
        conn.execute("SELECT * FROM nope")
    with pytest.raises(pgerrors.InFailedSqlTransaction):
        conn.execute("SELECT 1")
    assert conn.execute("ROLLBACK TO SAVEPOINT a").statusmessage == "ROLLBACK"
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert conn.execute("RELEASE a").statusmessage == "RELEASE"
    with pytest.raises(pgerrors.InvalidSavepointSpecification):
        conn.execute("RELEASE a")
    assert conn.execute("COMMIT").statusmessage == "ROLLBACK"  # the block had failed
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    notices = []
    conn.add_notice_handler(lambda d: notices.append((d.severity, d.sqlstate)))
    assert conn.execute("COMMIT").statusmessage == "COMMIT"
    assert notices == [("WARNING", "25P01")]
    assert conn.execute("START TRANSACTION READ ONLY").statusmessage == "START TRANSACTION"
    assert conn.execute("END").statusmessage == "COMMIT"
    with pytest.raises(pgerrors.NoActiveSqlTransaction):
        conn.execute("SAVEPOINT x")


def test_outcome_notices_and_parameter_status(conn):
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    assert conn.info.parameter_status("application_name") == ""
    conn.execute("SET application_name = 'reports'")
    assert conn.info.parameter_status("application_name") == "reports"
    assert notices == ["application name changed"]


def _make_cert(tmp_path) -> tuple[str, str]:
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_tls(backend, tmp_path):
    cert, key = _make_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with BackgroundServer(backend, port=0, users=USERS, ssl_context=context) as srv:
        with connect(srv, sslmode="require") as c:
            assert c.pgconn.ssl_in_use
            assert c.execute("SELECT 'secure'").fetchone() == ("secure",)
        with connect(srv, sslmode="disable") as c:  # TLS stays optional unless configured otherwise
            assert not c.pgconn.ssl_in_use

        async def main():
            client_ctx = ssl.create_default_context(cafile=cert)
            client_ctx.check_hostname = False
            c = await asyncpg.connect(host="127.0.0.1", port=srv.port, user="alice", password="alice-pw",
                                      database="test", ssl=client_ctx)
            try:
                assert await c.fetchval("SELECT $1::int4 + 1", 1) == 2
            finally:
                await c.close()

        run(main())


def test_open_session_error_is_fatal(scram_server):
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(host="127.0.0.1", port=scram_server.port, user="alice", password="alice-pw", dbname="nosuchdb")


# ---------------------------------------------------------------------------------------
# asyncpg (binary protocol, Describe of statements, Execute with row limits)


def test_asyncpg_params_binary_prepared_and_cursor(scram_server):
    async def main():
        c = await aconnect(scram_server)
        try:
            assert await c.fetchval("SELECT $1::int8 + $2::int8", 40, 2) == 42
            row = await c.fetchrow(
                "SELECT 1.5::DOUBLE AS d, 12.50::DECIMAL(6,2) AS n, DATE '2024-01-02' AS day, 'x' AS s, "
                "TIMESTAMP '2024-01-02 03:04:05' AS ts, true AS b, INTERVAL '36 hours' AS iv")
            assert dict(row) == {"d": 1.5, "n": Decimal("12.50"), "day": dt.date(2024, 1, 2), "s": "x",
                                 "ts": dt.datetime(2024, 1, 2, 3, 4, 5), "b": True, "iv": dt.timedelta(hours=36)}
            stmt = await c.prepare("SELECT i, i * $1::int4 AS twice FROM range(5) t(i)")
            assert [t.name for t in stmt.get_parameters()] == ["int4"]
            assert [a.name for a in stmt.get_attributes()] == ["i", "twice"]
            assert [tuple(r) for r in await stmt.fetch(2)] == [(i, 2 * i) for i in range(5)]
            assert await stmt.fetchval(3, column=1) == 0
            async with c.transaction():
                got = [r[0] async for r in c.cursor("SELECT i FROM range(1000) t(i)", prefetch=64)]
                assert got == list(range(1000))
                cur = await c.cursor("SELECT i FROM range(100) t(i)")
                assert [r[0] for r in await cur.fetch(5)] == [0, 1, 2, 3, 4]
                await cur.forward(10)
                assert (await cur.fetchrow())[0] == 15
        finally:
            await c.close()

    run(main())


# ---------------------------------------------------------------------------------------
# pg8000 and psql


def test_pg8000_native(scram_server):
    con = pg8000.native.Connection("alice", host="127.0.0.1", port=scram_server.port, database="test", password="alice-pw")
    try:
        assert con.run("SELECT :x::int8 + 1 AS y", x=41) == [[42]]
        rows = con.run("SELECT name, price, id > :n AS big FROM items WHERE id IN (2, 9) ORDER BY id", n=5)
        assert rows == [["item 2", Decimal("3.0"), False], ["item 9", Decimal("13.5"), True]]
        assert [c["name"] for c in con.columns] == ["name", "price", "big"]
        assert con.run("SELECT DATE '2024-03-01', TIMESTAMPTZ '2024-03-01 10:00:00+00', 2.5::DOUBLE, NULL") == [
            [dt.date(2024, 3, 1), dt.datetime(2024, 3, 1, 10, tzinfo=dt.timezone.utc), 2.5, None]]
    finally:
        con.close()


def _psql(srv, sql, user="alice", password="alice-pw"):
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10")
    return subprocess.run(["psql", "-X", "-w", "-At", "-h", "127.0.0.1", "-p", str(srv.port), "-U", user, "-d", "test",
                           "-c", sql], env=env, capture_output=True, text=True, timeout=30)


def test_psql_simple_and_two_statements(scram_server):
    result = _psql(scram_server, "SELECT 42")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"
    result = _psql(scram_server, "SELECT 'a' AS x; SELECT name FROM items WHERE id = 3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["a", "item", "3"]
    result = _psql(scram_server, "SELECT 1", password="wrong")
    assert result.returncode != 0 and "password authentication failed" in result.stderr


# ---------------------------------------------------------------------------------------
# Authentication


def test_scram_correct_and_stored_verifier(scram_server):
    with connect(scram_server) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    with connect(scram_server, user="bob", password="bob-pw") as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    client = RawClient(scram_server.port, user="alice", password="alice-pw")
    assert client.auth_codes == [10, 11, 12, 0]
    client.close()


@pytest.mark.parametrize("user,password", [("alice", "nope"), ("nobody", "whatever")])
def test_scram_wrong_password_or_unknown_user(scram_server, user, password):
    async def main():
        with pytest.raises(asyncpg.InvalidPasswordError) as info:
            await aconnect(scram_server, user=user, password=password)
        assert info.value.sqlstate == "28P01"

    run(main())
    client = RawClient(scram_server.port, user=user, password=password)
    kind, body = client.startup_messages[-1]
    assert kind == b"E" and client.fields(body)["C"] == "28P01"
    assert all(k != b"Z" for k, _ in client.startup_messages)
    with pytest.raises((EOFError, ConnectionError)):
        client.read()  # the server closed the connection
    client.close()


def test_md5_and_cleartext(md5_server, password_server):
    with connect(md5_server) as c:  # plain password in the table
        assert c.execute("SELECT 1").fetchone() == (1,)
    with connect(md5_server, user="carol", password="carol-pw") as c:  # md5 hash in the table
        assert c.execute("SELECT 1").fetchone() == (1,)
    client = RawClient(md5_server.port, user="alice", password="alice-pw")
    assert client.auth_codes == [5, 0]
    client.close()
    client = RawClient(md5_server.port, user="bob", password="bob-pw")  # SCRAM verifier: SCRAM used
    assert client.auth_codes == [10, 11, 12, 0]
    client.close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(md5_server, password="bad")
    for user, password in [("alice", "alice-pw"), ("bob", "bob-pw"), ("carol", "carol-pw")]:
        with connect(password_server, user=user, password=password) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(password_server, user="bob", password="bad")


# ---------------------------------------------------------------------------------------
# Exact message flows (raw client, trust server)


def test_extended_query_message_order(raw):
    raw.parse("SELECT i FROM range(3) t(i)")
    raw.bind()
    raw.describe("P")
    raw.execute()
    raw.sync()
    kinds, msgs = raw.kinds()
    assert kinds == "12TDDDCZ"
    assert msgs[-2][1] == b"SELECT 3\0" and msgs[-1][1] == b"I"


def test_execute_row_limit_suspends_portal(raw):
    raw.query("BEGIN")
    raw.kinds()
    raw.parse("SELECT i FROM range(5) t(i)", name="s1")
    raw.describe("S", "s1")
    raw.bind("p1", "s1")
    raw.execute("p1", 2)
    raw.sync()
    assert raw.kinds()[0] == "1tT2DDsZ"
    raw.execute("p1", 2)
    raw.execute("p1", 2)
    raw.execute("p1", 2)
    raw.sync()
    kinds, msgs = raw.kinds()
    assert kinds == "DDsDCCZ"
    assert [b for k, b in msgs if k == b"C"] == [b"SELECT 1\0", b"SELECT 0\0"]
    assert msgs[-1][1] == b"T"
    raw.query("COMMIT")
    raw.kinds()


def test_error_discards_until_sync(raw):
    raw.parse("SELECT * FROM missing_table")
    raw.bind()
    raw.execute()
    raw.sync()
    kinds, msgs = raw.kinds()
    assert kinds == "EZ"
    assert raw.fields(msgs[0][1])["C"] == "42P01"
    raw.parse("SELECT 1", name="dup")
    raw.parse("SELECT 2", name="dup")
    raw.bind(stmt="dup")
    raw.execute()
    raw.sync()
    kinds, msgs = raw.kinds()
    assert kinds == "1EZ" and raw.fields(msgs[1][1])["C"] == "42P05"


def test_empty_queries_and_multi_statement_parse(raw):
    raw.query("")
    assert raw.kinds()[0] == "IZ"
    raw.query("  -- only a comment\n ; ")
    assert raw.kinds()[0] == "IZ"
    raw.parse("")
    raw.bind()
    raw.describe("P")
    raw.execute()
    raw.sync()
    assert raw.kinds()[0] == "12nIZ"
    raw.parse("SELECT 1; SELECT 2")
    raw.sync()
    kinds, msgs = raw.kinds()
    assert kinds == "EZ" and raw.fields(msgs[0][1])["C"] == "42601"


def test_simple_query_error_stops_remaining_statements(raw):
    raw.query("SELECT 1; SELECT * FROM missing; SELECT 3")
    kinds, msgs = raw.kinds()
    assert kinds == "TDCEZ"


def test_begin_twice_warns_and_ready_for_query_status(raw):
    raw.query("BEGIN; BEGIN")
    kinds, msgs = raw.kinds()
    assert kinds == "CNCZ" and raw.fields(msgs[1][1])["C"] == "25001" and msgs[-1][1] == b"T"
    raw.query("SELECT * FROM missing")
    assert raw.kinds()[1][-1][1] == b"E"
    raw.query("ROLLBACK")
    assert raw.kinds()[1][-1][1] == b"I"


def test_sql_level_cursors(raw):
    raw.query("BEGIN; DECLARE c CURSOR FOR SELECT i FROM range(10) t(i); FETCH 3 FROM c; MOVE 2 IN c; FETCH ALL c")
    kinds, msgs = raw.kinds()
    assert kinds == "CCTDDDCCTDDDDDCZ"
    assert [b for k, b in msgs if k == b"C"] == [b"BEGIN\0", b"DECLARE CURSOR\0", b"FETCH 3\0", b"MOVE 2\0", b"FETCH 5\0"]
    raw.query("FETCH NEXT FROM c; CLOSE c; FETCH c")
    kinds, msgs = raw.kinds()
    assert kinds == "TCCEZ" and raw.fields(msgs[-2][1])["C"] == "34000"
    raw.query("ROLLBACK")
    raw.kinds()
    raw.query("DECLARE d CURSOR FOR SELECT 1")  # outside a transaction block: refused, as in PostgreSQL
    kinds, msgs = raw.kinds()
    assert kinds == "EZ" and raw.fields(msgs[0][1])["C"] == "25P01"
    raw.query("DECLARE d CURSOR FOR SELECT 1; FETCH d")  # a multi-statement query is an implicit block
    assert raw.kinds()[0] == "CTDCZ"


def _data_row(body: bytes) -> list[bytes | None]:
    values, pos = [], 2
    for _ in range(struct.unpack("!h", body[:2])[0]):
        n = struct.unpack("!i", body[pos:pos + 4])[0]
        values.append(None if n < 0 else body[pos + 4:pos + 4 + n])
        pos += 4 + max(n, 0)
    return values


def _format_codes(row_description: bytes) -> list[int]:
    codes, pos = [], 2
    for _ in range(struct.unpack("!h", row_description[:2])[0]):
        pos = row_description.index(b"\0", pos) + 1 + 18
        codes.append(struct.unpack("!h", row_description[pos - 2:pos])[0])
    return codes


def test_per_column_result_formats_and_binary_cursor(raw):
    raw.parse("SELECT 7::INTEGER AS a, 8::INTEGER AS b, NULL::INTEGER AS c")
    raw.bind(result_formats=(1, 0, 1))
    raw.describe("P")
    raw.execute()
    raw.sync()
    kinds, msgs = raw.kinds()
    assert kinds == "12TDCZ"
    assert _format_codes(msgs[2][1]) == [1, 0, 1]
    assert _data_row(msgs[3][1]) == [b"\0\0\0\x07", b"8", None]
    raw.query("BEGIN; DECLARE b BINARY CURSOR FOR SELECT 5::INTEGER AS v; FETCH b")
    kinds, msgs = raw.kinds()
    assert kinds == "CCTDCZ"
    assert _format_codes(msgs[2][1]) == [1] and _data_row(msgs[3][1]) == [b"\0\0\0\x05"]
    raw.query("ROLLBACK")
    raw.kinds()


def test_close_and_flush(raw):
    raw.parse("SELECT 1", name="s")
    raw.send(b"H")  # Flush: ParseComplete arrives without a Sync
    assert raw.read()[0] == b"1"
    raw.send(b"C", b"Ss\0")
    raw.send(b"C", b"Pnever-opened\0")  # closing what does not exist is not an error
    raw.bind(stmt="s")
    raw.sync()
    kinds, msgs = raw.kinds()
    assert kinds == "33EZ" and raw.fields(msgs[2][1])["C"] == "26000"


def test_protocol_violation_closes_connection(raw):
    raw.send(b"?", b"junk")
    kind, body = raw.read()
    assert kind == b"E" and raw.fields(body)["C"] == "08P01" and raw.fields(body)["S"] == "FATAL"
    with pytest.raises((EOFError, ConnectionError)):
        raw.read()


def test_unknown_role_with_trust_and_user_table(backend):
    with BackgroundServer(backend, port=0, auth_method="trust", users={"alice": "x"}) as srv:
        client = RawClient(srv.port, user="mallory")
        assert client.fields(client.startup_messages[-1][1])["C"] == "28000"
        client.close()
        client = RawClient(srv.port, user="alice")
        assert client.startup_messages[-1] == (b"Z", b"I")
        client.close()


# ---------------------------------------------------------------------------------------
# Value round trips through the ECHO fixture statement (params in, same types out)

ROUND_TRIP = [
    ("bool", True), ("bool", False), ("int2", -32768), ("int4", 2147483647), ("int8", -9223372036854775808),
    ("float4", 1.5), ("float8", 0.1), ("float8", -1e300), ("float8", float("inf")),
    ("numeric", Decimal("12345678901234567890.000123")), ("numeric", Decimal("-0.5")), ("numeric", Decimal("0")),
    ("numeric", Decimal("1E+3")), ("text", "héllo wörld ✓"), ("varchar", "x"), ("text", ""), ("date", dt.date(1999, 12, 31)),
    ("date", dt.date(2024, 2, 29)), ("timestamp", dt.datetime(2024, 1, 2, 3, 4, 5, 6)),
    ("timestamp", dt.datetime(1970, 1, 1)), ("timestamptz", dt.datetime(2024, 6, 1, 12, 30, tzinfo=dt.timezone.utc)),
    ("interval", dt.timedelta(days=3, hours=4, seconds=5.5)), ("interval", dt.timedelta(hours=-30)),
    ("bytea", b"\x00\xffbinary\n"), ("time", dt.time(23, 59, 59, 999999)),
]


def _same(a, b):
    return a == b or (isinstance(a, float) and a != a and b != b)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_round_trip_psycopg(conn, binary):
    for type_name, value in ROUND_TRIP:
        cur = conn.cursor(binary=binary)
        # %b sends the parameter in binary, %t in text
        cur.execute(f"ECHO %{'b' if binary else 't'}::{type_name}", [value])
        got = cur.fetchone()[0]
        if type_name == "float4":
            got = round(got, 6)
        assert _same(got, value), (type_name, value, got)


def test_round_trip_asyncpg(scram_server):
    async def main():
        c = await aconnect(scram_server)
        try:
            for type_name, value in ROUND_TRIP:
                got = await c.fetchval(f"ECHO $1::{type_name}", value)
                assert _same(got, value), (type_name, value, got)
            assert await c.fetchval("ECHO $1::uuid", uuid.UUID(int=7)) == uuid.UUID(int=7)
        finally:
            await c.close()

    run(main())


def test_round_trip_pg8000(scram_server):
    con = pg8000.native.Connection("alice", host="127.0.0.1", port=scram_server.port, database="test", password="alice-pw")
    try:
        for type_name, value in ROUND_TRIP:
            if type_name in ("float4", "time", "interval"):
                continue  # pg8000 sends these with types the ECHO cast would not match
            got = con.run(f"ECHO :v::{type_name}", v=value)[0][0]
            assert _same(got, value), (type_name, value, got)
    finally:
        con.close()


def test_text_output_matches_postgresql_formatting():
    from metrics_layer.serve.pgwire.values import RowEncoder

    cases = [
        (OID.FLOAT8, 1.0, b"1"), (OID.FLOAT8, 1e16, b"1e+16"), (OID.FLOAT8, float("nan"), b"NaN"),
        (OID.FLOAT4, 0.1, b"0.1"), (OID.NUMERIC, Decimal("1E+3"), b"1000"), (OID.BOOL, True, b"t"),
        (OID.TIMESTAMP, dt.datetime(2024, 1, 2, 3, 4, 5, 500000), b"2024-01-02 03:04:05.5"),
        (OID.TIMESTAMPTZ, dt.datetime(2024, 1, 2, 5, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))), b"2024-01-02 03:04:05+00"),
        (OID.INTERVAL, dt.timedelta(days=1, hours=2), b"1 day 02:00:00"), (OID.INTERVAL, dt.timedelta(days=-2), b"-2 days"),
        (OID.INTERVAL, dt.timedelta(minutes=-90), b"-01:30:00"), (OID.BYTEA, b"\x01\xab", b"\\x01ab"),
        (OID.INT8, "123", b"123"), (OID.TEXT, 42, b"42"), (OID.INT4, True, b"1"),
    ]
    for oid, value, expected in cases:
        encoded = RowEncoder([oid], [0]).encode([(value,)])
        assert encoded[11:] == expected, (oid, value, encoded)


def test_inlined_text_encoders_match_the_plain_ones():
    """Timestamps and integers have inlined fast paths in the row loop (values.py): every
    DataRow must equal what the plain per-value encoders produce."""
    import random

    from metrics_layer.serve.pgwire.values import RowEncoder

    def timestamp(v):
        if isinstance(v, dt.datetime) and v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        text = v.isoformat(" ")
        return (text.rstrip("0") if v.microsecond else text).encode()

    class Sub(dt.datetime):
        pass

    rnd = random.Random(5)
    stamps = [dt.datetime.min, dt.datetime.max, dt.datetime(999, 12, 31, 23, 59, 59), Sub(2026, 1, 2, 3, 4, 5),
              dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5)))]
    for _ in range(5000):
        v = dt.datetime(1, 1, 1) + dt.timedelta(seconds=rnd.randrange(315537897599))
        stamps.append(v if rnd.random() < 0.8 else v.replace(microsecond=rnd.randrange(1, 10**6)))
    rows = [(rnd.randrange(-2**63, 2**63) if rnd.random() < 0.9 else None, s if rnd.random() < 0.9 else None,
             "é" * rnd.choice([0, 3, 5000])) for s in stamps]

    def field(data):
        return b"\xff\xff\xff\xff" if data is None else struct.pack("!i", len(data)) + data

    expected = b""
    for i, s, t in rows:
        body = field(None if i is None else b"%d" % i) + field(None if s is None else timestamp(s)) + field(t.encode())
        expected += b"D" + struct.pack("!ih", 4 + 2 + len(body), 3) + body
    assert RowEncoder([OID.INT8, OID.TIMESTAMP, OID.TEXT], [0, 0, 0]).encode(rows) == expected
    # values of other types still take the converting path
    assert RowEncoder([OID.TIMESTAMP], [0]).encode([(dt.date(2024, 1, 2),)])[11:] == b"2024-01-02 00:00:00"
    assert RowEncoder([OID.INT4], [0]).encode([("7",)])[11:] == b"7"


def test_worker_pool_runs_calls_and_outlives_a_cancelled_caller():
    from metrics_layer.serve.pgwire.workers import WorkerPool

    async def scenario():
        loop = asyncio.get_running_loop()
        pool = WorkerPool(2, "test-pool")
        assert await pool.call(loop, lambda a, b: a + b, 2, 3).future == 5
        with pytest.raises(ZeroDivisionError):
            await pool.call(loop, lambda: 1 / 0).future
        release = threading.Event()
        job = pool.call(loop, release.wait, 10)

        async def caller():
            return await job.future

        task = asyncio.ensure_future(caller())
        await asyncio.sleep(0.05)
        task.cancel()  # as at server shutdown: the thread keeps running
        with pytest.raises(asyncio.CancelledError):
            await task
        waiter = pool.detach(job)
        assert waiter is not None and not waiter.done()
        release.set()
        await asyncio.wait_for(waiter, 60)  # done once the call has returned
        assert pool.detach(job) is None
        pool.shutdown()
        with pytest.raises(RuntimeError):
            pool.call(loop, print)

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------
# Streaming and shutdown


def test_streaming_large_result(conn):
    cur = conn.execute("SELECT i, i * 2, 'row ' || i FROM range(200000) t(i)")
    n = total = 0
    for i, double, label in cur:
        n += 1
        total += i
    assert n == 200000 and total == sum(range(200000)) and label == "row 199999"


def test_clean_shutdown_with_idle_and_busy_connections(backend):
    srv = BackgroundServer(backend, port=0, auth_method="trust").start()
    idle = psycopg.connect(host="127.0.0.1", port=srv.port, user="u", dbname="test", autocommit=True)
    busy = psycopg.connect(host="127.0.0.1", port=srv.port, user="u", dbname="test", autocommit=True,
                           application_name="busy-at-shutdown")
    failure = []

    def long_query():
        try:
            busy.execute("SELECT count(*) FROM range(1000000000) a, range(100) b")
        except psycopg.Error as e:
            failure.append(e)

    t = threading.Thread(target=long_query)
    t.start()
    assert backend.sessions["busy-at-shutdown"].executing.wait(120)
    # stop() must not wait for the query (10^11 rows): it returns, and the query ends in an error.
    stopper = threading.Thread(target=srv.stop)
    stopper.start()
    stopper.join(120)
    assert not stopper.is_alive(), "stop() waited for the running query"
    t.join(120)
    assert failure and not t.is_alive()
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")
    idle.close()
    busy.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()


# Edge values of every type the columnar path encodes, as DuckDB columns (name, DuckDB SQL type,
# PostgreSQL OID, values as SQL literals; NULLs included).
_EDGE_COLUMNS = [
    ("i2", "SMALLINT", OID.INT2, ["-32768", "32767", "0", "-1", "NULL"]),
    ("i4", "INTEGER", OID.INT4, ["-2147483648", "2147483647", "0", "7", "NULL"]),
    ("i8", "BIGINT", OID.INT8, ["-9223372036854775808", "9223372036854775807", "0", "NULL", "42"]),
    ("f8", "DOUBLE", OID.FLOAT8, ["'NaN'", "'Infinity'", "'-Infinity'", "-0.0", "0.0", "1e-05", "9.99e-05",
                                  "0.0001", "0.1", "1.0", "-2.5", "1e13", "99999999999999.9", "1e15", "1e16",
                                  "123456789012345.0", "1.7976931348623157e308", "5e-324", "1e22", "NULL",
                                  "0.30000000000000004", "1234.5678"]),
    ("f4", "FLOAT", OID.FLOAT4, ["'NaN'", "'Infinity'", "-0.0", "0.1", "3.4028235e38", "1e-45", "NULL", "2.5"]),
    ("num", "DECIMAL(18,3)", OID.NUMERIC, ["0.000", "-0.500", "1.5", "999999999999999.999", "-123", "NULL"]),
    ("hnum", "HUGEINT", OID.NUMERIC, ["170141183460469231731687303715884105727", "-5", "0", "NULL"]),
    ("b", "BOOLEAN", OID.BOOL, ["true", "false", "NULL"]),
    ("t", "VARCHAR", OID.TEXT, ["''", "'é ✓ 😀'", "'x'", "NULL", "repeat('ab', 3000)", "'a''b\\'"]),
    ("d", "DATE", OID.DATE, ["'0001-01-01'", "'0999-12-31'", "'2024-02-29'", "'9999-12-31'", "NULL"]),
    ("ts", "TIMESTAMP", OID.TIMESTAMP, ["'0001-01-01 00:00:00'", "'2026-03-01 12:34:56'", "'1999-12-31 23:59:59'",
                                        "'9999-12-31 23:59:59'", "NULL"]),
    ("tsf", "TIMESTAMP", OID.TIMESTAMP, ["'2026-03-01 12:34:56.5'", "'1970-01-01 00:00:00.000001'",
                                         "'2000-01-01 00:00:00'", "NULL", "'9999-12-31 23:59:59.999999'"]),
    ("tz", "TIMESTAMPTZ", OID.TIMESTAMPTZ, ["'2026-03-01 12:34:56+00'", "'2026-03-01 12:34:56+05'",
                                            "'1900-01-01 00:00:00+00'", "NULL"]),
    ("tzf", "TIMESTAMPTZ", OID.TIMESTAMPTZ, ["'2026-03-01 12:34:56.25+00'", "NULL", "'2000-01-01 00:00:00+00'"]),
]


def _edge_table(con):
    """A DuckDB table with one column per entry of _EDGE_COLUMNS (rows padded with NULLs)."""
    n = max(len(values) for *_, values in _EDGE_COLUMNS)
    rows = []
    for r in range(n):
        rows.append("(" + ", ".join(
            f"CAST({values[r] if r < len(values) else 'NULL'} AS {sql_type})" for _, sql_type, _, values in _EDGE_COLUMNS) + ")")
    names = ", ".join(name for name, *_ in _EDGE_COLUMNS)
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE OR REPLACE TABLE edge AS SELECT * FROM (VALUES {', '.join(rows)}) v({names})")


def test_columnar_encoders_match_the_row_encoders(monkeypatch):
    """The Arrow path (ColumnarEncoder) sends exactly the bytes of the row path (RowEncoder over
    the rows a DuckDB cursor gives) for every column type, in text and binary, NULLs included."""
    from metrics_layer.serve.pgwire import values
    from metrics_layer.serve.pgwire.values import columnar_encoder, row_encoder

    monkeypatch.setattr(values, "_COLUMNAR_MIN_ROWS", 0)  # columnar even for these few rows

    con = duckdb.connect()
    _edge_table(con)
    for name, _, oid, _ in _EDGE_COLUMNS:
        for fmt in (0, 1):
            rows = con.execute(f"SELECT {name}, t, {name} FROM edge").fetchall()
            batch = con.sql(f"SELECT {name}, t, {name} FROM edge").to_arrow_table().combine_chunks().to_batches()[0]
            oids, formats = (oid, OID.TEXT, oid), (fmt, fmt, fmt)
            columnar = columnar_encoder(oids, formats)
            assert columnar.accepts(batch.schema), (name, fmt)
            expected = row_encoder(oids, formats).encode(rows)
            assert columnar.encode(batch) == expected, (name, fmt)
    # every column at once, and a batch of many rows with nulls here and there
    con.execute("CREATE TABLE big AS SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE i * 1.5 END AS f, "
                "CASE WHEN i % 5 = 0 THEN NULL ELSE 'row ' || i END AS s, "
                "TIMESTAMP '2020-01-01' + INTERVAL (i) SECOND AS ts, DATE '2020-01-01' + (i % 1000)::INT AS d "
                "FROM range(20000) t(i)")
    oids = (OID.INT8, OID.FLOAT8, OID.TEXT, OID.TIMESTAMP, OID.DATE)
    rows = con.execute("SELECT * FROM big").fetchall()
    for fmt in (0, 1):
        table = con.sql("SELECT * FROM big").to_arrow_table()
        data = b"".join(columnar_encoder(oids, (fmt,) * 5).encode(b) for b in table.to_batches())
        assert data == row_encoder(oids, (fmt,) * 5).encode(rows)


class _EdgeBackend:
    """Serves `SELECT * FROM edge` (the edge table, 10 copies) from DuckDB as Arrow batches
    (`arrow`, encoded column-wise by the server) or as rows (the row encoders)."""

    def __init__(self, path: str, arrow: bool):
        self.path, self.arrow = path, arrow

    def open_session(self, user, database, params):
        from metrics_layer.serve.pgwire import ColumnDesc, Described, Outcome
        from metrics_layer.serve.pgwire.values import ArrowRows

        backend = self
        sql = "SELECT e.* FROM edge e, range(10) r(k) ORDER BY k"
        columns = [ColumnDesc(name, oid) for name, _, oid, _ in _EDGE_COLUMNS]

        class Session:
            def __init__(self):
                self.con = duckdb.connect(backend.path, read_only=True)
                self.con.execute("SET TimeZone = 'UTC'")
                self.con.execute("SET threads = 1")

            def describe(self, sql_, param_oids):
                return Described([], columns)

            def execute(self, sql_, params, param_oids, result_formats):
                cur = self.con.cursor()
                if backend.arrow:
                    reader = cur.sql(sql).to_arrow_reader(100)  # several batches, one cut by a portal
                    return Outcome(columns, ArrowRows(reader.schema, iter(reader)))
                return Outcome(columns, cur.execute(sql).fetchall())

            def cancel(self):
                self.con.interrupt()

            def close(self):
                self.con.close()

        return Session()


def test_columnar_results_round_trip_through_psycopg_and_asyncpg(tmp_path):
    """The same result through the Arrow path and the row path reads back identically with
    psycopg (text and binary, a portal of 70 rows at a time) and asyncpg (binary)."""
    from metrics_layer.serve.pgwire import BackgroundServer

    path = str(tmp_path / "edge.duckdb")
    con = duckdb.connect(path)
    _edge_table(con)
    con.close()
    servers = [BackgroundServer(_EdgeBackend(path, arrow), port=0, auth_method="trust").start() for arrow in (True, False)]
    try:
        results = []
        for srv in servers:
            got = {}
            dsn = f"host=127.0.0.1 port={srv.port} user=u dbname=d"
            for binary in (False, True):
                with psycopg.connect(dsn, autocommit=True) as conn:
                    got[binary] = repr(conn.cursor(binary=binary).execute("SELECT * FROM edge").fetchall())
                with psycopg.connect(dsn) as conn, conn.cursor("c", binary=binary) as cur:
                    cur.itersize = 70
                    cur.execute("SELECT * FROM edge")
                    got[binary, "cursor"] = repr(list(cur))

            async def fetch():
                conn = await asyncpg.connect(host="127.0.0.1", port=srv.port, user="u", database="d")
                try:
                    return repr([tuple(r) for r in await conn.fetch("SELECT * FROM edge")])
                finally:
                    await conn.close()

            got["asyncpg"] = asyncio.run(fetch())
            results.append(got)
        arrow, rows = results
        assert arrow == rows
        assert arrow[False].count("'é ✓ 😀'") == 10 and "datetime.datetime(2026, 3, 1, 12, 34, 56, 500000)" in arrow[True]
    finally:
        for srv in servers:
            srv.stop()
