"""Dimensions only, including the model's primary key: the rows are returned without GROUP BY.

A primary key is unique and not null per row of its model (after dedupe), and joins never fan
out, so grouping by the key and attributes of it changes nothing. The SQL tests check when the
GROUP BY goes and when it must stay; the number tests check, on DuckDB and PostgreSQL, that the
rows still equal SELECT DISTINCT written by hand (filters, joins, dedupe, as_of, order, limit).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from conftest import make_project
from metrics_layer.compile import compile_query
from metrics_layer.model import load_model
from metrics_layer.project import load_project
from metrics_layer.query import DimensionRef, Filter, OrderBy, SemanticQuery
from metrics_layer.service import MetricsService
from test_metrics_numbers import assert_same_rows

# Added to the demo YAML. raw_leads is the SQL endpoint benchmark's model; latest_predictions
# is keyed by lead after its dedupe; doubled_leads has a dimension named `id` that is not the key;
# moments is keyed by a time (compile-only: created_at is not unique in the demo data).
EXTRA_YAML = """
models:
  - name: raw_leads
    table: leads
    entities: [{name: raw_lead, type: primary, expr: id}]
    dimensions:
      - {name: id, type: number}
      - {name: utm_source}
      - {name: created_at, type: time}
  - name: latest_predictions
    table: prediction_events
    dedupe: {key: [lead_id], keep: latest, by: predicted_at}
    entities: [{name: lead, type: primary, expr: lead_id}]
    dimensions:
      - {name: lead_id, type: number}
      - {name: model_version}
      - {name: label, type: number}
  - name: doubled_leads
    table: leads
    entities: [{name: doubled_lead, type: primary, expr: id}]
    dimensions:
      - {name: id, type: number, expr: id * 2}
      - {name: utm_source}
  - name: moments
    table: leads
    entities: [{name: moment, type: primary, expr: created_at}]
    dimensions:
      - {name: created_at, type: time}
      - {name: utm_source}
