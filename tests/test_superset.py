"""A real Apache Superset against the real SQL endpoint (issue 9), driven only through its REST API.

Superset is installed from PyPI into a venv of its own, cached outside the checkout and keyed by
the pinned version (~/.cache/metrics-layer/superset-<version>; the first install takes minutes,
later runs reuse it). It runs on a loopback port with a SQLite metadata database; the SQL endpoint
serves the demo DuckDB data on another. Superset connects with psycopg2 (its PostgreSQL driver),
syncs datasets for the views and answers chart-data and SQL Lab requests; every number it returns
is compared with hand-written SQL run directly on a copy of the same DuckDB file.

Run just this test: `pytest -m superset`. A failed install or start fails the test (never a skip).
The statements Superset sent are written to <tmp>/statements.jsonl (the endpoint's log), and
printed when a test fails.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import reference
from conftest import make_project
from test_sql_endpoint import assert_rows, data_path, truth  # noqa: F401

pytestmark = pytest.mark.superset

SUPERSET_VERSION = "6.1.0"
PSYCOPG2_VERSION = "2.9.13"
# Superset's driver for PostgreSQL, and three fixes to what 6.1.0 declares on PyPI: rich
# (superset/cli/test_db.py imports it, undeclared: `superset` fails without it), cachetools
# (db_engine_specs/aws_iam.py imports it, undeclared: no engine spec loads, every database call is
# a 500) and flask-caching 2.3.1, the release Superset's own requirements pin (2.5 changed
# `_memoize_make_cache_key`, which superset/utils/cache_manager.py overrides: the app does not start).
PACKAGES = [f"apache-superset=={SUPERSET_VERSION}", f"psycopg2-binary=={PSYCOPG2_VERSION}", "rich==15.0.0",
            "cachetools==6.2.1", "flask-caching==2.3.1"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "metrics-layer" / f"superset-{SUPERSET_VERSION}"
INSTALL_TIMEOUT = 900  # against a hang only
PASSWORD = "superset-pw"
ADMIN = ("admin", "admin-pw")

USERS_YAML = f"""
sql:
  auth: scram-sha-256
users:
  superset: {{password: {PASSWORD}}}
"""

# The SQL endpoint in a process of its own, logging every statement it is sent (simple Query
# and Parse both go through connection.split_statements).
SERVER_SCRIPT = """
import json, sys
import metrics_layer.serve.pgwire.connection as connection
from metrics_layer.serve.pgwire.endpoint import serve_until_stdin_closes

log = open(sys.argv[2], "a", buffering=1)
split = connection.split_statements

def logged(sql):
    log.write(json.dumps(sql) + "\\n")
    return split(sql)

