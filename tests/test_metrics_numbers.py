"""The compiled queries' numbers equal independent hand-written SQL, on DuckDB and PostgreSQL.

The demo data holds duplicate predictions and scores, leads never predicted, conversions
that arrive days later, duplicate conversions and chargebacks, and a 5-hour outage with no
leads (empty buckets), so the edge cases bite.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math

import pytest

import reference
from conftest import make_project
from metrics_layer.project import load_project
from metrics_layer.query import DimensionRef, SemanticQuery
from metrics_layer.service import MetricsService

AS_OF = dt.datetime(2026, 2, 25, 12, 0, 0)
HOUR = DimensionRef("leads.created_at", "hour")

# (name, semantic query, reference SQL builder(as_of) -> SQL)
CASES = [
    ("overall", lambda a: SemanticQuery(("leads.lead_count", "accuracy", "precision", "recall", "f1", "conversion_rate"), as_of=a),
     lambda a: reference.conversion_metrics(a)),
    ("by_model_version", lambda a: SemanticQuery(("accuracy", "precision", "recall", "f1"), ("predictions.model_version",), as_of=a),
     lambda a: reference.conversion_metrics_by_model_version(a)),
    ("by_hour", lambda a: SemanticQuery(("accuracy", "precision", "recall"), (HOUR,), as_of=a),
     lambda a: reference.conversion_metrics_by_hour(a)),
    ("by_model_version_and_hour", lambda a: SemanticQuery(("accuracy", "precision"), ("predictions.model_version", HOUR), as_of=a),
     lambda a: reference.accuracy_precision_by_model_version_and_hour(a)),
    ("by_utm_source", lambda a: SemanticQuery(("conversion_rate", "leads.lead_count"), ("leads.utm_source",), as_of=a),
     lambda a: reference.conversion_by_utm_source(a)),
    ("accuracy_3h_rolling_by_hour", lambda a: SemanticQuery(("accuracy_3h",), (HOUR,), as_of=a),
     lambda a: reference.accuracy_3h_by_hour(a)),
    ("fraud_overall", lambda a: SemanticQuery(("transactions.missed_fraud_amount", "transactions.false_alarms", "fraud_loss", "fraud_precision", "fraud_recall"), as_of=a),
     lambda a: reference.fraud_metrics(a)),
    ("fraud_by_merchant_category", lambda a: SemanticQuery(("fraud_loss", "transactions.missed_fraud_amount", "transactions.false_alarms"), ("transactions.merchant_category",), as_of=a),
     lambda a: reference.fraud_by_merchant_category(a)),
    ("fraud_by_hour", lambda a: SemanticQuery(("fraud_loss", "transactions.missed_fraud_amount", "transactions.false_alarms"), (DimensionRef("transactions.created_at", "hour"),), as_of=a),
     lambda a: reference.fraud_by_time("hour", a)),
    ("fraud_by_model_version_and_day", lambda a: SemanticQuery(("fraud_loss", "fraud_precision"), ("fraud_scores.model_version", DimensionRef("transactions.created_at", "day")), as_of=a),
     lambda a: reference.fraud_by_model_version_and_day(a)),
]

# The trailing window as a current value needs an end: as_of moments inside the data,
# one of them with its window inside the outage (no leads: NULL) and one right after it.
WINDOW_ENDS = [AS_OF, dt.datetime(2026, 2, 10, 7, 30), dt.datetime(2026, 2, 28, 23, 59, 59)]


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def service(request, tmp_path_factory):
    if request.param == "duckdb":
        url = f"duckdb:///{request.getfixturevalue('demo_duckdb_path')}"
    else:
        url = request.getfixturevalue("demo_postgres_url")
    project = load_project(make_project(tmp_path_factory.mktemp("project"), url))
    svc = MetricsService(project)
    yield svc
    svc.engine.close()


def _normalise(value):
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def _sort_key(row):
    return tuple((v is None, v if v is not None else 0) if not isinstance(v, str) else (False, v) for v in row)


def assert_same_rows(actual, expected, label):
    actual = sorted((tuple(_normalise(v) for v in r) for r in actual), key=lambda r: [(v is None, str(type(v)), v if v is not None else 0) for v in r])
    expected = sorted((tuple(_normalise(v) for v in r) for r in expected), key=lambda r: [(v is None, str(type(v)), v if v is not None else 0) for v in r])
    assert len(actual) == len(expected), f"{label}: {len(actual)} rows, hand-written SQL gives {len(expected)}"
    for got, want in zip(actual, expected):
        assert len(got) == len(want), f"{label}: columns differ: {got} vs {want}"
        for g, w in zip(got, want):
            if isinstance(w, float) or isinstance(g, float):
                assert g is not None and w is not None and math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9), f"{label}: {got} != {want}"
            else:
                assert g == w, f"{label}: {got} != {want}"


@pytest.mark.parametrize("as_of", [None, AS_OF], ids=["all-data", "as-of"])
@pytest.mark.parametrize("name,semantic,hand_written", CASES, ids=[c[0] for c in CASES])
def test_metric_equals_hand_written_sql(service, name, semantic, hand_written, as_of):
    result = service.run(semantic(as_of))
    expected = service.engine.execute(hand_written(as_of))
    assert result.rows, f"{name}: no rows; the demo data should produce some"
    assert_same_rows(result.rows, expected.rows, name)


@pytest.mark.parametrize("end", WINDOW_ENDS, ids=lambda d: d.isoformat())
def test_trailing_window_current_value(service, end):
    result = service.run(SemanticQuery(("accuracy_3h",), as_of=end))
    expected = service.engine.execute(reference.accuracy_3h_at(end))
    assert_same_rows(result.rows, expected.rows, f"accuracy_3h at {end}")


def test_window_override_and_empty_window(service):
    """A query's window override replaces the metric's; a window inside the outage is NULL."""
    end = dt.datetime(2026, 2, 20, 12)
    result = service.run(SemanticQuery(("accuracy",), window="6 hours", as_of=end))
    expected = service.engine.execute(reference.trailing_accuracy_at(end, "6 hours", "0 hours", "accuracy"))
    assert_same_rows(result.rows, expected.rows, "accuracy over 6 hours")


def test_edge_cases_are_in_the_data(service):
    """Guard: the generated data really holds the cases the comparisons rely on."""
    run = service.engine.execute
    assert run("SELECT COUNT(*) FROM (SELECT lead_id FROM prediction_events GROUP BY lead_id HAVING COUNT(*) > 1) d").rows[0][0] > 0
    assert run("SELECT COUNT(*) FROM leads WHERE id NOT IN (SELECT lead_id FROM prediction_events)").rows[0][0] > 0
    assert run("SELECT COUNT(*) FROM conversions c JOIN leads l ON l.id = c.lead_id WHERE c.converted_at > l.created_at + INTERVAL '1 day'").rows[0][0] > 0
    rolling = service.run(SemanticQuery(("accuracy_3h", "leads.lead_count"), (HOUR,)))
    assert [r for r in rolling.rows if r[1] is None], "some hours' windows should hold no lead"
    assert [r for r in rolling.rows if r[2] == 0], "an hour of the outage counts 0 leads, not NULL"
    plain = service.run(SemanticQuery(("leads.lead_count",), (HOUR,)))
    assert len(plain.rows) < len(rolling.rows), "plain hourly grouping skips the outage's empty hours"


THREE_MODELS_BY_SOURCE = """
WITH conv AS (
    SELECT lead_id, revenue FROM (
        SELECT lead_id, revenue, ROW_NUMBER() OVER (PARTITION BY lead_id ORDER BY converted_at) AS n FROM conversions) c
    WHERE n = 1),