"""

DIALECTS = ["duckdb", "postgres", "materialize", "risingwave"]
AS_OF = dt.datetime(2026, 2, 25, 12, 0, 0)
RAW = ("raw_leads.id", "raw_leads.utm_source", "raw_leads.created_at")


def _project(folder: Path, engine_url: str) -> Path:
    project = make_project(folder, engine_url)
    (project / "metrics" / "primary_key.yml").write_text(EXTRA_YAML)
    return project


def _has_group_by(sql: str, dialect: str) -> bool:
    return any(True for _ in sqlglot.parse_one(sql, read=dialect).find_all(exp.Group))


# ---- the SQL ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(_project(tmp_path_factory.mktemp("pk_model"), "duckdb:///:memory:") / "metrics")


WITHOUT_GROUP_BY = {
    "key_and_attributes": SemanticQuery(dimensions=RAW),
    "key_last": SemanticQuery(dimensions=("raw_leads.utm_source", "raw_leads.id")),
    "key_as_entity_name": SemanticQuery(dimensions=("leads.lead", "leads.utm_source")),
    "filtered_ordered_limited": SemanticQuery(
        dimensions=RAW, filters=(Filter("raw_leads.utm_source", "=", "google"),),
        order_by=(OrderBy("raw_leads.created_at", True),), limit=10, offset=5, as_of=AS_OF),
    "joined_many_to_one": SemanticQuery(dimensions=("leads.lead", "predictions.model_version", "conversions.converted_at")),
    "deduped_model": SemanticQuery(dimensions=("latest_predictions.lead_id", "latest_predictions.model_version", "leads.utm_source")),
    "time_key_ungrained": SemanticQuery(dimensions=("moments.created_at", "moments.utm_source")),
}

WITH_GROUP_BY = {
    "key_absent": SemanticQuery(dimensions=("raw_leads.utm_source", "raw_leads.created_at")),
    "metric_asked": SemanticQuery(("leads.lead_count",), ("leads.lead", "leads.utm_source")),
    "metric_filter": SemanticQuery(dimensions=("leads.lead",), filters=(Filter("leads.lead_count", ">", 0),)),
    "key_with_grain": SemanticQuery(dimensions=(DimensionRef("moments.created_at", "hour"), "moments.utm_source")),
    "same_name_other_expr": SemanticQuery(dimensions=("doubled_leads.id", "doubled_leads.utm_source")),
    # rows come from predictions (the first dimension's model): the key of leads does not make them distinct
    "key_of_joined_model": SemanticQuery(dimensions=("predictions.model_version", "leads.lead")),
}


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("name", WITHOUT_GROUP_BY)
def test_primary_key_drops_group_by(model, name, dialect):
    sql = compile_query(model, WITHOUT_GROUP_BY[name], dialect)
    assert not _has_group_by(sql, dialect), sql
    assert sqlglot.parse_one(sql, read=dialect).sql(dialect=dialect)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("name", WITH_GROUP_BY)
def test_group_by_stays_without_ungrained_primary_key(model, name, dialect):
    sql = compile_query(model, WITH_GROUP_BY[name], dialect)
    assert _has_group_by(sql, dialect), sql


def test_everything_else_is_kept(model):
    query = WITHOUT_GROUP_BY["filtered_ordered_limited"]
    sql = compile_query(model, query, "duckdb")
    assert sql.startswith('SELECT d0 AS "raw_leads.id", d1 AS "raw_leads.utm_source", d2 AS "raw_leads.created_at" FROM ('), sql
    assert "WHERE \"raw_leads\".utm_source = 'google'" in sql
    assert sql.endswith("ORDER BY d2 DESC NULLS FIRST LIMIT 10 OFFSET 5"), sql
    deduped = compile_query(model, WITHOUT_GROUP_BY["deduped_model"], "duckdb")
    assert "QUALIFY ROW_NUMBER() OVER (PARTITION BY \"latest_predictions\".lead_id" in deduped, deduped


# ---- the numbers --------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def service(request, tmp_path_factory):
    if request.param == "duckdb":
        url = f"duckdb:///{request.getfixturevalue('demo_duckdb_path')}"
    else:
        url = request.getfixturevalue("demo_postgres_url")
    svc = MetricsService(load_project(_project(tmp_path_factory.mktemp("pk_project"), url)))
    yield svc
    svc.engine.close()


def _first(table: str, key: str, order: str, columns: str, where: str = "") -> str:
    """One row per key, the first by `order` (after `where`), written by hand."""
    return f"""(SELECT {columns} FROM (
        SELECT {columns}, ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY {order}) AS rn
        FROM {table} {where}) ranked WHERE rn = 1)"""


def _check(service, query: SemanticQuery, hand_written: str, ordered: bool = False):
    result = service.run(query)
    assert not _has_group_by(result.sql, "duckdb"), result.sql  # the optimized form is what is tested
    expected = service.engine.execute(hand_written)
    assert result.rows, "the demo data should give rows"
    assert [c.name for c in result.columns] == [d.label for d in query.dimensions]
    assert [c.type for c in result.columns] == [c.type for c in expected.columns]
    if ordered:
        assert result.rows == expected.rows
    else:
        assert_same_rows(result.rows, expected.rows, query.dimensions[0].name)


def test_filtered_rows_equal_select_distinct(service):
    query = SemanticQuery(dimensions=RAW, filters=(
        Filter("raw_leads.utm_source", "in", ("google", "newsletter")),
        Filter("raw_leads.created_at", ">=", "2026-02-20T00:00:00"),
    ))
    _check(service, query, """
        SELECT DISTINCT id, utm_source, created_at FROM leads
        WHERE utm_source IN ('google', 'newsletter') AND created_at >= TIMESTAMP '2026-02-20 00:00:00'""")


def test_ordered_limited_rows_equal_select_distinct(service):
    query = SemanticQuery(
        dimensions=RAW, filters=(Filter("raw_leads.utm_source", "is not null"),),
        order_by=(OrderBy("raw_leads.utm_source"), OrderBy("raw_leads.id", True)), limit=50, offset=10)
    _check(service, query, """
        SELECT DISTINCT id, utm_source, created_at FROM leads WHERE utm_source IS NOT NULL
        ORDER BY utm_source, id DESC LIMIT 50 OFFSET 10""", ordered=True)


@pytest.mark.parametrize("as_of", [None, AS_OF], ids=["all-data", "as-of"])
def test_joined_dimensions_equal_select_distinct(service, as_of):
    """leads -> predictions (deduped, latest) and conversions (deduped, earliest): many-to-one."""
    query = SemanticQuery(
        dimensions=("leads.lead", "leads.utm_source", "predictions.model_version", "conversions.converted_at"),
        filters=(Filter("leads.utm_source", "!=", "direct"),), as_of=as_of)
    upto = (lambda column: f"WHERE {column} <= TIMESTAMP '{as_of}'") if as_of else (lambda column: "")
    predictions = _first("prediction_events", "lead_id", "predicted_at DESC", "lead_id, model_version", upto("predicted_at"))
    conversions = _first("conversions", "lead_id", "converted_at", "lead_id, converted_at", upto("converted_at"))
    _check(service, query, f"""
        SELECT DISTINCT l.id, l.utm_source, p.model_version, c.converted_at
        FROM (SELECT * FROM leads {upto('created_at')}) l
        LEFT JOIN {predictions} p ON p.lead_id = l.id
        LEFT JOIN {conversions} c ON c.lead_id = l.id
        WHERE l.utm_source != 'direct'""")


def test_deduped_model_stays_deduplicated(service):
    """Keyed by lead after keeping each lead's latest prediction; a lead predicted twice is one row."""
    twice = service.engine.execute(
        "SELECT COUNT(*) FROM (SELECT lead_id FROM prediction_events GROUP BY lead_id HAVING COUNT(*) > 1) d").rows[0][0]
    assert twice > 0, "the demo data should hold leads predicted twice"
    query = SemanticQuery(
        dimensions=("latest_predictions.lead_id", "latest_predictions.model_version", "latest_predictions.label", "leads.utm_source"),
        filters=(Filter("latest_predictions.model_version", "=", "v2"),))
    latest = _first("prediction_events", "lead_id", "predicted_at DESC", "lead_id, model_version, label")
    _check(service, query, f"""
        SELECT DISTINCT p.lead_id, p.model_version, p.label, l.utm_source
        FROM {latest} p LEFT JOIN leads l ON l.id = p.lead_id
        WHERE p.model_version = 'v2'""")


def test_without_the_key_values_stay_distinct(service):
    query = SemanticQuery(dimensions=("raw_leads.utm_source",))
    result = service.run(query)
    assert _has_group_by(result.sql, "duckdb"), result.sql
    assert_same_rows(result.rows, service.engine.execute("SELECT DISTINCT utm_source FROM leads").rows, "utm_source")