connection.split_statements = logged
serve_until_stdin_closes(sys.argv[1])
"""

SUPERSET_CONFIG = """
SECRET_KEY = "metrics-layer-superset-test-0f4a7c2e9b"
SQLALCHEMY_DATABASE_URI = "sqlite:///{db}"
WTF_CSRF_ENABLED = False
TALISMAN_ENABLED = False
AUTH_RATE_LIMITED = False
RATELIMIT_ENABLED = False
CACHE_CONFIG = {{"CACHE_TYPE": "NullCache"}}
DATA_CACHE_CONFIG = {{"CACHE_TYPE": "NullCache"}}
FILTER_STATE_CACHE_CONFIG = {{"CACHE_TYPE": "SimpleCache"}}
EXPLORE_FORM_DATA_CACHE_CONFIG = {{"CACHE_TYPE": "SimpleCache"}}
SQLLAB_ASYNC_TIME_LIMIT_SEC = 300
SUPERSET_WEBSERVER_TIMEOUT = 300
FEATURE_FLAGS = {{}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the Superset install: cached by version, a marker file written last --------------------

def superset_venv() -> Path:
    venv = CACHE / "venv"
    marker = CACHE / "complete"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once: one installs, the other waits
        if marker.exists() and marker.read_text().split(" installed")[0] == " ".join(PACKAGES):
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        result = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", *PACKAGES],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        if result.returncode != 0:
            pytest.fail(f"pip could not install apache-superset=={SUPERSET_VERSION}:\n{result.stderr[-4000:]}")
        seconds = time.monotonic() - started
        marker.write_text(f"{' '.join(PACKAGES)} installed in {seconds:.0f} s\n")  # last: the venv is complete
        return venv


# ---- processes --------------------------------------------------------------------------------

def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def statements_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("superset_log") / "statements.jsonl"


@pytest.fixture(scope="module")
def sql_port(tmp_path_factory, data_path, truth, statements_log):  # noqa: F811 (truth copies the file first)
    folder = make_project(tmp_path_factory.mktemp("superset_project"), f"duckdb:///{data_path}", USERS_YAML)
    process = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(folder), str(statements_log)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               cwd=str(Path(__file__).resolve().parent.parent))
    line = process.stdout.readline()
    if not line.strip().isdigit():
        process.kill()
        pytest.fail(f"the SQL endpoint did not start: {line!r}")
    yield int(line)
    process.stdin.close()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class Superset:
    """A running Superset and a logged-in REST client."""

    def __init__(self, url: str, process: subprocess.Popen, log: Path, statements: Path):
        self.url, self.process, self.log, self.statements = url, process, log, statements
        self.http = httpx.Client(base_url=url, timeout=300)

    def login(self) -> None:
        r = self.http.post("/api/v1/security/login",
                           json={"username": ADMIN[0], "password": ADMIN[1], "provider": "db", "refresh": True})
        assert r.status_code == 200, r.text
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def post(self, path: str, payload: dict, expect: int = 200) -> dict:
        r = self.http.post(path, json=payload)
        assert r.status_code == expect, (f"POST {path}: {r.status_code} {r.text[:3000]}\n"
                                         f"last statements the endpoint was sent:\n{self.sent()}\n"
                                         f"Superset's log:\n{self.tail()}")
        return r.json()

    def sent(self) -> str:
        return self.statements.read_text()[-3000:] if self.statements.exists() else ""

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def superset(tmp_path_factory, statements_log):
    venv = superset_venv()
    home = tmp_path_factory.mktemp("superset_home")
    config = home / "superset_config.py"
    config.write_text(SUPERSET_CONFIG.format(db=home / "superset.db"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERSET_", "FLASK_", "VIRTUAL_ENV"))}
    env.update(SUPERSET_CONFIG_PATH=str(config), SUPERSET_HOME=str(home), PYTHONUNBUFFERED="1",
               PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    cli = str(venv / "bin" / "superset")
    log = home / "superset.log"

    def run(*args: str) -> None:
        result = subprocess.run([cli, *args], env=env, cwd=str(home), capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            pytest.fail(f"superset {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

    run("db", "upgrade")
    run("fab", "create-admin", "--username", ADMIN[0], "--firstname", "Ad", "--lastname", "Min",
        "--email", "admin@example.invalid", "--password", ADMIN[1])
    run("init")
    port = free_port()
    with open(log, "w") as out:
        process = subprocess.Popen([cli, "run", "-h", "127.0.0.1", "-p", str(port), "--with-threads"],
                                   env=env, cwd=str(home), stdout=out, stderr=subprocess.STDOUT)
    client = Superset(f"http://127.0.0.1:{port}", process, log, statements_log)
    try:
        deadline = time.monotonic() + 300  # against a hang only
        while True:
            if process.poll() is not None:
                pytest.fail(f"superset run exited with {process.returncode}:\n{client.tail()}")
            try:
                if client.http.get("/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Superset did not answer /health:\n{client.tail()}")
            time.sleep(0.5)
        client.login()
        yield client
    finally:
        client.http.close()
        stop(process)


@pytest.fixture(scope="module")
def datasets(superset, sql_port, statements_log):
    uri = f"postgresql+psycopg2://superset:{PASSWORD}@127.0.0.1:{sql_port}/metrics"
    superset.post("/api/v1/database/test_connection/", {"database_name": "metrics-layer", "sqlalchemy_uri": uri})
    db = superset.post("/api/v1/database/", {"database_name": "metrics-layer", "sqlalchemy_uri": uri,
                                              "expose_in_sqllab": True, "allow_run_async": False}, expect=201)
    ids = {"database": db["id"]}
    for view in ("conversion_monitoring", "fraud_monitoring"):
        created = superset.post("/api/v1/dataset/", {"database": db["id"], "schema": "public", "table_name": view},
                                expect=201)
        ids[view] = created["id"]
    # the synced columns carry the types the endpoint announced; the time column is temporal
    r = superset.http.get(f"/api/v1/dataset/{ids['conversion_monitoring']}")
    assert r.status_code == 200, r.text
    columns = {c["column_name"]: c for c in r.json()["result"]["columns"]}
    assert {"utm_source", "model_version", "created_at", "accuracy", "lead_count"} <= set(columns)
    assert columns["created_at"]["is_dttm"], columns["created_at"]
    yield ids


def chart_data(superset, dataset_id: int, query: dict) -> tuple[list[dict], str]:
    payload = {"datasource": {"id": dataset_id, "type": "table"}, "force": True,
               "queries": [query], "result_format": "json", "result_type": "full"}
    body = superset.post("/api/v1/chart/data", payload)
    result = body["result"][0]
    assert result.get("error") is None and result.get("status") == "success", (result, superset.sent())
    return result["data"], result["query"]


def simple_metric(column: str, aggregate: str) -> dict:
    return {"expressionType": "SIMPLE", "column": {"column_name": column}, "aggregate": aggregate,
            "label": f"{aggregate}({column})"}


def close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))


# ---- the charts ---------------------------------------------------------------------------------

def test_bar_chart_group_by(superset, datasets, truth):  # noqa: F811
    rows, sql = chart_data(superset, datasets["conversion_monitoring"], {
        "columns": ["utm_source"], "metrics": [simple_metric("lead_count", "SUM")],
        "orderby": [[simple_metric("lead_count", "SUM"), False]], "row_limit": 10000})
    got = {r["utm_source"]: r["SUM(lead_count)"] for r in rows}
    expected = dict(truth("SELECT utm_source, count(DISTINCT id) FROM leads GROUP BY 1"))
    assert got == expected, sql
    assert [r["SUM(lead_count)"] for r in rows] == sorted(expected.values(), reverse=True)


def test_filtered_chart(superset, datasets, truth):  # noqa: F811
    rows, sql = chart_data(superset, datasets["conversion_monitoring"], {
        "columns": ["model_version"],
        "metrics": [simple_metric("lead_count", "SUM"), simple_metric("accuracy", "MAX")],
        "filters": [{"col": "utm_source", "op": "IN", "val": ["google", "bing"]}],
        "orderby": [[simple_metric("lead_count", "SUM"), False]], "row_limit": 10000})
    expected = {r[0]: r[1:] for r in truth(
        f"{reference._conversion_ctes(None, None)} SELECT model_version, {reference.N_LEADS}, {reference.ACCURACY} "
        "FROM joined WHERE utm_source IN ('google', 'bing') GROUP BY 1")}
    assert len(rows) == len(expected), (rows, sql)
    for r in rows:
        count, accuracy = expected[r["model_version"]]
        assert r["SUM(lead_count)"] == count and close(r["MAX(accuracy)"], accuracy), (r, sql)
    assert "IN ('google', 'bing')" in sql


def test_time_series_by_day_with_a_time_range(superset, datasets, truth):  # noqa: F811
    x_axis = {"timeGrain": "P1D", "columnType": "BASE_AXIS", "sqlExpression": "created_at",
              "label": "created_at", "expressionType": "SQL"}
    rows, sql = chart_data(superset, datasets["conversion_monitoring"], {
        "columns": [x_axis], "metrics": [simple_metric("lead_count", "SUM")],
        "filters": [{"col": "created_at", "op": "TEMPORAL_RANGE", "val": "2026-02-10T00:00:00 : 2026-02-17T00:00:00"}],
        "orderby": [[simple_metric("lead_count", "SUM"), False]], "row_limit": 10000})
    assert "TO_TIMESTAMP(" in sql, sql  # Superset's PostgreSQL bounds (db_engine_specs/postgres.py)
    expected = truth("SELECT date_trunc('day', created_at), count(DISTINCT id) FROM leads "
                     "WHERE created_at >= TIMESTAMP '2026-02-10' AND created_at < TIMESTAMP '2026-02-17' GROUP BY 1")
    # Superset returns timestamps as epoch milliseconds
    got = sorted((r["created_at"], r["SUM(lead_count)"]) for r in rows)
    want = sorted((int(d.replace(tzinfo=dt.timezone.utc).timestamp() * 1000), n) for d, n in expected)
    assert len(got) == 7 and got == want, sql


def test_big_number_of_a_ratio_metric(superset, datasets, truth):  # noqa: F811
    rows, sql = chart_data(superset, datasets["conversion_monitoring"], {
        "columns": [], "metrics": [simple_metric("accuracy", "MAX")], "row_limit": 10000})
    (expected,), = [(r[1],) for r in truth(reference.conversion_metrics())]
    assert len(rows) == 1 and close(rows[0]["MAX(accuracy)"], expected), (rows, sql)
    # the big number with a time range: the ratio over the range's leads only
    rows, sql = chart_data(superset, datasets["conversion_monitoring"], {
        "columns": [], "metrics": [simple_metric("accuracy", "MAX")], "row_limit": 10000,
        "filters": [{"col": "created_at", "op": "TEMPORAL_RANGE", "val": "2026-02-10T00:00:00 : 2026-02-17T00:00:00"}]})
    expected = truth(f"{reference._conversion_ctes(None, None)} SELECT {reference.ACCURACY} FROM joined "
                     "WHERE created_at >= TIMESTAMP '2026-02-10' AND created_at < TIMESTAMP '2026-02-17'")[0][0]
    assert len(rows) == 1 and close(rows[0]["MAX(accuracy)"], expected), (rows, sql)


def test_table_chart_with_a_row_limit(superset, datasets, truth):  # noqa: F811
    rows, sql = chart_data(superset, datasets["conversion_monitoring"], {
        "columns": ["utm_source", "model_version"], "metrics": [simple_metric("lead_count", "SUM")],
        "orderby": [[simple_metric("lead_count", "SUM"), False]], "row_limit": 5})
    expected = {(r[0], r[1]): r[2] for r in truth(
        f"{reference._conversion_ctes(None, None)} SELECT utm_source, model_version, {reference.N_LEADS} "
        "FROM joined GROUP BY 1, 2")}
    assert len(rows) == 5, (rows, sql)
    for r in rows:
        assert expected[(r["utm_source"], r["model_version"])] == r["SUM(lead_count)"], (r, sql)
    assert [r["SUM(lead_count)"] for r in rows] == sorted(expected.values(), reverse=True)[:5]


def test_fraud_chart(superset, datasets, truth):  # noqa: F811
    rows, sql = chart_data(superset, datasets["fraud_monitoring"], {
        "columns": ["merchant_category"], "metrics": [simple_metric("fraud_loss", "MAX")],
        "orderby": [[simple_metric("fraud_loss", "MAX"), False]], "row_limit": 10000})
    expected = {r[0]: r[1] for r in truth(reference.fraud_by_merchant_category())}
    assert {r["merchant_category"] for r in rows} == set(expected), sql
    for r in rows:
        assert close(r["MAX(fraud_loss)"], expected[r["merchant_category"]]), (r, sql)


def test_sql_lab(superset, datasets, truth):  # noqa: F811
    body = superset.post("/api/v1/sqllab/execute/", {
        "database_id": datasets["database"], "schema": "public", "runAsync": False, "select_as_cta": False,
        "client_id": "mlsqllab1", "tab": "metrics", "queryLimit": 1000,
        "sql": "SELECT model_version, accuracy FROM conversion_monitoring GROUP BY 1 ORDER BY 1"})
    assert body["status"] == "success", body
    rows = [(r["model_version"], r["accuracy"]) for r in body["data"]]
    expected = [(r[0], r[1]) for r in truth(reference.conversion_metrics_by_model_version())]
    assert_rows(rows, expected, "SQL Lab")


def test_time_series_broken_down_by_a_dimension(superset, datasets, truth):  # noqa: F811
    x_axis = {"timeGrain": "P1D", "columnType": "BASE_AXIS", "sqlExpression": "created_at",
              "label": "created_at", "expressionType": "SQL"}
    rows, sql = chart_data(superset, datasets["conversion_monitoring"], {
        "columns": [x_axis, "utm_source"], "metrics": [simple_metric("lead_count", "SUM")],
        "filters": [{"col": "created_at", "op": "TEMPORAL_RANGE", "val": "2026-02-10T00:00:00 : 2026-02-12T00:00:00"}],
        "orderby": [[simple_metric("lead_count", "SUM"), False]], "row_limit": 10000})
    expected = {(int(d.replace(tzinfo=dt.timezone.utc).timestamp() * 1000), s): n for d, s, n in truth(
        "SELECT date_trunc('day', created_at), utm_source, count(DISTINCT id) FROM leads "
        "WHERE created_at >= TIMESTAMP '2026-02-10' AND created_at < TIMESTAMP '2026-02-12' GROUP BY 1, 2")}
    assert {(r["created_at"], r["utm_source"]): r["SUM(lead_count)"] for r in rows} == expected, sql


def test_virtual_dataset(superset, datasets, truth):  # noqa: F811
    """A dataset defined by SQL: Superset wraps it as a subquery (FROM (<sql>) AS virtual_table)."""
    created = superset.post("/api/v1/dataset/", {
        "database": datasets["database"], "schema": "public", "table_name": "leads_by_channel_and_version",
        "sql": "SELECT utm_source, model_version, lead_count FROM conversion_monitoring"}, expect=201)
    rows, sql = chart_data(superset, created["id"], {
        "columns": ["utm_source"], "metrics": [simple_metric("lead_count", "SUM")],
        "orderby": [[simple_metric("lead_count", "SUM"), False]], "row_limit": 10000})
    assert "virtual_table" in sql, sql
    expected = dict(truth("SELECT utm_source, count(DISTINCT id) FROM leads GROUP BY 1"))
    assert {r["utm_source"]: r["SUM(lead_count)"] for r in rows} == expected, sql


def test_series_limit_equals_hand_written_sql(superset, datasets, truth):  # noqa: F811
    """A time series limited to its top N series: Superset joins the query with a subquery of the
    top N groups (ON utm_source = utm_source__); the endpoint maps it onto a TopGroups restriction.
    The chart is the daily lead count of the 2 sources with most leads in the range, by hand."""
    x_axis = {"timeGrain": "P1D", "columnType": "BASE_AXIS", "sqlExpression": "created_at",
              "label": "created_at", "expressionType": "SQL"}
    for limit, desc in ((2, True), (3, False)):
        rows, sql = chart_data(superset, datasets["conversion_monitoring"], {
            "columns": [x_axis, "utm_source"], "series_columns": ["utm_source"], "series_limit": limit,
            "series_limit_metric": simple_metric("lead_count", "SUM"), "order_desc": desc,
            "metrics": [simple_metric("lead_count", "SUM")], "row_limit": 10000,
            "filters": [{"col": "created_at", "op": "TEMPORAL_RANGE", "val": "2026-02-10T00:00:00 : 2026-02-12T00:00:00"}]})
        assert "series_limit" in sql and "utm_source__" in sql, sql
        got = {(r["created_at"], r["utm_source"]): r["SUM(lead_count)"] for r in rows}
        assert got == _daily_leads_of_top_sources(truth, limit, desc) and 1 <= len({s for _, s in got}) <= limit, sql


def _daily_leads_of_top_sources(truth, limit: int, desc: bool) -> dict:
    """By hand: the daily lead count of the `limit` sources with most (desc) or fewest leads from
    2026-02-10 to 2026-02-12, ties by source, a NULL source never kept; keyed as Superset's rows."""
    in_range = "created_at >= TIMESTAMP '2026-02-10' AND created_at < TIMESTAMP '2026-02-12'"
    return {(int(d.replace(tzinfo=dt.timezone.utc).timestamp() * 1000), s): n for d, s, n in truth(
        f"WITH top AS (SELECT utm_source FROM leads WHERE {in_range} GROUP BY 1 "
        f"ORDER BY count(DISTINCT id) {'DESC' if desc else 'ASC'}, utm_source NULLS LAST LIMIT {limit}) "
        "SELECT date_trunc('day', created_at), l.utm_source, count(DISTINCT id) FROM leads l "
        f"JOIN top ON l.utm_source = top.utm_source WHERE {in_range} GROUP BY 1, 2")}


def test_series_limit_over_a_virtual_dataset(superset, datasets, truth):  # noqa: F811
    """The same chart over a virtual (SQL) dataset: both the query and the top-N subquery read
    FROM (<sql>) AS virtual_table, and DATE_TRUNC groups the dataset's raw times into days."""
    created = superset.post("/api/v1/dataset/", {
        "database": datasets["database"], "schema": "public", "table_name": "leads_with_time",
        "sql": "SELECT utm_source, model_version, lead_count, created_at FROM conversion_monitoring"}, expect=201)
    x_axis = {"timeGrain": "P1D", "columnType": "BASE_AXIS", "sqlExpression": "created_at",
              "label": "created_at", "expressionType": "SQL"}
    rows, sql = chart_data(superset, created["id"], {
        "columns": [x_axis, "utm_source"], "series_columns": ["utm_source"], "series_limit": 3,
        "series_limit_metric": simple_metric("lead_count", "SUM"),
        "metrics": [simple_metric("lead_count", "SUM")], "row_limit": 10000,
        "filters": [{"col": "created_at", "op": "TEMPORAL_RANGE", "val": "2026-02-10T00:00:00 : 2026-02-12T00:00:00"}]})
    assert "virtual_table" in sql and "series_limit" in sql, sql
    got = {(r["created_at"], r["utm_source"]): r["SUM(lead_count)"] for r in rows}
    assert got == _daily_leads_of_top_sources(truth, 3, True) and 1 <= len({s for _, s in got}) <= 3, sql


def test_dashboard_filter_values_and_column_refresh(superset, datasets, truth):  # noqa: F811
    """A dashboard's select filter asks for a column's distinct values; "Sync columns from source"
    re-reads the view's columns through the catalog."""
    rows, sql = chart_data(superset, datasets["conversion_monitoring"], {
        "columns": ["utm_source"], "metrics": [], "orderby": [["utm_source", True]], "row_limit": 1000})
    expected = [r[0] for r in truth("SELECT DISTINCT utm_source FROM leads ORDER BY 1 NULLS LAST")]
    assert [r["utm_source"] for r in rows] == expected, sql
    r = superset.http.put(f"/api/v1/dataset/{datasets['fraud_monitoring']}/refresh")
    assert r.status_code == 200, r.text[:2000]


def test_samples_pane(superset, datasets, truth):  # noqa: F811
    """Explore's "Samples" pane selects every column of the dataset with a LIMIT and no GROUP BY:
    each row is one group of all the dimensions. Over conversion_monitoring it includes the
    trailing-window accuracy_3h at the raw created_at, which has no exact meaning: refused, and
    Superset shows the reason."""
    def samples(view: str):
        return superset.http.post("/api/v1/chart/data", json={
            "datasource": {"id": datasets[view], "type": "table"}, "force": True,
            "queries": [{"row_limit": 10}], "result_format": "json", "result_type": "samples"})

    r = samples("fraud_monitoring")
    assert r.status_code == 200, r.text[:2000]
    result = r.json()["result"][0]
    assert len(result["data"]) == 10 and "LIMIT 10" in result["query"], result["query"]
    counts = {(r[0], r[1], r[2]): r[3] for r in truth(
        f"{reference._fraud_ctes(None, None)} SELECT model_version, merchant_category, created_at, count(*) "
        "FROM joined GROUP BY 1, 2, 3")}
    for row in result["data"]:  # each sample row is its group's numbers; created_at in epoch ms
        created = dt.datetime.fromtimestamp(row["created_at"] / 1000, dt.timezone.utc)
        key = (row["model_version"], row["merchant_category"], created.replace(tzinfo=None))
        assert counts[key] == row["transaction_count"], (row, result["query"])
    r = samples("conversion_monitoring")
    assert r.status_code == 400 and "trailing window" in r.json()["message"], r.text[:2000]
