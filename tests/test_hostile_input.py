"""Bad input is a client error, never an internal one, and the connection stays usable:
a real server on a loopback port (REST, GraphQL) and the SQL endpoint in a process of its own,
driven by httpx and psycopg."""

from __future__ import annotations

import json

import pytest

from http_server import project_over, serve_project

httpx = pytest.importorskip("httpx")
psycopg = pytest.importorskip("psycopg")

LEADS = {"metrics": ["leads.lead_count"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_duckdb_path):
    live = serve_project(project_over(tmp_path_factory.mktemp("hostile"), f"duckdb:///{demo_duckdb_path}"))
    yield live
    live.stop()


def _post(server, path: str, body) -> httpx.Response:
    # json.dumps keeps a lone surrogate as the escape \ud800, as a client's JSON may
    return httpx.post(f"{server.url}{path}", content=json.dumps(body), headers={"content-type": "application/json"}, timeout=60)


@pytest.mark.parametrize("body, code, words", [
    ({**LEADS, "as_of": "0001-01-01T00:00:00+14:00"}, "22008", "as_of"),
    ({**LEADS, "as_of": "9999-12-31T23:59:59-14:00"}, "22008", "as_of"),
    ({**LEADS, "filters": [{"field": "leads.utm_source", "op": "=", "value": "\ud800"}]}, "22021", "leads.utm_source"),
    ({**LEADS, "filters": [{"field": "leads.utm_source", "op": "in", "value": ["ok", "a\udfffb"]}]}, "22021", "U+DFFF"),
    ({**LEADS, "filters": [{"field": "leads.utm_source", "op": "=", "value": "a\x00b"}]}, "22021", "NUL"),
    ({**LEADS, "filters": [{"field": "leads.utm_source", "op": "contains", "value": "\x00"}]}, "22021", "leads.utm_source"),
])
def test_rest_bad_values_are_400_naming_the_field(server, body, code, words):
    response = _post(server, "/api/v1/query", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"], error
    assert _post(server, "/api/v1/query", LEADS).status_code == 200


def test_graphql_bad_values_are_errors_naming_the_field(server):
    query = "query($v: String) { conversion_monitoring(where: {utm_source: {equals: $v}}) { lead_count } }"
    for value, words in (("\ud800", "U+D800"), ("x\x00", "NUL")):
        response = _post(server, "/graphql", {"query": query, "variables": {"v": value}})
        assert response.status_code == 200, response.text
        errors = response.json()["errors"]
        assert words in errors[0]["message"] and "utm_source" in errors[0]["message"], errors
    response = _post(server, "/graphql", {"query": '{ conversion_monitoring(asOf: "0001-01-01T00:00:00+14:00") { lead_count } }'})
    assert response.status_code in (200, 400) and "XX000" not in response.text and "internal" not in response.text, response.text
    assert response.json()["errors"]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory, demo_duckdb_path):
    from test_sql_endpoint import Endpoint

    folder = project_over(tmp_path_factory.mktemp("hostile_sql"), f"duckdb:///{demo_duckdb_path}", "sql:\n  auth: trust\n")
    ep = Endpoint(folder).start()
    yield ep
    ep.stop()


@pytest.mark.parametrize("sql, sqlstate, words", [
    ("/* x", "42601", "unterminated /* comment"),
    ("SELECT 1 /* a /* nested */", "42601", "unterminated /* comment"),
    ("SELECT 'abc", "42601", "unterminated quoted string"),
    ('SELECT "abc', "42601", "unterminated quoted identifier"),
    ("SELECT lead_count FROM conversion_monitoring WHERE utm_source = $$a", "42601", "dollar-quoted"),
    ("SELECT " + "(" * 3000 + "1" + ")" * 3000, "54001", "nested too deeply"),
    ("SELECT lead_count FROM conversion_monitoring WHERE " + "(" * 3000 + "true" + ")" * 3000, "54001", "nested too deeply"),
    ("SET metrics.window = '" + "x" * 5000 + "'", "22023", "too long"),
])
def test_sql_bad_statements_are_clear_errors_and_the_connection_continues(endpoint, sql, sqlstate, words):
    with psycopg.connect(f"host=127.0.0.1 port={endpoint.port} user=u dbname=metrics", autocommit=True, connect_timeout=30) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute(sql)
        assert e.value.sqlstate == sqlstate and words in str(e.value), str(e.value)
        assert conn.execute("SELECT 1").fetchall() == [(1,)]
        # the extended protocol (Parse) reports the same
        with pytest.raises(psycopg.Error) as e:
            conn.execute(sql, prepare=True)
        assert e.value.sqlstate == sqlstate
        assert conn.execute("SELECT 2").fetchall() == [(2,)]


def test_sql_nul_and_surrogate_values_are_client_errors(endpoint):
    with psycopg.connect(f"host=127.0.0.1 port={endpoint.port} user=u dbname=metrics", autocommit=True, connect_timeout=30) as conn:
        # psycopg refuses to send a NUL or a surrogate itself; escapes in the SQL carry them
        for literal in ("E'a\\000b'", "E'\\x00'", "U&'\\D800'", "E'\\uDFFF'"):
            with pytest.raises(psycopg.Error) as e:
                conn.execute(f"SELECT lead_count FROM conversion_monitoring WHERE utm_source = {literal}")
            assert e.value.sqlstate and not e.value.sqlstate.startswith("XX"), (literal, str(e.value))
            assert "internal" not in str(e.value)
            assert conn.execute("SELECT 1").fetchall() == [(1,)]
        for value in (b"a\x00b", "a\x00b".encode("utf-16"), b"\xed\xa0\x80"):  # raw bytes in a parameter
            for fmt in ("%b", "%t"):
                try:
                    conn.execute(f"SELECT lead_count FROM conversion_monitoring WHERE utm_source = {fmt}", [value]).fetchall()
                except psycopg.Error as e:
                    assert e.sqlstate and not e.sqlstate.startswith("XX"), (value, str(e))
                assert conn.execute("SELECT 1").fetchall() == [(1,)]


def test_long_application_name_is_truncated_like_postgresql(endpoint):
    """A 30 kB SET application_name used to break the client (ParameterStatus over libpq's cap)."""
    with psycopg.connect(f"host=127.0.0.1 port={endpoint.port} user=u dbname=metrics", autocommit=True, connect_timeout=30,
                         application_name="b" * 200) as conn:
        assert conn.info.parameter_status("application_name") == "b" * 63
        conn.execute("SET application_name = '" + "a" * 30_000 + "'")
        assert conn.execute("SHOW application_name").fetchall() == [("a" * 63,)]
        assert conn.info.parameter_status("application_name") == "a" * 63
        conn.execute("SET application_name = 'é" + "é" * 100 + "'")  # cut at a character boundary, 63 bytes at most
        shown = conn.execute("SHOW application_name").fetchall()[0][0]
        assert set(shown) == {"é"} and len(shown.encode()) <= 63


# ---- memory bounds: message and statement caps --------------------------------------

@pytest.fixture(scope="module")
def capped_endpoint(tmp_path_factory, demo_duckdb_path):
    from test_sql_endpoint import Endpoint

    extra = ("sql:\n  auth: scram-sha-256\n  max_message_bytes: 200000\n  max_statement_length: 50000\n"
             "users:\n  analyst: {password: pw-1}\n")
    folder = project_over(tmp_path_factory.mktemp("capped_sql"), f"duckdb:///{demo_duckdb_path}", extra)
    ep = Endpoint(folder).start()
    yield ep
    ep.stop()


def _startup(port: int, user: str = "analyst"):
    import socket
    import struct

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    params = f"user\0{user}\0database\0metrics\0\0".encode()
    sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    return sock


def _read_until_error(sock) -> bytes:
    """Messages until the server's ErrorResponse (or its close); returns all bytes read."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
        if b"E" in data and b"08P01" in data or b"28P01" in data:
            return data


def test_a_huge_message_before_authentication_is_refused_unread(capped_endpoint):
    """A 200 MB 'password' message: refused from its header (FATAL 08P01), never buffered."""
    import struct

    sock = _startup(capped_endpoint.port)
    try:
        first = sock.recv(65536)
        assert first[:1] == b"R"  # AuthenticationSASL
        sock.sendall(b"p" + struct.pack("!i", 200_000_000) + b"x" * 1000)
        reply = _read_until_error(sock)
        assert b"08P01" in reply and b"invalid message length" in reply, reply
        assert sock.recv(65536) == b""  # closed
    finally:
        sock.close()
    # others still log in
    with psycopg.connect(f"host=127.0.0.1 port={capped_endpoint.port} user=analyst password=pw-1 dbname=metrics",
                         connect_timeout=30) as conn:
        assert conn.execute("SELECT 1").fetchall() == [(1,)]


def test_messages_and_statements_over_their_caps(capped_endpoint):
    dsn = f"host=127.0.0.1 port={capped_endpoint.port} user=analyst password=pw-1 dbname=metrics"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=30) as conn:
        # a statement over max_statement_length (50,000): 54000, the connection continues
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT 1 -- " + "x" * 60_000)
        assert e.value.sqlstate == "54000" and "max_statement_length" in str(e.value)
        assert conn.execute("SELECT 1 -- " + "x" * 40_000).fetchall() == [(1,)]
        assert conn.execute("SELECT 2").fetchall() == [(2,)]
    with psycopg.connect(dsn, autocommit=True, connect_timeout=30) as conn:
        # a message over max_message_bytes (200,000): FATAL 08P01 and the connection closes
        with pytest.raises(psycopg.OperationalError) as e:
            conn.execute("SELECT 1 -- " + "x" * 300_000)
        assert "max_message_bytes" in str(e.value) or conn.closed or conn.broken
    with psycopg.connect(dsn, autocommit=True, connect_timeout=30) as conn:
        assert conn.execute("SELECT 3").fetchall() == [(3,)]


@pytest.mark.parametrize("sql", [
    "SELECT sum(hash(i)) FROM range(40000000000) t(i)",  # unbounded work on the shadow catalog
    "SELECT count(*) FROM generate_series(1, 40000000000)",
    "SELECT pg_sleep(600)",
])
def test_catalog_statements_obey_the_time_out_and_cancel(tmp_path, sql, monkeypatch):
    """A statement the shadow catalog runs stops at the project's query time-out and at a
    CancelRequest, like a semantic query; the connection and the catalog serve the next one."""
    import threading

    from conftest import make_project
    from test_sql_endpoint import USERS_YAML, Endpoint

    monkeypatch.setenv("ML_TEST_FRAUD_PW", "fraud-pw")
    for timeout, cancel in ((2, False), (600, True)):
        folder = make_project(tmp_path / f"p{timeout}", '"duckdb:///:memory:"', f"query_timeout: {timeout}\n" + USERS_YAML)
        endpoint = Endpoint(folder).start()
        try:
            with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
                conn.execute("SELECT 1 FROM pg_catalog.pg_namespace LIMIT 1")  # the shadow catalog is built
                if cancel:  # the time-out (10 minutes) is only a guard against a hang
                    timer = threading.Timer(1.0, conn.cancel_safe)
                    timer.start()
                with pytest.raises(psycopg.errors.QueryCanceled) as info:
                    conn.execute(sql)
                if cancel:
                    timer.join()
                words = "user request" if cancel else "statement timeout (2 s)"
                assert words in str(info.value), info.value
                assert conn.execute("SELECT count(*) FROM pg_catalog.pg_namespace").fetchone()[0] > 0
        finally:
            endpoint.stop()
