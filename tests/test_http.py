"""REST over real HTTP, API keys, /health, timeouts, an engine that is down, and
`metrics-layer serve` as a user starts it."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from decimal import Decimal

import httpx
import pytest

import reference
from http_server import project_over, serve_project, wait_for
from metrics_layer.project import load_project
from metrics_layer.serve.auth import hash_key, load_api_keys
from metrics_layer.json_values import ExactNumber, dumps, dumps_stdlib, json_value

KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_duckdb_path):
    live = serve_project(project_over(tmp_path_factory.mktemp("rest"), f"duckdb:///{demo_duckdb_path}"))
    yield live
    live.stop()


def post(server, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kwargs)


def exact(response: httpx.Response):
    return json.loads(response.content, parse_float=Decimal)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_query_accuracy_by_model_version_per_hour(server):
    body = {"metrics": ["accuracy", "precision"],
            "dimensions": ["predictions.model_version", {"name": "leads.created_at", "grain": "hour"}]}
    response = post(server, "/api/v1/query", body)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["columns"] == [
        {"name": "predictions.model_version", "type": "text"}, {"name": "leads.created_at", "type": "timestamp"},
        {"name": "accuracy", "type": "double"}, {"name": "precision", "type": "double"},
    ]
    assert document["sql"].startswith("SELECT")
    expected = server.service.engine.execute(reference.accuracy_precision_by_model_version_and_hour()).rows
    got = {(r["predictions.model_version"], r["leads.created_at"]): (r["accuracy"], r["precision"]) for r in document["rows"]}
    assert len(got) == len(expected)
    for version, hour, accuracy, precision in expected:
        a, p = got[(version, hour.isoformat())]
        assert (a is None and accuracy is None) or math.isclose(a, accuracy, rel_tol=1e-12)
        assert (p is None and precision is None) or math.isclose(p, precision, rel_tol=1e-12)


def test_query_fraud_loss_keeps_number_types(server):
    response = post(server, "/api/v1/query", {"metrics": ["fraud_loss", "transactions.false_alarms"],
                                               "dimensions": ["merchant_category"], "order_by": ["-fraud_loss"]})
    assert response.status_code == 200, response.text
    rows = exact(response)["rows"]
    expected = {r[0]: r for r in server.service.engine.execute(reference.fraud_by_merchant_category()).rows}
    assert [r["fraud_loss"] for r in rows] == sorted((r["fraud_loss"] for r in rows), reverse=True)
    for row in rows:
        _, fraud_loss, _, false_alarms = expected[row["merchant_category"]]  # names as written
        assert row["fraud_loss"] == Decimal(str(fraud_loss))
        assert row["transactions.false_alarms"] == false_alarms and isinstance(row["transactions.false_alarms"], int)


def test_query_accuracy_3h_as_of(server):
    response = post(server, "/api/v1/query", {"metrics": ["accuracy_3h"], "as_of": "2026-02-25T12:00:00Z"})
    (expected,), = server.service.engine.execute(reference.accuracy_3h_at("2026-02-25 12:00:00")).rows
    assert math.isclose(response.json()["rows"][0]["accuracy_3h"], expected, rel_tol=1e-12)


def test_filters_order_limit_and_shorthands(server):
    body = {"metrics": ["leads.lead_count"], "dimensions": ["leads.created_at:day", "utm_source"],
            "filters": [{"field": "utm_source", "op": "in", "value": ["google", "newsletter"]},
                        {"field": "leads.lead_count", "op": ">", "value": 5}],
            "order_by": [{"field": "leads.lead_count", "descending": True}], "limit": 3, "offset": 1}
    rows = post(server, "/api/v1/query", body).json()["rows"]
    assert len(rows) == 3 and {r["utm_source"] for r in rows} <= {"google", "newsletter"}
    counts = [r["leads.lead_count"] for r in rows]
    assert counts == sorted(counts, reverse=True) and min(counts) > 5


def test_compile_and_catalog(server):
    for dialect in ("duckdb", "postgres", "materialize", "risingwave"):
        response = post(server, "/api/v1/compile", {"metrics": ["accuracy_3h"], "dialect": dialect})
        assert response.status_code == 200 and response.json()["dialect"] == dialect
    assert "mz_now" in post(server, "/api/v1/compile", {"metrics": ["accuracy_3h"], "dialect": "materialize"}).json()["sql"].lower()
    bad = post(server, "/api/v1/compile", {"metrics": ["accuracy"], "dialect": "oracle"})
    assert bad.status_code == 400 and "oracle" in bad.json()["error"]["message"]
    catalog = httpx.get(f"{server.url}/api/v1/catalog").json()
    assert {v["name"] for v in catalog["views"]} == {"conversion_monitoring", "fraud_monitoring", "merchant_features"}
    metric = next(m for m in catalog["metrics"] if m["name"] == "accuracy_3h")
    assert metric["window"] == "3 hours" and metric["label_delay"] == "1 day" and metric["description"]
    assert httpx.get(f"{server.url}/openapi.json").json()["paths"]["/api/v1/query"]["post"]["requestBody"]


@pytest.mark.parametrize("body, status, code, words", [
    ({"metrics": ["acuracy"]}, 400, "42703", "did you mean 'accuracy'?"),
    ({"metrics": ["accuracy"], "dimensions": ["leads.created_at:fortnight"]}, 400, None, "unknown grain 'fortnight'"),
    ({"metrics": ["accuracy"], "limit": "x"}, 400, "22023", "limit"),
    ({"metrics": ["accuracy"], "as_of": "yesterday"}, 400, None, "'yesterday' is not a timestamp"),
    ({"metrics": ["accuracy"], "filters": [{"field": "leads.utm_source", "op": "like", "value": "g%"}]}, 400, None, "unknown filter operator 'like'"),
    ({"metrics": ["accuracy"], "filters": [{"field": "leads.created_at", "op": ">", "value": "soon"}]}, 400, None, "'soon' is not a timestamp"),
    ({"metrics": ["accuracy"], "colour": "blue"}, 400, "22023", "colour"),
    ({}, 400, None, "at least one metric or dimension"),
    ({"metrics": ["accuracy"], "filters": [{"field": "leads.utm_source", "op": "=", "value": {"a": 1}}]}, 400, "22023", "scalar"),
])
def test_bad_queries_are_400_with_a_message(server, body, status, code, words):
    response = post(server, "/api/v1/query", body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"]
    if code:
        assert error["code"] == code
    assert error["code"][:2] in ("22", "42", "0A")  # a SQLSTATE of the class for bad input
    assert post(server, "/api/v1/query", {"metrics": ["leads.lead_count"]}).status_code == 200  # still serving


def test_malformed_json_body(server):
    response = httpx.post(f"{server.url}/api/v1/query", content=b"{oops", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "invalid request" in response.json()["error"]["message"]


def test_health(server):
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["engine"]["reachable"] is True
    assert health["model"]["metrics"] == 61 and health["last_reload_errors"] == []


def test_api_keys(tmp_path, demo_duckdb_path, monkeypatch):
    other = "another-key"
    folder = project_over(tmp_path, f"duckdb:///{demo_duckdb_path}", f'api_keys: ["{hash_key(KEY)}"]\n')
    monkeypatch.setenv("METRICS_LAYER_API_KEYS", f" {other} ,")
    keys = load_api_keys(load_project(folder))
    assert len(keys) == 2
    live = serve_project(folder, keys=keys)
    try:
        body = {"metrics": ["leads.lead_count"]}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer"}):
            response = post(live, "/api/v1/query", body, headers=headers)
            assert response.status_code == 401
            assert response.json() == {"error": {"message": "missing or invalid API key"}}
            assert response.headers["www-authenticate"] == "Bearer"
        for path in ("/api/v1/catalog", "/graphql?query=%7B__typename%7D"):
            assert httpx.get(f"{live.url}{path}").status_code == 401
        assert httpx.post(f"{live.url}/graphql", json={"query": "{ __typename }"}).status_code == 401
        assert httpx.get(f"{live.url}/health").status_code == 200  # probes need no key
        for key in (KEY, other):
            assert post(live, "/api/v1/query", body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        graphql = httpx.post(f"{live.url}/graphql", json={"query": "{ __typename }"}, headers={"Authorization": f"bearer {KEY}"})
        assert graphql.json() == {"data": {"__typename": "Query"}}
        assert httpx.get(f"{live.url}/health").json()["auth"] == "api keys"
    finally:
        live.stop()


def test_api_keys_in_the_project_file_must_be_hashes(tmp_path, demo_duckdb_path):
    from metrics_layer.project import ProjectError

    folder = project_over(tmp_path, f"duckdb:///{demo_duckdb_path}", f'api_keys: ["{KEY}"]\n')
    with pytest.raises(ProjectError, match="sha256:<64 hex digits>"):
        load_api_keys(load_project(folder), environ={})
    assert hash_key("abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()


def test_engine_down_is_503_and_the_server_goes_on(tmp_path):
    live = serve_project(project_over(tmp_path, f"postgresql://nobody@127.0.0.1:{free_port()}/nowhere"))
    try:
        for _ in range(2):
            response = post(live, "/api/v1/query", {"metrics": ["fraud_loss"]})
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert "cannot connect to postgres" in error["message"] and error["code"].startswith("08")
        health = httpx.get(f"{live.url}/health")
        assert health.status_code == 503 and health.json()["engine"]["reachable"] is False
        assert "cannot connect" in health.json()["engine"]["error"]
        assert post(live, "/api/v1/compile", {"metrics": ["fraud_loss"]}).status_code == 200  # no engine needed
    finally:
        live.stop()


def test_query_timeout_is_a_clear_error(tmp_path, demo_duckdb_path):
    live = serve_project(project_over(tmp_path, f"duckdb:///{demo_duckdb_path}", "query_timeout: 0.3\n"))
    try:
        slow = {"metrics": ["accuracy_3h"], "dimensions": ["leads.created_at:minute"], "window": "30 days"}
        response = post(live, "/api/v1/query", slow)  # post()'s own time-out only keeps a failure from hanging
        assert response.status_code == 504 and response.json()["error"]["code"] == "57014"
        assert "timed out after 0.3 s" in response.json()["error"]["message"]
        err = httpx.post(f"{live.url}/graphql", json={
            "query": '{ conversion_monitoring(window: "30 days") { created_at { minute } accuracy_3h } }'}).json()["errors"][0]
        assert err["extensions"]["code"] == "57014" and "timed out" in err["message"]
        assert post(live, "/api/v1/query", {"metrics": ["leads.lead_count"]}).status_code == 200
    finally:
        live.stop()


def test_json_numbers_keep_their_digits():
    big = Decimal("12345678901234567.89")
    for encode in (dumps, dumps_stdlib):
        text = encode({"a": big, "b": Decimal("0.10"), "c": Decimal("100"), "d": [1, 2.5, None], "e": "\x00" + "x"})
        assert json.loads(text, parse_float=Decimal) == {"a": big, "b": Decimal("0.1"), "c": 100, "d": [1, Decimal("2.5"), None], "e": "\x00x"}
        assert b"12345678901234567.89" in text
    assert isinstance(json_value(big), ExactNumber) and json_value(Decimal("3")) == 3


# ---- `metrics-layer serve` as a user runs it --------------------------------------------------

def _serve(*args, env=None, environ=None):
    """`metrics-layer serve` in a process of its own; `env` adds to this process's environment, `environ` replaces it."""
    return subprocess.Popen([sys.executable, "-m", "metrics_layer.cli", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environ or {**os.environ, **(env or {})})


def _wait_until_healthy(process, http_port: int) -> None:
    def healthy():
        try:
            return httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=30).status_code == 200
        except httpx.TransportError:
            return process.poll() is not None  # exited: fail below with its output
    wait_for(healthy, timeout=120, what="the server's /health")  # only so that a broken start cannot hang
    assert process.poll() is None, process.communicate()


