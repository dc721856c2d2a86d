"""Monitors against a real local HTTP receiver and a real DuckDB file.

The numbers the monitor sees are made by inserting rows: predictions that are wrong push a
model version's accuracy under the threshold (one webhook), right ones bring it back (one
more), evaluations in between send nothing. The receiver fails its first requests, so the
webhook's retries are exercised. Every evaluation is a row in the engine's history table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest

from metrics_layer.model import ValidationFailed, load_model
from metrics_layer.monitors import Monitors, Webhook
from metrics_layer.project import load_project
from metrics_layer.service import MetricsService

MODEL = """
models:
  - name: leads
    table: leads
    entities: [{name: lead, type: primary, expr: id}]
    time: created_at
    dimensions: [{name: created_at, type: time}]
    measures: [{name: lead_count, agg: count}]
  - name: predictions
    table: prediction_events
    entities: [{name: lead, type: unique, expr: lead_id}]
    dimensions: [{name: model_version}, {name: label, type: number}]
  - name: conversions
    table: conversions
    entities: [{name: lead, type: unique, expr: lead_id}]
metrics:
  - name: scoring
    type: classification
    entity: leads.lead
    prediction: {label: predictions.label, model_version: predictions.model_version}
    ground_truth: conversions
monitors:
  - name: accuracy_by_version
    metric: scoring.accuracy
    by: predictions.model_version
    condition: "< 0.5"
    notify: [log, "{url}"]
