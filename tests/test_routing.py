"""Routing: a query read from a stored materialization gives the same rows as over the base tables.

The demo's materializations are stored here by running their SELECT into a table (what
`deploy` does on DuckDB), on DuckDB and PostgreSQL; every query below runs both ways and the
rows must be equal. Queries a materialization cannot answer exactly must not be routed, and
say why.
"""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import REPO, make_project
from metrics_layer.compile import Route, explain_query
from metrics_layer.compile.compiler import compile_materialization
from metrics_layer.model import load_model
from metrics_layer.project import load_project
from metrics_layer.query import DimensionRef, Filter, SemanticQuery, TopGroups
from metrics_layer.service import MetricsService
from test_metrics_numbers import assert_same_rows

SCHEMA = f"ml_routes_{os.getpid()}"
HOUR, DAY = DimensionRef("leads.created_at", "hour"), DimensionRef("leads.created_at", "day")
VERSION = DimensionRef("predictions.model_version")

ROUTED = {  # query -> the materialization that must answer it
    "accuracy by version": (SemanticQuery(("accuracy", "precision"), (VERSION,)), "conversion_by_model_version"),
    "overall": (SemanticQuery(("accuracy", "leads.lead_count", "accuracy_3h")), "conversion_now"),
    "overall, re-aggregated": (SemanticQuery(("precision", "leads.lead_count"), filters=(
        Filter("predictions.model_version", "!=", "v2"),)), "conversion_by_model_version"),
    "one version": (SemanticQuery(("precision",), filters=(Filter("predictions.model_version", "=", "v1"),)), "conversion_by_model_version"),
    "versions in a list": (SemanticQuery(("accuracy",), (VERSION,), filters=(Filter("predictions.model_version", "in", ("v1", "v3")),)), "conversion_by_model_version"),
    "hourly series": (SemanticQuery(("accuracy_3h", "leads.lead_count"), (HOUR,)), "accuracy_hourly"),
    "hourly, one group of two": (SemanticQuery(("accuracy",), (HOUR,)), "accuracy_hourly"),
    "daily from hourly": (SemanticQuery(("accuracy", "leads.lead_count"), (DAY,)), "accuracy_hourly"),
    "daily from hourly, aligned range": (SemanticQuery(("leads.lead_count",), (DAY,), filters=(
        Filter("leads.created_at", ">=", "2026-02-20"), Filter("leads.created_at", "<", "2026-02-23"))), "accuracy_hourly"),
    "hourly series, range": (SemanticQuery(("accuracy_3h",), (HOUR,), filters=(
        Filter("leads.created_at", ">=", "2026-02-20 05:00:00"), Filter("leads.created_at", "<", "2026-02-21"))), "accuracy_hourly"),
    "month from hourly": (SemanticQuery(("accuracy",), (DimensionRef("leads.created_at", "month"),)), "accuracy_hourly"),
    "metric filter and order": (SemanticQuery(("accuracy",), (DAY,), filters=(Filter("accuracy", ">", 0.8),),
                                              order_by=(), limit=5), "accuracy_hourly"),
}

