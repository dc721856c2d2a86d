"""The on-disk model cache (model/cache.py) and what the CLI imports.

Behaviour only, never time: the cache is used (a hit counter, and a model equal to a fresh
load), a change to any YAML file is seen, a corrupt cache file is ignored and rewritten, a
model that fails validation is never stored; and the CLI's read-only commands import no
HTTP, GraphQL or SQL-endpoint module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, make_project
from metrics_layer.compile import compile_query
from metrics_layer.model import ValidationFailed, load_model
from metrics_layer.model import cache
from metrics_layer.query import DimensionRef, SemanticQuery

QUERY = SemanticQuery(metrics=("accuracy_3h",), dimensions=(DimensionRef("leads.created_at", "hour"),), as_of="2026-02-25T12:00:00")
EXTRA_METRIC = """
  - name: lead_total_for_cache_test
    description: counts leads
    measure: leads.lead_count
"""


def _metrics_file(folder):
    files = sorted((folder / "metrics").rglob("*.yml")) + sorted((folder / "metrics").rglob("*.yaml"))
    return next(f for f in files if "\nmetrics:" in "\n" + f.read_text())


def _counts():
    return dict(cache.stats)


def _delta(before):
    return {k: cache.stats[k] - before[k] for k in before}


def test_a_repeated_load_reads_the_cache_and_compiles_the_same(tmp_path):
    project = make_project(tmp_path / "p", "duckdb:///x.duckdb")
    store = tmp_path / "cache"
    before = _counts()
    first = cache.load_model_cached(project / "metrics", store)
    assert _delta(before) == {"hit": 0, "miss": 1, "unreadable": 0}
    assert len(list(store.glob("model-*.pickle"))) == 1
    before = _counts()
    second = cache.load_model_cached(project / "metrics", store)
    assert _delta(before) == {"hit": 1, "miss": 0, "unreadable": 0}
    assert second is not first
    fresh = load_model(project / "metrics")
    assert second.models.keys() == fresh.models.keys() and second.metrics.keys() == fresh.metrics.keys()
    for dialect in ("duckdb", "postgres", "materialize", "risingwave"):
        assert compile_query(second, QUERY, dialect) == compile_query(fresh, QUERY, dialect)


def test_any_change_to_the_yaml_is_seen(tmp_path):
    project = make_project(tmp_path / "p", "duckdb:///x.duckdb")
    store = tmp_path / "cache"
    cache.load_model_cached(project / "metrics", store)
    target = _metrics_file(project)
    target.write_text(target.read_text().replace("\nmetrics:\n", "\nmetrics:\n" + EXTRA_METRIC.lstrip("\n"), 1))
    before = _counts()
    changed = cache.load_model_cached(project / "metrics", store)
    assert _delta(before)["miss"] == 1
    assert "lead_total_for_cache_test" in changed.metrics
    # A one-byte edit (the description) is a new key too.
    target.write_text(target.read_text().replace("counts leads", "counts Leads"))
    before = _counts()
    again = cache.load_model_cached(project / "metrics", store)
    assert _delta(before)["miss"] == 1
    assert again.metrics["lead_total_for_cache_test"].description == "counts Leads"
    # A new file in the folder is part of the key.
    (project / "metrics" / "zz_more.yml").write_text("metrics:\n  - name: other_total\n    measure: leads.lead_count\n")
    before = _counts()
    assert "other_total" in cache.load_model_cached(project / "metrics", store).metrics
    assert _delta(before)["miss"] == 1


@pytest.mark.parametrize("garbage", [b"", b"not a pickle", b"\x80\x05\x95\xff\xff\xff\x00"])
def test_a_corrupt_cache_file_is_ignored_and_rewritten(tmp_path, garbage):
    project = make_project(tmp_path / "p", "duckdb:///x.duckdb")
    store = tmp_path / "cache"
    cache.load_model_cached(project / "metrics", store)
    (path,) = store.glob("model-*.pickle")
    path.write_bytes(garbage)
    before = _counts()
    model = cache.load_model_cached(project / "metrics", store)
    assert _delta(before) == {"hit": 0, "miss": 1, "unreadable": 1}
    assert compile_query(model, QUERY) == compile_query(load_model(project / "metrics"), QUERY)
    before = _counts()
    cache.load_model_cached(project / "metrics", store)
    assert _delta(before) == {"hit": 1, "miss": 0, "unreadable": 0}


def test_a_model_that_fails_validation_is_not_stored(tmp_path):
    project = make_project(tmp_path / "p", "duckdb:///x.duckdb")
    store = tmp_path / "cache"
    target = _metrics_file(project)
    broken = "  - name: broken\n    measure: leads.no_such_measure\n"
    target.write_text(target.read_text().replace("\nmetrics:\n", "\nmetrics:\n" + broken, 1))
    for _ in range(2):
        with pytest.raises(ValidationFailed) as e:
            cache.load_model_cached(project / "metrics", store)
        assert "no_such_measure" in str(e.value)
    assert not list(store.glob("model-*.pickle"))


def _cli(*args, home):
    return subprocess.run([sys.executable, "-m", "metrics_layer.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "METRICS_LAYER_HOME": str(home)}, cwd=REPO)


def test_the_cli_caches_under_metrics_layer_home_and_sees_edits(tmp_path):
    project = make_project(tmp_path / "p", "duckdb:///x.duckdb")
    home = tmp_path / "home"
    out = _cli("compile", "--project", str(project), "--dialect", "duckdb", "-m", "accuracy", home=home)
    assert out.returncode == 0, out.stderr
    assert len(list((home / "cache").glob("model-*.pickle"))) == 1
    again = _cli("compile", "--project", str(project), "--dialect", "duckdb", "-m", "accuracy", home=home)
    assert again.stdout == out.stdout
    assert len(list((home / "cache").glob("model-*.pickle"))) == 1  # the same key: no new file
    target = _metrics_file(project)
    target.write_text(target.read_text().replace("\nmetrics:\n", "\nmetrics:\n" + EXTRA_METRIC.lstrip("\n"), 1))
    listed = _cli("list", "--project", str(project), home=home)
    assert listed.returncode == 0, listed.stderr
    assert "lead_total_for_cache_test" in listed.stdout


_HEAVY = ("fastapi", "uvicorn", "starlette", "graphql", "pydantic", "httpx", "metrics_layer.serve")


@pytest.mark.parametrize("args", [
    ["validate", "--offline"],
    ["list"],
    ["compile", "--dialect", "duckdb", "-m", "accuracy_3h", "-b", "leads.created_at:hour", "--as-of", "2026-02-25T12:00:00"],
    ["query", "-m", "accuracy", "--format", "json"],
])
def test_read_only_commands_import_no_server_stack(tmp_path, demo_duckdb_path, args):
    project = make_project(tmp_path / "p", f"duckdb:///{demo_duckdb_path}")
    script = (
        "import sys, json\n"
        "import metrics_layer.cli as cli\n"
        f"code = cli.main({json.dumps([*args, '--project', str(project)])})\n"
        f"heavy = sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {_HEAVY!r}))\n"
        "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "METRICS_LAYER_HOME": str(tmp_path / "home")}, cwd=REPO, timeout=120)
    report = json.loads(out.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, out.stderr


@pytest.mark.parametrize("args", [["compile", "-m", "accuracy_3h"], ["query", "-m", "accuracy", "--format", "json"]])
def test_with_a_warm_cache_the_loader_is_not_imported(tmp_path, demo_duckdb_path, args):
    """A cache hit needs neither the YAML loader and its validation nor the schema check."""
    project = make_project(tmp_path / "p", f"duckdb:///{demo_duckdb_path}")
    loader = ("metrics_layer.model.load", "metrics_layer.model.classification", "metrics_layer.model.schema_check",
              "metrics_layer.model.yaml_source")
    script = (
        "import sys, json\n"
        "import metrics_layer.cli as cli\n"
        f"code = cli.main({json.dumps([*args, '--project', str(project)])})\n"
        f"print(json.dumps({{'code': code, 'loaded': sorted(m for m in {loader!r} if m in sys.modules)}}), file=sys.stderr)\n"
    )
    reports = []
    for _ in range(2):  # the first run fills the cache
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env={**os.environ, "METRICS_LAYER_HOME": str(tmp_path / "home")}, cwd=REPO, timeout=120)
        reports.append(json.loads(out.stderr.strip().splitlines()[-1]))
    assert reports[0]["code"] == 0 and "metrics_layer.model.load" in reports[0]["loaded"]
    assert reports[1] == {"code": 0, "loaded": []}, reports