def _stop_with_ctrl_c(process) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    return process.communicate(timeout=120)


def test_serve_command_answers_and_stops_on_ctrl_c(tmp_path, demo_duckdb_path):
    # A copy: this test process holds the shared file open, and DuckDB locks a file per process.
    database = tmp_path / "copy.duckdb"
    shutil.copy(demo_duckdb_path, database)
    folder = project_over(tmp_path / "project", f"duckdb:///{database}")
    http_port, sql_port = free_port(), free_port()
    process = _serve("--project", str(folder), "--http-port", str(http_port), "--sql-port", str(sql_port))
    try:
        _wait_until_healthy(process, http_port)
        answer = httpx.post(f"http://127.0.0.1:{http_port}/graphql", json={"query": "{ fraud_monitoring { fraud_loss } }"}, timeout=60)
        assert answer.json()["data"]["fraud_monitoring"][0]["fraud_loss"] > 0
    finally:
        out, err = _stop_with_ctrl_c(process)
    # How fast it starts is measured by bench/bench_http.py, never asserted on a shared machine.
    assert process.returncode == 0, err
    assert f"http://127.0.0.1:{http_port}/graphql" in out and "curl -s" in out and "ready in" in out
    assert "SQL" in out and "loopback only" in out
    assert "stopped" in err


