"""The CLI end to end, as a user runs it: real processes, real DuckDB files."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import duckdb
import pytest

import reference
from conftest import REPO, demo_env, make_project, readme_block

CLI = [sys.executable, "-m", "metrics_layer.cli"]


def run(*args, env=None, cwd=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd)


@pytest.fixture(scope="module")
def project(tmp_path_factory, demo_duckdb_path):
    return make_project(tmp_path_factory.mktemp("cli"), f"duckdb:///{demo_duckdb_path}")


def test_query_json_matches_hand_written_sql(project, demo_duckdb_path, tmp_path):
    out = run("query", "--project", str(project), "-m", "accuracy", "-m", "precision", "-b", "predictions.model_version",
              "--as-of", "2026-02-25T12:00:00", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows and set(rows[0]) == {"predictions.model_version", "accuracy", "precision"}
    # The reference reads a copy: engines in this process may hold the file with another config.
    copy = tmp_path / "reference.duckdb"
    shutil.copyfile(demo_duckdb_path, copy)
    with duckdb.connect(str(copy)) as con:
        expected = con.execute(reference.conversion_metrics_by_model_version("2026-02-25 12:00:00")).fetchall()
    got = {r["predictions.model_version"]: (r["accuracy"], r["precision"]) for r in rows}
    assert len(got) == len(expected)
    for version, accuracy, precision, _recall, _f1 in expected:
        if accuracy is None:  # leads never predicted: their own row, no accuracy
            assert got[version] == (None, None)
        else:
            assert got[version] == pytest.approx((accuracy, precision), rel=1e-12)


def test_query_table_and_csv(project):
    table = run("query", "--project", str(project), "-m", "fraud_loss", "-b", "transactions.merchant_category", "--order-by", "fraud_loss desc", "--limit", "3")
    assert table.returncode == 0, table.stderr
    assert "transactions.merchant_category" in table.stdout and "(3 rows)" in table.stdout
    csv_out = run("query", "--project", str(project), "-m", "leads.lead_count", "-b", "leads.created_at:day", "--format", "csv")
    lines = csv_out.stdout.strip().splitlines()
    assert lines[0] == "leads.created_at,leads.lead_count" and len(lines) > 20


def test_compile_for_each_dialect(project):
    for dialect in ("duckdb", "postgres", "materialize", "risingwave"):
        out = run("compile", "--project", str(project), "-m", "accuracy_3h", "--dialect", dialect)
        assert out.returncode == 0 and out.stdout.startswith("SELECT"), out.stderr
    assert "mz_now" in run("compile", "--project", str(project), "-m", "accuracy_3h", "--dialect", "materialize").stdout.lower()


def test_user_errors_exit_1_without_traceback(project):
    for args in (
        ("query", "--project", str(project), "-m", "acuracy"),
        ("query", "--project", str(project), "-m", "accuracy", "-b", "leads.created_at:hourly"),
        ("query", "--project", str(project), "-m", "accuracy", "-f", "leads.created_at > yesterday"),
        ("compile", "--project", str(project), "-m", "accuracy", "--dialect", "oracle"),
        ("query", "--project", str(project / "missing"), "-m", "accuracy"),
    ):
        out = run(*args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert "error" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "did you mean 'accuracy'" in run("query", "--project", str(project), "-m", "acuracy").stderr


def test_engine_error_names_the_query(tmp_path):
    empty = make_project(tmp_path / "p", f"duckdb:///{tmp_path / 'empty.duckdb'}")
    out = run("query", "--project", str(empty), "-m", "accuracy")
    assert out.returncode == 1 and "query for accuracy failed" in out.stderr and "leads" in out.stderr
    assert "Traceback" not in out.stderr


def test_demo_writes_deterministic_data(tmp_path):
    paths = [tmp_path / "a.duckdb", tmp_path / "b.duckdb"]
    for path in paths:
        out = run("demo", "--leads", "500", "--end", "2026-03-01", "--duckdb", str(path))
        assert out.returncode == 0, out.stderr
    counts = []
    for path in paths:
        with duckdb.connect(str(path), read_only=True) as con:
            counts.append(con.execute("SELECT COUNT(*), SUM(id), MIN(created_at), MAX(created_at) FROM leads").fetchone())
    assert counts[0] == counts[1] and counts[0][0] == 500


def test_validate_and_list(project):
    ok = run("validate", str(project))
    assert ok.returncode == 0 and "61 metrics" in ok.stdout
    listing = run("list", "--project", str(project))
    assert "accuracy_3h (ratio) [window 3 hours, label delay 1 day]" in listing.stdout


def test_grain_without_a_time_dimension_to_take_it_is_refused(project):
    for by in ((), ("-b", "leads.utm_source"), ("-b", "leads.created_at:day")):
        out = run("query", "--project", str(project), "-m", "leads.lead_count", *by, "--grain", "week")
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert "--grain week" in out.stderr and "-b leads.created_at" in out.stderr, out.stderr
    taken = run("query", "--project", str(project), "-m", "leads.lead_count", "-b", "leads.utm_source",
                "-b", "leads.created_at", "--grain", "week", "--format", "json")
    assert taken.returncode == 0, taken.stderr
    assert {r["leads.created_at"] for r in json.loads(taken.stdout)} >= {"2026-02-16T00:00:00", "2026-02-23T00:00:00"}


def test_between_a_and_b_or_a_comma_b(project):
    answers = []
    for condition in ("between 2026-02-20 and 2026-02-22", "BETWEEN 2026-02-20 AND 2026-02-22", "between 2026-02-20,2026-02-22"):
        out = run("query", "--project", str(project), "-m", "leads.lead_count", "-b", "leads.created_at:day",
                  "-f", f"leads.created_at {condition}", "--format", "json")
        assert out.returncode == 0, (condition, out.stderr)
        answers.append(json.loads(out.stdout))
    assert answers[0] and answers[0] == answers[1] == answers[2]
    assert [r["leads.created_at"] for r in answers[0]][:2] == ["2026-02-20T00:00:00", "2026-02-21T00:00:00"]
    for condition in ("between 2026-02-20", "between 1 and 2 and 3", "between and 2"):
        out = run("query", "--project", str(project), "-m", "leads.lead_count", "-f", f"leads.created_at {condition}")
        assert out.returncode == 1 and "between needs two values" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_validate_a_yaml_folder_or_say_what_to_pass(project, tmp_path):
    ok = run("validate", str(project / "metrics"))
    assert ok.returncode == 0 and "61 metrics" in ok.stdout, ok.stderr
    (tmp_path / "notes.txt").write_text("not a project")
    out = run("validate", str(tmp_path))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{tmp_path} is not a project" in out.stderr and "metrics_layer.yml" in out.stderr
    assert "a folder of YAML model files" in out.stderr and "metrics_layer.yml:" not in out.stderr


def test_readme_cli_examples_return_rows_on_todays_demo(demo_home_today):
    """Every command of the README's "From the command line" block, run by bash as written
    (so --as-of "$(date ...)" is computed as a user's shell does), on the demo as generated today."""
    commands = [line for line in readme_block("From the command line").splitlines() if line.startswith("metrics-layer ")]
    assert len(commands) >= 6 and any("--as-of" in c for c in commands)
    cli = " ".join(shlex.quote(a) for a in CLI)
    for command in commands:
        out = subprocess.run(["bash", "-c", f'metrics-layer() {{ {cli} "$@"; }}\n{command}'], capture_output=True,
                             text=True, env=demo_env(demo_home_today), cwd=REPO, timeout=120)
        assert out.returncode == 0, (command, out.stderr)
        if " query " in command and "--format json" in command:
            rows = json.loads(out.stdout)
            assert rows and any(list(r.values())[-1] is not None for r in rows), (command, out.stdout)
        elif " query " in command:
            assert re.search(r"^\(([1-9]\d*) rows?\)$", out.stdout, re.MULTILINE), (command, out.stdout)
        else:
            assert out.stdout.strip(), (command, out.stderr)


def test_query_while_the_sql_endpoint_serves_the_same_file(tmp_path, demo_duckdb_path):
    """Issue 9, item 7: `metrics-layer query` works while `serve` holds the DuckDB file (both open
    it read-only), and its numbers are those of hand-written SQL; the server keeps answering."""
    import shutil

    from test_sql_endpoint import Endpoint, psycopg

    data = tmp_path / "demo.duckdb"
    shutil.copyfile(demo_duckdb_path, data)
    folder = make_project(tmp_path / "proj", f"duckdb:///{data}")
    expected = duckdb.connect(str(data), read_only=True).execute(
        "SELECT utm_source, count(DISTINCT id) FROM leads GROUP BY 1 ORDER BY 1").fetchall()
    server = Endpoint(folder).start()
    try:
        with psycopg.connect(f"host=127.0.0.1 port={server.port} user=metrics dbname=metrics", autocommit=True) as conn:
            before = conn.execute("SELECT utm_source, lead_count FROM conversion_monitoring ORDER BY 1").fetchall()
            out = run("query", "--project", str(folder), "-m", "leads.lead_count", "-b", "leads.utm_source",
                      "--order-by", "leads.utm_source", "--format", "json")
            assert out.returncode == 0, out.stderr
            rows = json.loads(out.stdout)
            after = conn.execute("SELECT utm_source, lead_count FROM conversion_monitoring ORDER BY 1").fetchall()
    finally:
        server.stop()
    values = [tuple(r.values()) for r in rows] if rows and isinstance(rows[0], dict) else [tuple(r) for r in rows.get("rows", rows)]
    assert values == [tuple(e) for e in expected]
    assert before == after == [tuple(e) for e in expected]
