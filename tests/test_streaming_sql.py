"""Streaming dialects: the trailing window becomes the engine's own temporal filter.

Neither Materialize nor RisingWave runs on this machine, so the compiled SQL is checked
three ways: it equals a reviewed golden file, it parses back with sqlglot in that dialect,
and its temporal filters have the form each engine can maintain incrementally.
Regenerate the golden files after a deliberate change with UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from conftest import REPO
from metrics_layer.compile import compile_query
from metrics_layer.model import load_model
from metrics_layer.query import DimensionRef, SemanticQuery

GOLDEN = Path(__file__).parent / "golden" / "streaming"
QUERIES = {
    "accuracy_3h": SemanticQuery(("accuracy_3h",)),
    "accuracy_3h_by_model_version": SemanticQuery(("accuracy_3h", "accuracy"), (DimensionRef("predictions.model_version"),)),
    "fraud_loss_by_category": SemanticQuery(("fraud_loss",), ("transactions.merchant_category",)),
}


@pytest.fixture(scope="module")
def model():
    return load_model(REPO / "metrics")


def _where_conditions(select: exp.Select) -> list[exp.Expression]:
    where = select.args.get("where")
    if where is None:
        return []
    return list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]


@pytest.mark.parametrize("dialect", ["materialize", "risingwave"])
@pytest.mark.parametrize("name", QUERIES)
def test_matches_golden_and_parses(model, dialect, name):
    sql = compile_query(model, QUERIES[name], dialect)
    golden = GOLDEN / f"{name}.{dialect}.sql"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(sql + "\n")
    assert sql == golden.read_text().strip(), f"{golden.name} differs; review and regenerate with UPDATE_GOLDEN=1"
    parsed = sqlglot.parse_one(sql, read=dialect)
    assert parsed.sql(dialect=dialect)


def test_materialize_temporal_filter_form(model):
    sql = compile_query(model, QUERIES["accuracy_3h"], "materialize")
    parsed = sqlglot.parse_one(sql, read="materialize")
    calls = [f for f in parsed.find_all(exp.Anonymous) if f.name.lower() == "mz_now"]
    assert len(calls) == 2, sql
    for call in calls:
        comparison = call.parent
        # mz_now() stands alone on one side of a comparison, inside WHERE, with no arithmetic on it
        assert isinstance(comparison, (exp.LT, exp.LTE, exp.GT, exp.GTE)), comparison.sql()
        assert comparison.this is call
        assert not list(comparison.expression.find_all(exp.Anonymous)), comparison.sql()
        assert comparison.find_ancestor(exp.Where) is not None
        select = comparison.find_ancestor(exp.Select)
        assert comparison in [c for c in _where_conditions(select)] or any(comparison is c for c in _where_conditions(select))
        assert call.find_ancestor(exp.AggFunc) is None
    # the window (t - delay - window, t - delay] as Materialize wants it: mz_now() alone on one side
    assert "mz_now() < \"leads\".created_at + INTERVAL '27 hours'" in sql.replace("MZ_NOW", "mz_now")
    assert "mz_now() >= \"leads\".created_at + INTERVAL '1 day'" in sql.replace("MZ_NOW", "mz_now")
    assert "DISTINCT ON" in sql  # Materialize's idiomatic dedupe


def test_risingwave_temporal_filter_form(model):
    sql = compile_query(model, QUERIES["accuracy_3h"], "risingwave")
    parsed = sqlglot.parse_one(sql, read="risingwave")
    nows = [f for f in parsed.find_all(exp.Anonymous, exp.CurrentTimestamp) if f.sql("risingwave").upper().startswith(("NOW", "CURRENT_TIMESTAMP"))]
    assert len(nows) == 2, sql
    for now in nows:
        comparison = now.find_ancestor(exp.LT, exp.LTE, exp.GT, exp.GTE)
        assert comparison.find_ancestor(exp.Where) is not None
        utc = comparison.this  # the naive UTC column read as UTC, not in the session's time zone
        assert isinstance(utc, exp.AtTimeZone) and utc.args["zone"].name == "UTC", comparison.sql()
        assert not isinstance(comparison.parent, exp.Or)
    assert "ROW_NUMBER() OVER (PARTITION BY" in sql and "_row_rank = 1" in sql
    assert "NOW()" not in sql.split("FROM", 1)[0], "NOW() must not be in a SELECT list"


def test_same_yaml_runs_on_duckdb(model):
    """The YAML that compiles to streaming filters still compiles to plain SQL for DuckDB."""
    sql = compile_query(model, QUERIES["accuracy_3h"], "duckdb")
    assert "mz_now" not in sql.lower() and "AT TIME ZONE 'UTC'" in sql