def test_serve_on_the_demo_prints_a_psql_line_that_works(demo_home_today):
    from conftest import demo_env

    http_port, sql_port = free_port(), free_port()
    process = _serve("--http-port", str(http_port), "--sql-port", str(sql_port), environ=demo_env(demo_home_today))
    ran = None
    try:
        _wait_until_healthy(process, http_port)
        # Printed once the server has started, which /health answering shows; ends at EOF if it exits.
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ready in"):
                break
        psql = next((l.strip() for l in lines if "psql" in l), "")
        assert psql.startswith(f"PGPASSWORD=metrics psql -h 127.0.0.1 -p {sql_port} -U metrics -c 'SELECT "), lines
        if shutil.which("psql"):
            ran = subprocess.run(["bash", "-c", psql], capture_output=True, text=True, timeout=120)
    finally:
        _stop_with_ctrl_c(process)
    if ran is not None:  # as a user pastes it
        assert ran.returncode == 0 and re.search(r"\(([1-9]\d*) rows?\)", ran.stdout), (ran.stdout, ran.stderr)


def test_serve_refuses_a_public_address_without_keys(tmp_path, demo_duckdb_path):
    folder = project_over(tmp_path, f"duckdb:///{demo_duckdb_path}")
    process = _serve("--project", str(folder), "--host", "0.0.0.0", "--http-port", str(free_port()),
                     env={"METRICS_LAYER_API_KEYS": ""})
    out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in err and "METRICS_LAYER_API_KEYS" in err


def test_serve_says_when_the_port_is_taken(tmp_path, demo_duckdb_path):
    folder = project_over(tmp_path, f"duckdb:///{demo_duckdb_path}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _serve("--project", str(folder), "--http-port", str(port), "--sql-port", "0")
        out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in err and "--http-port" in err
