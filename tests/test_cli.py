"""The CLI end to end, as a user runs it: real processes, real DuckDB files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import pytest

import reference
from conftest import make_project

CLI = [sys.executable, "-m", "metrics_layer.cli"]


def run(*args, env=None, cwd=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd)


@pytest.fixture(scope="module")
def project(tmp_path_factory, demo_duckdb_path):
    return make_project(tmp_path_factory.mktemp("cli"), f"duckdb:///{demo_duckdb_path}")


def test_query_json_matches_hand_written_sql(project, demo_duckdb_path):
    out = run("query", "--project", str(project), "-m", "accuracy", "-m", "precision", "-b", "predictions.model_version",
              "--as-of", "2026-02-25T12:00:00", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows and set(rows[0]) == {"predictions.model_version", "accuracy", "precision"}
    with duckdb.connect(str(demo_duckdb_path)) as con:  # same config as the engines in this process
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
    assert ok.returncode == 0 and "9 metrics" in ok.stdout
    listing = run("list", "--project", str(project))
    assert "accuracy_3h (ratio) [window 3 hours, label delay 1 day]" in listing.stdout