NOT_ROUTED = {  # query -> words the reason for the closest materialization must hold
    "a metric not stored": (SemanticQuery(("recall",), (VERSION,)), "does not store"),
    "a dimension not stored": (SemanticQuery(("accuracy",), (DimensionRef("leads.utm_source"),)), "does not store leads.utm_source"),
    "rolling at another grain": (SemanticQuery(("accuracy_3h",), (DAY,)), "does not store"),
    "a range inside a bucket": (SemanticQuery(("leads.lead_count",), (DAY,), filters=(Filter("leads.created_at", ">=", "2026-02-20 00:30:00"),)), "filter on leads.created_at"),
    "as_of": (SemanticQuery(("accuracy",), (VERSION,), as_of="2026-02-25T00:00:00"), "as_of"),
    "another window": (SemanticQuery(("accuracy",), (VERSION,), window="6 hours"), "does not store"),
    # answerable by conversion_by_model_version but for its top groups restriction (a series limit)
    "top groups": (SemanticQuery(("accuracy", "precision"), (VERSION,), top=TopGroups((VERSION,), "precision", 2)), "top groups"),
}


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def stored(request, tmp_path_factory):
    """(service, routes): the demo with its materializations stored as tables in SCHEMA."""
    if request.param == "duckdb":
        path = tmp_path_factory.mktemp("routing") / "demo.duckdb"
        shutil.copyfile(request.getfixturevalue("demo_duckdb_path"), path)
        url = f"duckdb:///{path}"
    else:
        url = request.getfixturevalue("demo_postgres_url")
    svc = MetricsService(load_project(make_project(tmp_path_factory.mktemp("routing_project"), url, "result_cache: false\n")))
    svc.read_only_engine = False  # the materializations are stored through it
    model = svc.model

    def ddl(sql: str) -> None:  # the engines run queries; DDL goes to the database directly
        if request.param == "duckdb":
            svc.engine.execute(sql)
        else:
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql)

    ddl(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
    routes = []
    for name in model.materializations:
        select = compile_materialization(model, name, svc.dialect).sql(dialect=svc.dialect)
        ddl(f'CREATE TABLE "{SCHEMA}"."{name}" AS {select}')
        routes.append(Route(name, SCHEMA, name))
    yield svc, tuple(routes)
    ddl(f'DROP SCHEMA "{SCHEMA}" CASCADE')
    svc.engine.close()


def _run(svc, query, routes):
    compiled = explain_query(svc.model, query, svc.dialect, routes)
    return compiled, svc.engine.execute(compiled.sql).rows


@pytest.mark.parametrize("label", ROUTED)
def test_routed_query_equals_the_base_tables(stored, label):
    svc, routes = stored
    query, expected_route = ROUTED[label]
    routed, rows = _run(svc, query, routes)
    assert routed.materialization == expected_route, routed.not_used
    assert f'"{SCHEMA}"' in routed.sql and " leads " not in routed.sql.lower()
    base, base_rows = _run(svc, query, ())
    assert base.materialization is None
    if query.limit is None:
        assert_same_rows(rows, base_rows, label)
    else:
        assert rows == base_rows
    assert rows, f"{label}: the demo should give rows"


@pytest.mark.parametrize("label", NOT_ROUTED)
def test_query_not_answerable_exactly_is_not_routed(stored, label):
    svc, routes = stored
    query, reason = NOT_ROUTED[label]
    compiled, rows = _run(svc, query, routes)
    assert compiled.materialization is None
    reasons = dict(compiled.not_used)
    assert set(reasons) == {r.name for r in routes}
    assert any(reason in why for why in reasons.values()), reasons
    assert_same_rows(rows, _run(svc, query, ())[1], label)


def test_streaming_dialects_read_materializations_too():
    """The routed SELECT is plain SQL over the stored columns on every dialect."""
    model = load_model(REPO / "metrics")
    routes = (Route("accuracy_hourly", "metrics_layer", "accuracy_hourly"),)
    for dialect in ("materialize", "risingwave"):
        compiled = explain_query(model, SemanticQuery(("accuracy",), (DAY,)), dialect, routes)
        assert compiled.materialization == "accuracy_hourly"
        assert '"metrics_layer"."accuracy_hourly"' in compiled.sql and "GROUP BY" in compiled.sql


def test_validate_refuses_a_materialization_a_streaming_engine_cannot_store(tmp_path):
    import subprocess
    import sys

    folder = make_project(tmp_path / "mz", "materialize://user@127.0.0.1:1/db")
    with open(folder / "metrics" / "amounts.yml", "w") as f:  # fraud.yml has a materializations: section already
        f.write("materializations:\n  - name: amounts\n    metrics: [transactions.median_amount]\n"
                "    dimensions: [transactions.merchant_category]\n")
    out = subprocess.run([sys.executable, "-m", "metrics_layer.cli", "validate", str(folder), "--offline"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "amounts.yml:" in out.stderr and "materialization 'amounts' cannot be stored on materialize" in out.stderr
    assert "median" in out.stderr