"""


class Receiver:
    """A real HTTP server recording POSTed JSON; answers 500 to its first `fail` requests."""

    def __init__(self, fail: int = 0):
        self.bodies: list[dict] = []
        self.requests = 0
        self.fail = fail
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.requests += 1
                if owner.requests <= owner.fail:
                    self.send_response(500)
                    self.end_headers()
                    return
                owner.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _leads(con, start: int, count: int, version: str, right: bool):
    """`count` leads predicted positive; converted when the prediction is to be right."""
    for i in range(start, start + count):
        con.execute("INSERT INTO leads VALUES (?, TIMESTAMP '2026-01-01 00:00:00' + ? * INTERVAL 1 MINUTE)", [i, i])
        con.execute("INSERT INTO prediction_events VALUES (?, ?, 1)", [i, version])
        if right:
            con.execute("INSERT INTO conversions VALUES (?)", [i])


@pytest.fixture
def setup(tmp_path):
    receiver = Receiver(fail=2)
    db = tmp_path / "data.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE leads (id INTEGER, created_at TIMESTAMP)")
        con.execute("CREATE TABLE prediction_events (lead_id INTEGER, model_version TEXT, label INTEGER)")
        con.execute("CREATE TABLE conversions (lead_id INTEGER)")
        _leads(con, 0, 8, "v1", right=True)
        _leads(con, 8, 2, "v1", right=False)
        _leads(con, 100, 5, "v2", right=True)
        con.execute("INSERT INTO leads VALUES (999, TIMESTAMP '2026-01-01 12:00:00')")  # never predicted: no_data
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "model.yml").write_text(MODEL.replace("{url}", receiver.url))
    (tmp_path / "metrics_layer.yml").write_text(f"engine: duckdb:///{db}\n")
    service = MetricsService(load_project(tmp_path))
    service.read_only_engine = False
    sleeps: list[float] = []
    monitors = Monitors(service, webhook=Webhook(attempts=4, backoff=0.01, sleep=lambda s: sleeps.append(s)))
    yield tmp_path, service, monitors, receiver, sleeps
    receiver.close()
    service.engine.close()


def _insert(service, rows: list[tuple[int, str, bool]]):
    statements = []
    for i, version, right in rows:
        statements += [f"INSERT INTO leads VALUES ({i}, TIMESTAMP '2026-01-02 00:00:00')",
                       f"INSERT INTO prediction_events VALUES ({i}, '{version}', 1)"]
        if right:
            statements.append(f"INSERT INTO conversions VALUES ({i})")
    service.engine.run_statements(statements)


def _states(states):
    return {s.group.get("predictions.model_version"): (s.state, s.value) for s in states}


def test_one_webhook_on_alert_one_on_recovery_retries_and_history(setup):
    folder, service, monitors, receiver, sleeps = setup
    monitor = service.model.monitors["accuracy_by_version"]
    assert _states(monitors.evaluate(monitor)) == {"v1": ("ok", 0.8), "v2": ("ok", 1.0), None: ("no_data", None)}
    assert receiver.requests == 0
    _insert(service, [(200 + i, "v1", False) for i in range(10)])  # v1: 8 right of 20
    assert _states(monitors.evaluate(monitor))["v1"] == ("alerting", 0.4)
    assert len(receiver.bodies) == 1 and receiver.requests == 3, "two failures, then delivered"
    assert sleeps == [0.01, 0.02], "backoff doubles between attempts"
    alert = receiver.bodies[0]
    assert alert["event"] == "alerting" and alert["group"] == {"predictions.model_version": "v1"} and alert["value"] == 0.4
    assert alert["previous_state"] == "ok" and alert["metric"] == "scoring.accuracy"
    monitors.evaluate(monitor)  # still alerting: no new call
    assert len(receiver.bodies) == 1 and receiver.requests == 3
    _insert(service, [(300 + i, "v1", True) for i in range(20)])  # v1: 28 right of 40
    assert _states(monitors.evaluate(monitor))["v1"] == ("ok", 0.7)
    assert len(receiver.bodies) == 2 and receiver.bodies[1]["event"] == "recovered"
    history = monitors.history("accuracy_by_version")
    assert len(history) == 4 * 3, "every evaluation of every group is recorded"
    v1 = [(h["state"], h["value"]) for h in history if h["group_key"] == json.dumps({"predictions.model_version": "v1"})]
    assert v1 == [("ok", 0.8), ("alerting", 0.4), ("alerting", 0.4), ("ok", 0.7)]


def test_a_webhook_that_never_answers_is_given_up_after_its_attempts(setup):
    folder, service, monitors, receiver, sleeps = setup
    receiver.fail = 100
    _insert(service, [(200 + i, "v1", False) for i in range(10)])
    assert _states(monitors.evaluate(service.model.monitors["accuracy_by_version"]))["v1"][0] == "alerting"
    assert receiver.requests == 4 and receiver.bodies == [] and len(sleeps) == 3


def test_a_broken_metric_is_reported_not_raised(setup):
    folder, service, monitors, receiver, sleeps = setup
    service.engine.run_statements(["DROP TABLE conversions"])
    (state,) = monitors.evaluate(service.model.monitors["accuracy_by_version"])
    assert state.state == "error" and "conversions" in state.message
    assert monitors.history()[-1]["state"] == "error"


def test_cli_once_exits_2_when_alerting_0_when_not(setup):
    folder, service, monitors, receiver, sleeps = setup
    service.engine.close()
    cli = [sys.executable, "-m", "metrics_layer.cli", "monitor", "--once", "--project", str(folder)]
    ok = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "accuracy_by_version[predictions.model_version=v1] 0.8 ok" in ok.stdout
    with duckdb.connect(str(folder / "data.duckdb")) as con:
        _leads(con, 200, 10, "v1", right=False)
    bad = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2, bad.stderr
    assert "accuracy_by_version[predictions.model_version=v1] 0.4 alerting" in bad.stdout


@pytest.mark.parametrize("monitor,error", [
    ("{name: m, metric: scoring.acuracy, condition: '< 1'}", "did you mean 'scoring.accuracy'"),
    ("{name: m, metric: scoring.accuracy, condition: 'below 1'}", "condition 'below 1' is not valid"),
    ("{name: m, metric: scoring.accuracy, condition: '< 1', every: often}", "every 'often' is not a duration"),
    ("{name: m, metric: scoring.accuracy, condition: '< 1', notify: [email]}", "notify must be a list of: log, or a webhook URL"),
    ("{name: m, metric: scoring.accuracy, condition: '< 1', min_coverage: 0.5}", "min_coverage needs a metric of a classification with label_delay"),
    ("{name: m, metric: scoring.accuracy, condition: '< 1', by: [leads.nope]}", "unknown dimension 'leads.nope'"),
])
def test_monitor_mistakes_are_reported_with_file_and_line(tmp_path, monitor, error):
    (tmp_path / "m.yml").write_text(MODEL.split("monitors:")[0] + f"monitors:\n  - {monitor}\n")
    with pytest.raises(ValidationFailed) as failed:
        load_model(tmp_path)
    (only,) = failed.value.errors
    assert error in only.message and only.location.line == MODEL.split("monitors:")[0].count("\n") + 2
    assert Path(only.location.file).name == "m.yml"


def test_serve_ticker_evaluates_and_api_monitors_reports(setup):
    """The ticker `serve` runs evaluates monitors as they come due; GET /api/monitors shows them."""
    import urllib.request

    from http_server import LiveServer, wait_for
    from metrics_layer.monitors import MonitorTicker
    from metrics_layer.serve.http import create_app

    folder, service, monitors, receiver, sleeps = setup
    app = create_app(service)
    app.state.monitors = monitors
    server = LiveServer(app, service).start()
    ticker = MonitorTicker(monitors, tick=0.05).start()
    try:
        wait_for(lambda: monitors.last.get("accuracy_by_version"), what="a first evaluation")
        with urllib.request.urlopen(f"{server.url}/api/monitors", timeout=60) as response:
            (shown,) = json.loads(response.read())["monitors"]
        assert shown["name"] == "accuracy_by_version" and shown["state"] == "ok" and shown["every_s"] == 300
        assert {g["group"].get("predictions.model_version"): g["value"] for g in shown["groups"]} == {"v1": 0.8, "v2": 1.0, None: None}
        assert shown["last_evaluation"].endswith("Z")
        body = json.dumps({"query": "{ monitors { name state condition groups { group value state } } }"}).encode()
        request = urllib.request.Request(f"{server.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            (graphql,) = json.loads(response.read())["data"]["monitors"]
        assert graphql["name"] == "accuracy_by_version" and graphql["state"] == "ok" and graphql["condition"] == "< 0.5"
        assert {"group": json.dumps({"predictions.model_version": "v1"}), "value": 0.8, "state": "ok"} in graphql["groups"]
        ticker.once()  # not due again for 5 minutes: no second evaluation
        assert len(monitors.history()) == 3
    finally:
        ticker.stop()
        server.stop()


# ---- where the history goes: beside a DuckDB file (serve opens it read-only), or in the engine ----

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_over_a_read_only_duckdb_file_records_history_beside_it(setup):
    """A real `serve` process opens the DuckDB file read-only; every evaluation still lands in
    data.monitor_history.sqlite, which `metrics-layer monitor --once` (also read-only, at the
    same time) appends to as well."""
    import contextlib
    import os
    import signal
    import sqlite3
    import urllib.request

    from http_server import wait_for
    from metrics_layer.monitors import history_path

    folder, service, monitors, receiver, sleeps = setup
    service.engine.close()  # this test process must not hold the file: serve opens it
    (folder / "metrics" / "model.yml").write_text(MODEL.replace("{url}", receiver.url).replace("notify: [log, ", "every: 1 second\n    notify: [log, "))
    store = history_path(folder / "data.duckdb")
    assert store == folder / "data.monitor_history.sqlite" and not store.exists()
    http_port, sql_port = _free_port(), _free_port()
    process = subprocess.Popen([sys.executable, "-m", "metrics_layer.cli", "serve", "--project", str(folder),
                                "--http-port", str(http_port), "--sql-port", str(sql_port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))

    def recorded(while_serving: bool = True) -> list[tuple]:
        if (while_serving and process.poll() is not None) or not store.exists():
            return []
        with contextlib.closing(sqlite3.connect(store, timeout=60)) as con:
            try:
                return con.execute("SELECT monitor, group_key, value, coverage, state, at FROM metrics_layer_monitor_history "
                                   "ORDER BY at").fetchall()
            except sqlite3.OperationalError:  # the table is not created yet
                return []

    try:
        rows = wait_for(lambda: len(recorded()) >= 6 and recorded(), timeout=180, what="two evaluations recorded by serve")
        assert process.poll() is None
        by_group = {}
        for monitor, group_key, value, coverage, state, _ in rows:
            by_group.setdefault(group_key, set()).add((monitor, value, coverage, state))
        # v1: 8 right of 10, v2: 5 of 5, the lead without a prediction: no data (as inserted above).
        assert by_group == {json.dumps({"predictions.model_version": "v1"}): {("accuracy_by_version", 0.8, None, "ok")},
                            json.dumps({"predictions.model_version": "v2"}): {("accuracy_by_version", 1.0, None, "ok")},
                            json.dumps({"predictions.model_version": None}): {("accuracy_by_version", None, None, "no_data")}}
        cli = subprocess.run([sys.executable, "-m", "metrics_layer.cli", "monitor", "--once", "--project", str(folder)],
                             capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stderr  # read-only too: it runs while serve holds the file
        assert "accuracy_by_version[predictions.model_version=v1] 0.8 ok" in cli.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/monitors", timeout=60) as response:
            (shown,) = json.loads(response.read())["monitors"]
        assert shown["state"] == "ok" and shown["last_evaluation"].endswith("Z")
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "monitor history not recorded" not in err
    total = len(recorded(while_serving=False))
    assert total >= len(rows) + 3 and total % 3 == 0, "every evaluation of every group, from serve and the CLI"


def test_history_is_a_table_in_postgresql(tmp_path):
    """On PostgreSQL the history is the table metrics_layer_monitor_history of the engine's
    current schema, read back here with psycopg."""
    import psycopg

    from conftest import postgres_or_skip

    url = postgres_or_skip()
    database = "report_monitor_history"
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        con.execute(f"CREATE DATABASE {database}")
    pg = url.rsplit("/", 1)[0] + f"/{database}"
    try:
        with psycopg.connect(pg, autocommit=True) as con:
            con.execute("CREATE TABLE leads (id INTEGER, created_at TIMESTAMP)")
            con.execute("CREATE TABLE prediction_events (lead_id INTEGER, model_version TEXT, label INTEGER)")
            con.execute("CREATE TABLE conversions (lead_id INTEGER)")
            con.execute("INSERT INTO leads SELECT i, TIMESTAMP '2026-01-01' + i * INTERVAL '1 minute' FROM generate_series(0, 9) i")
            con.execute("INSERT INTO prediction_events SELECT i, 'v1', 1 FROM generate_series(0, 9) i")
            con.execute("INSERT INTO conversions SELECT i FROM generate_series(0, 6) i")  # 7 of 10 right
        (tmp_path / "metrics").mkdir()
        (tmp_path / "metrics" / "model.yml").write_text(MODEL.replace("notify: [log, \"{url}\"]", "notify: [log]"))
        (tmp_path / "metrics_layer.yml").write_text(f"engine: {pg}\n")
        service = MetricsService(load_project(tmp_path))
        monitors = Monitors(service)
        assert "table metrics_layer_monitor_history" in monitors.store.where
        for _ in range(2):
            monitors.evaluate(service.model.monitors["accuracy_by_version"])
        service.engine.close()
        with psycopg.connect(pg) as con:
            rows = con.execute("SELECT group_key, value, state FROM metrics_layer_monitor_history ORDER BY at").fetchall()
        assert rows == [(json.dumps({"predictions.model_version": "v1"}), 0.7, "ok")] * 2
        assert not list(tmp_path.glob("*.sqlite"))
    finally:
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
