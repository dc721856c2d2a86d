"""A model whose YAML is valid but cannot run fails `validate` against the engine's catalog.

Each case in tests/fixtures/bad_schema/<case>/ is a small project (metrics/*.yml) over the demo
tables with one schema mistake, and an expected.txt in the format of tests/fixtures/bad_yaml
(`<file under metrics/>:<line>: <text>`; "a ... b" means a, then b, in the message). The match
is both ways, on DuckDB and on PostgreSQL. `validate --offline` accepts the same projects.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_project
from metrics_layer.cli import main
from metrics_layer.model import ValidationFailed, load_model
from metrics_layer.model.schema_check import Catalog, schema_errors
from metrics_layer.project import load_project
from metrics_layer.query import QueryError, SemanticQuery
from metrics_layer.serve.reload import ModelWatcher
from metrics_layer.service import MetricsService

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bad_schema"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.txt").is_file())
ENGINES = ("duckdb", "postgres")


@pytest.fixture(scope="module")
def duckdb_copies(tmp_path_factory, demo_duckdb_path):
    """Copies of the demo database: validate opens its file read-only, which DuckDB refuses
    while this process holds the same file read-write (other tests' services may)."""
    folder = tmp_path_factory.mktemp("schema_check")
    return {use: shutil.copy(demo_duckdb_path, folder / f"{use}.duckdb") for use in ("validate", "service")}


@pytest.fixture(params=ENGINES)
def engine_url(request, duckdb_copies) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{duckdb_copies['validate']}"
    return request.getfixturevalue("demo_postgres_url")


@pytest.fixture(params=ENGINES)
def service_url(request, duckdb_copies) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{duckdb_copies['service']}"
    return request.getfixturevalue("demo_postgres_url")


def expected_errors(case: str) -> list[tuple[str, int, list[str]]]:
    result = []
    for raw in (FIXTURES / case / "expected.txt").read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        match = re.match(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<text>.+)$", raw)
        assert match, f"{case}/expected.txt: cannot read {raw!r}"
        result.append((match["file"], int(match["line"]), match["text"].split(" ... ")))
    assert result, f"{case}/expected.txt lists no error"
    return result


def _matches(case: str, want: tuple[str, int, list[str]], reported: tuple[str, int, str]) -> bool:
    (file, line, parts), (shown, shown_line, message) = want, reported
    if not shown.replace(os.sep, "/").endswith(f"{case}/metrics/{file}") or shown_line != line:
        return False
    at = 0
    for part in parts:  # in order
        at = message.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


def validate(capsys, monkeypatch, url: str, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("METRICS_LAYER_ENGINE", url)
    capsys.readouterr()
    code = main(["validate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_there_are_enough_cases():
    assert len(CASES) >= 9, CASES


@pytest.mark.parametrize("case", CASES)
def test_validate_reports_each_schema_mistake(case, engine_url, capsys, monkeypatch):
    code, out, err = validate(capsys, monkeypatch, engine_url, str(FIXTURES / case))
    assert code == 1, err
    assert out == ""
    lines = err.splitlines()
    errors = []
    for text in lines[1:]:
        match = re.match(r"^  (?P<file>.+?):(?P<line>\d+): (?P<message>.*)$", text)
        assert match, f"not a file:line error: {text!r}"
        errors.append((match["file"], int(match["line"]), match["message"]))
    assert lines[0] == f"{len(errors)} error{'s' if len(errors) != 1 else ''} in the semantic model:"
    expected = expected_errors(case)
    for want in expected:
        assert any(_matches(case, want, e) for e in errors), f"{case}: no error like {want}; got:\n{err}"
    for error in errors:
        assert any(_matches(case, want, error) for want in expected), f"{case}: unexpected error {error}"


@pytest.mark.parametrize("case", CASES)
def test_validate_offline_accepts_the_same_project(case, capsys, monkeypatch):
    code, out, err = validate(capsys, monkeypatch, "postgresql://nobody@127.0.0.1:1/none", "--offline", str(FIXTURES / case))
    assert code == 0, err
    assert out.startswith("ok: ") and "offline" in out


def test_the_demo_project_validates_clean(engine_url, tmp_path, capsys, monkeypatch):
    folder = make_project(tmp_path / "demo", engine_url)
    code, out, err = validate(capsys, monkeypatch, engine_url, str(folder))
    assert code == 0, err
    assert out.startswith("ok: 6 models") and "checked on" in out, out


def test_an_unreachable_engine_falls_back_to_the_yaml_checks(tmp_path, capsys, monkeypatch):
    for url in ("postgresql://postgres@127.0.0.1:1/test", f"duckdb:///{tmp_path / 'missing.duckdb'}"):
        code, out, err = validate(capsys, monkeypatch, url, str(FIXTURES / "measure_column_typo"))
        assert code == 0, err
        assert err.startswith("note: cannot reach the engine: ") and err.rstrip().endswith("checked the YAML only"), err
        assert "YAML only" in out
    assert not (tmp_path / "missing.duckdb").exists()  # validate never creates a database


def test_the_checker_is_pure_logic_over_a_catalog():
    model = load_model(FIXTURES / "measure_column_typo" / "metrics")
    catalog = Catalog(columns={"transactions": {"id": "numeric", "created_at": "time", "merchant_category": "text", "amount": "numeric"}},
                      relations=("transactions",))
    [error] = schema_errors(model, catalog)
    assert error.location.line == 13
    assert error.message == "measure 'transactions.amount' expr: no column 'amont' in table transactions; did you mean 'amount'?"
    catalog.columns["transactions"]["amont"] = "numeric"
    assert schema_errors(model, catalog) == []


def test_cli_validate_in_a_process(demo_postgres_url):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("METRICS_LAYER_")}, "METRICS_LAYER_ENGINE": demo_postgres_url}
    result = subprocess.run([sys.executable, "-m", "metrics_layer.cli", "validate", "tests/fixtures/bad_schema/table_typo"],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert ("tests/fixtures/bad_schema/table_typo/metrics/models.yml:3: model 'leads' table 'leadz' does not exist "
            "on the engine; did you mean 'leads'?") in result.stderr


# ---- query time: an engine error from model SQL names the YAML that caused it -------------

@pytest.mark.parametrize("case, metric, where", [
    ("measure_column_typo", "transactions.amount", "models.yml:13: measure 'transactions.amount' expr reads column 'amont'"),
    ("bad_model_sql", "big_transactions.big_count", "models.yml:4: model 'big_transactions' sql reads column 'amont'"),
])
def test_a_query_time_engine_error_names_file_and_line(case, metric, where, service_url, monkeypatch):
    monkeypatch.setenv("METRICS_LAYER_ENGINE", service_url)
    project = load_project(FIXTURES / case)
    service = MetricsService(project, model=load_model(project.metrics_dir))  # the YAML alone is valid
    try:
        with pytest.raises(QueryError) as info:
            service.run(SemanticQuery(metrics=(metric,)))
    finally:
        service.engine.close()
    message = info.value.message
    assert "amont" in message.splitlines()[0]  # the engine's own words first
    assert re.search(rf"\n  from \S*{case}/metrics/{re.escape(where)}", message.replace(os.sep, "/")), message


# ---- serve: the check runs on every reload (the last good model keeps serving) and at start --

def test_a_reload_that_fails_the_schema_check_keeps_the_last_good_model(service_url, tmp_path):
    folder = make_project(tmp_path / "project", service_url)
    service = MetricsService(load_project(folder))
    watcher = ModelWatcher(service)
    try:
        good = service.model
        fraud = folder / "metrics" / "fraud.yml"
        text = fraud.read_text()
        fraud.write_text(text.replace("expr: amount, description: Total", "expr: amont, description: Total"))
        assert watcher.reload() is False
        assert service.model is good
        [error] = watcher.last_reload_errors
        line = next(i for i, row in enumerate(fraud.read_text().splitlines(), 1) if "expr: amont" in row)
        assert error["file"].endswith("fraud.yml") and error["line"] == line, error
        assert "no column 'amont' in table transactions; did you mean 'amount'?" in error["message"]
        fraud.write_text(text)
        assert watcher.reload() is True and watcher.last_reload_errors == []
    finally:
        service.engine.close()


def test_serve_refuses_to_start_on_a_model_that_cannot_run(tmp_path, demo_postgres_url):
    folder = make_project(tmp_path / "project", demo_postgres_url)
    conversion = folder / "metrics" / "conversion.yml"
    document = yaml.safe_load(conversion.read_text())
    document["models"][0]["table"] = "leadz"
    conversion.write_text(yaml.safe_dump(document, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_LAYER_")}
    result = subprocess.run([sys.executable, "-m", "metrics_layer.cli", "serve", "--project", str(folder),
                             "--http-port", "0", "--sql-port", "0"], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "model 'leads' table 'leadz' does not exist on the engine; did you mean 'leads'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_comparisons_that_the_engines_accept_are_not_reported(tmp_path):
    (tmp_path / "m.yml").write_text("""models:
  - name: t
    table: t
    entities: [{name: row, type: primary, expr: id}]
    dimensions:
      - {name: code}
      - {name: at, type: time, expr: CAST(code AS TIMESTAMP)}
    measures:
      - {name: a, agg: count, filter: "amount > '100' AND amount > -1 AND at > '2026-01-01' AND \\"Code\\" = 'x'"}
      - {name: b, agg: count, filter: "code IN ('x', 2)"}
""")
    model = load_model(tmp_path)
    columns = {"id": "numeric", "code": "text", "amount": "numeric"}
    duckdb_like = Catalog(columns={"t": columns}, relations=("t",), quoted_case_matters=False)
    [error] = schema_errors(model, duckdb_like)
    assert error.location.line == 10 and "compares text column 'code' with the number 2" in error.message
    postgres_like = Catalog(columns={"t": columns}, relations=("t",))
    messages = sorted(e.message for e in schema_errors(model, postgres_like))  # a quoted name keeps its case
    assert messages == ["measure 't.a' filter: no column 'Code' in table t; did you mean 'code'?", error.message]


def test_the_sql_endpoint_names_file_and_line_too(tmp_path, demo_postgres_url):
    import asyncio
    import threading

    import psycopg

    from metrics_layer.serve.pgwire.endpoint import start_sql_endpoint

    folder = tmp_path / "project"
    shutil.copytree(FIXTURES / "measure_column_typo", folder)
    with (folder / "metrics" / "models.yml").open("a") as f:
        f.write("views:\n  - {name: money, metrics: [transactions.amount], dimensions: [transactions.merchant_category]}\n")
    (folder / "metrics_layer.yml").write_text(f"engine: {demo_postgres_url}\n")
    project = load_project(folder)
    service = MetricsService(project)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    endpoint = asyncio.run_coroutine_threadsafe(start_sql_endpoint(service, "127.0.0.1", 0, project), loop).result(30)
    try:
        with psycopg.connect(host="127.0.0.1", port=endpoint.port, user="metrics", password="metrics", dbname="metrics",
                             connect_timeout=10) as conn:
            with pytest.raises(psycopg.Error) as info:
                conn.execute("SELECT amount FROM money").fetchall()
        assert "amont" in str(info.value)
        assert re.search(r"from \S*models\.yml:13: measure 'transactions\.amount' expr reads column 'amont'", str(info.value)), info.value
    finally:
        asyncio.run_coroutine_threadsafe(endpoint.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        service.engine.close()