pred AS (
    SELECT lead_id, score FROM (
        SELECT lead_id, score, ROW_NUMBER() OVER (PARTITION BY lead_id ORDER BY predicted_at DESC) AS n FROM prediction_events) p
    WHERE n = 1)
SELECT l.utm_source, COUNT(*), SUM(conv.revenue), AVG(pred.score)
FROM leads l LEFT JOIN conv ON conv.lead_id = l.id LEFT JOIN pred ON pred.lead_id = l.id
GROUP BY l.utm_source
"""


def test_measures_of_three_models_in_one_query(service):
    """Each model's measure is aggregated at its own grain, then joined on the dimension values."""
    query = SemanticQuery(("leads.lead_count", "conversions.revenue", "predictions.avg_score"), ("leads.utm_source",))
    assert_same_rows(service.run(query).rows, service.engine.execute(THREE_MODELS_BY_SOURCE).rows, "three models")
    overall = service.run(SemanticQuery(("leads.lead_count", "conversions.revenue", "predictions.avg_score")))
    expected = service.engine.execute(f"SELECT COUNT(*), SUM(revenue), AVG(score) FROM ({THREE_MODELS_BY_SOURCE.replace('GROUP BY l.utm_source', '').replace('SELECT l.utm_source, COUNT(*), SUM(conv.revenue), AVG(pred.score)', 'SELECT l.id, conv.revenue, pred.score')}) t")
    assert_same_rows(overall.rows, expected.rows, "three models, no dimensions")
