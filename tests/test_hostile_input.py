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
    ("SELECT " + "(" * 46 + "1" + ")" * 46, "54001", "nested too deeply"),
    ("SELECT lead_count FROM conversion_monitoring WHERE " + "(" * 300 + "true" + ")" * 300, "54001", "nested too deeply"),
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
