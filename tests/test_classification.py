"""`type: classification` metrics equal an independent computation, on DuckDB and PostgreSQL.

The reference reads the raw demo tables and computes every cell in plain Python (latest
prediction per lead, any conversion at or before as_of): nothing is taken from metrics_layer.
The demo data holds duplicate predictions and conversions, leads never predicted (a NULL model
version group whose ratios are NULL), conversions arriving days later (late labels: as_of
before they arrive counts them negative) and a 5-hour outage (hours with no rows).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict

import pytest

import reference
from conftest import make_project
from metrics_layer.project import load_project
from metrics_layer.query import DimensionRef, SemanticQuery
from metrics_layer.service import MetricsService
from test_metrics_numbers import assert_same_rows, service  # noqa: F401 (the DuckDB + PostgreSQL fixture)

HOUR = DimensionRef("leads.created_at", "hour")
AS_OFS = [None, dt.datetime(2026, 2, 25, 12), dt.datetime(2026, 2, 10, 7, 30)]
CELLS = ("true_positives", "false_positives", "false_negatives", "true_negatives")
RATIOS = ("accuracy", "precision", "recall", "f1", "false_positive_rate", "log_loss", "brier_score")


def _rows(service, sql):
    return service.engine.execute(sql).rows


def lead_rows(service, as_of):
    """(created_at, model_version, label, score, converted) per lead, from the raw tables."""
    keep = (lambda t: True) if as_of is None else (lambda t: t <= as_of)
    latest = {}
    for lead_id, at, version, label, score in _rows(service, "SELECT lead_id, predicted_at, model_version, label, score FROM prediction_events"):
        if keep(at) and (lead_id not in latest or at > latest[lead_id][0]):
            latest[lead_id] = (at, version, label, score)
    converted = {lead_id for lead_id, at in _rows(service, "SELECT lead_id, converted_at FROM conversions") if keep(at)}
    result = []
    for lead_id, created in _rows(service, "SELECT id, created_at FROM leads"):
        if keep(created):
            _, version, label, score = latest.get(lead_id, (None, None, None, None))
            result.append((created, version, label, score, lead_id in converted))
    return result


def _div(a, b):
    return a / b if b else None


def classification_values(rows):
    """Every provided value over some lead rows, by the textbook definitions."""
    predicted = [r for r in rows if r[2] is not None]
    tp = sum(1 for r in predicted if r[2] == 1 and r[4])
    fp = sum(1 for r in predicted if r[2] == 1 and not r[4])
    fn = sum(1 for r in predicted if r[2] == 0 and r[4])
    tn = sum(1 for r in predicted if r[2] == 0 and not r[4])
    scored = [r for r in predicted if r[3] is not None]
    clip = lambda p: min(max(p, 1e-15), 1 - 1e-15)  # noqa: E731
    log_loss = _div(sum(-math.log(clip(r[3])) if r[4] else -math.log(1 - clip(r[3])) for r in scored), len(scored))
    brier = _div(sum(((1.0 if r[4] else 0.0) - r[3]) ** 2 for r in scored), len(scored))
    return {
        "predictions": len(predicted), "true_positives": tp, "false_positives": fp, "false_negatives": fn,
        "true_negatives": tn, "accuracy": _div(tp + tn, len(predicted)), "precision": _div(tp, tp + fp),
        "recall": _div(tp, tp + fn), "f1": _div(2 * tp, 2 * tp + fp + fn), "false_positive_rate": _div(fp, fp + tn),
        "log_loss": log_loss, "brier_score": brier,
    }


def _hour(t):
    return t.replace(minute=0, second=0, microsecond=0)


NAMES = ("predictions",) + CELLS + RATIOS


@pytest.mark.parametrize("as_of", AS_OFS, ids=["all-data", "as-of", "as-of-early"])
@pytest.mark.parametrize("by", [(), ("predictions.model_version",), (HOUR,), ("predictions.model_version", HOUR)],
                         ids=["overall", "by-version", "by-hour", "by-version-and-hour"])
def test_declared_metrics_equal_plain_python(service, by, as_of):
    metrics = tuple(f"conversion_model.{n}" for n in NAMES)
    result = service.run(SemanticQuery(metrics, by, as_of=as_of))
    groups = defaultdict(list)
    for row in lead_rows(service, as_of):
        key = tuple(row[1] if d == "predictions.model_version" else _hour(row[0]) for d in by)
        groups[key].append(row)
    expected = [key + tuple(classification_values(rows)[n] for n in NAMES) for key, rows in groups.items()]
    # A group with no predictions (leads never scored) counts 0 cells: its ratios are NULL.
    assert any(r[len(by)] == 0 for r in expected) or not by or by == (HOUR,)
    assert_same_rows(result.rows, expected, f"conversion_model by {by} as of {as_of}")


@pytest.mark.parametrize("as_of", AS_OFS[:2], ids=["all-data", "as-of"])
def test_declared_equal_the_demo_hand_written_ratios(service, as_of):
    """The declared accuracy/precision/recall equal the demo's hand-written metrics and reference SQL."""
    for by, names, sql in [
        (("predictions.model_version",), ("accuracy", "precision", "recall"), reference.conversion_metrics_by_model_version(as_of)),
        (("predictions.model_version", HOUR), ("accuracy", "precision"), reference.accuracy_precision_by_model_version_and_hour(as_of)),
    ]:
        declared = service.run(SemanticQuery(tuple(f"conversion_model.{n}" for n in names), by, as_of=as_of))
        hand = service.run(SemanticQuery(names, by, as_of=as_of))
        assert_same_rows(declared.rows, hand.rows, f"declared vs demo metrics by {by}")
        expected = [r[:len(by) + len(names)] for r in _rows(service, sql)]
        assert_same_rows(declared.rows, expected, f"declared vs reference SQL by {by}")


def test_windowed_declaration_equals_accuracy_3h(service):
    """window and label_delay carry over: conversion_3h.accuracy equals the demo's accuracy_3h."""
    for end in [dt.datetime(2026, 2, 25, 12), dt.datetime(2026, 2, 10, 7, 30), dt.datetime(2026, 2, 28, 23, 59, 59)]:
        declared = service.run(SemanticQuery(("conversion_3h.accuracy",), as_of=end))
        assert_same_rows(declared.rows, _rows(service, reference.accuracy_3h_at(end)), f"conversion_3h at {end}")
    series = service.run(SemanticQuery(("conversion_3h.accuracy",), (HOUR,)))
    assert_same_rows(series.rows, _rows(service, reference.accuracy_3h_by_hour()), "conversion_3h by hour")


COST_BY_VERSION_AND_DAY = """
WITH scores AS (
    SELECT transaction_id, model_version, is_fraud FROM (
        SELECT transaction_id, model_version, is_fraud,
               ROW_NUMBER() OVER (PARTITION BY transaction_id ORDER BY scored_at DESC) AS n
        FROM fraud_scores) s WHERE n = 1),
cb AS (SELECT DISTINCT transaction_id FROM chargebacks)
SELECT s.model_version, date_trunc('day', t.created_at) AS day,
       COALESCE(SUM(CASE WHEN s.is_fraud = 0 AND cb.transaction_id IS NOT NULL THEN t.amount END), 0)
         + 25 * COUNT(CASE WHEN s.is_fraud = 1 AND cb.transaction_id IS NULL THEN 1 END)
FROM transactions t LEFT JOIN scores s ON s.transaction_id = t.id LEFT JOIN cb ON cb.transaction_id = t.id
GROUP BY 1, 2
"""


def test_cost_equals_fraud_loss_and_hand_written_sql(service):
    by = ("fraud_scores.model_version", DimensionRef("transactions.created_at", "day"))
    declared = service.run(SemanticQuery(("fraud_model.cost",), by))
    hand = service.run(SemanticQuery(("fraud_loss",), by))
    assert_same_rows(declared.rows, hand.rows, "fraud_model.cost vs fraud_loss")
    assert_same_rows(declared.rows, _rows(service, COST_BY_VERSION_AND_DAY), "fraud_model.cost vs SQL")
    assert any(r[2] for r in declared.rows) and any(r[0] is None for r in declared.rows)


def test_declared_metrics_are_in_the_catalog(service):
    names = service.model.metric_names()
    for suffix in NAMES:
        assert f"conversion_model.{suffix}" in names
    assert "fraud_model.cost" in names and "conversion_model.cost" not in names
    # The demo's count of leads is reused: no extra count measure on leads.
    assert not [m for m in service.model.models["leads"].measures if m.endswith("__count")]


@pytest.mark.parametrize("end", [dt.datetime(2026, 2, 20, 12), dt.datetime(2026, 2, 25, 0, 0), dt.datetime(2026, 2, 28, 23, 59, 59),
                                 dt.datetime(2026, 2, 10, 7, 30)], ids=lambda d: d.isoformat())
def test_label_coverage_equals_plain_python_at_several_moments(service, end):
    """At E: the metric counts predictions of (E-1d-3h, E-1d]; the companions count those (mature),
    the ones with a conversion known at E (labelled) and every prediction of (E-1d-3h, E]."""
    window, delay = dt.timedelta(hours=3), dt.timedelta(days=1)
    predicted = [r for r in lead_rows(service, end) if r[2] is not None]
    since = [r for r in predicted if end - delay - window < r[0] <= end]
    mature = [r for r in since if r[0] <= end - delay]
    labelled = [r for r in mature if r[4]]
    for version in sorted({r[1] for r in predicted}):
        pick = lambda rows: [r for r in rows if r[1] == version]  # noqa: E731
        got = service.run(SemanticQuery(("conversion_3h.mature", "conversion_3h.labelled", "conversion_3h.coverage_predictions",
                                         "conversion_3h.coverage"), ("predictions.model_version",),
                                        filters=(), as_of=end))
        row = next((r for r in got.rows if r[0] == version), None)
        want = (version, len(pick(mature)), len(pick(labelled)), len(pick(since)), _div(len(pick(mature)), len(pick(since))))
        if row is None:  # a version with no lead in the reach is absent from the grouped result
            assert not pick(since)
            continue
        assert_same_rows([row], [want], f"coverage of {version} at {end}")
    total = service.run(SemanticQuery(("conversion_3h.mature", "conversion_3h.labelled", "conversion_3h.coverage_predictions",
                                       "conversion_3h.coverage"), as_of=end))
    assert_same_rows(total.rows, [(len(mature), len(labelled), len(since), _div(len(mature), len(since)))], f"coverage at {end}")



@pytest.mark.parametrize("end", [dt.datetime(2026, 2, 20, 12, 20), dt.datetime(2026, 2, 10, 7, 30)], ids=lambda d: d.isoformat())
def test_matured_share_per_hour_and_version_as_labels_come_in(service, end):
    """By hour of prediction and version, as of E: matured = that hour's predictions older than
    the 1-day delay at E, predicted = all of them, the share between: the hours of the last day
    are partly in (the hour E - 1 day falls in), older ones all in, newer ones not at all."""
    delay = dt.timedelta(days=1)
    predicted = [r for r in lead_rows(service, end) if r[2] is not None]
    counts = defaultdict(lambda: [0, 0])
    for r in predicted:
        key = (_hour(r[0]), r[1])
        counts[key][1] += 1
        counts[key][0] += r[0] <= end - delay
    want = sorted(((hour, version, m, n, _div(m, n)) for (hour, version), (m, n) in counts.items()),
                  key=lambda r: (r[0], r[1] is None, r[1] or ""))
    got = service.run(SemanticQuery(("conversion_3h.matured", "conversion_3h.predicted", "conversion_3h.matured_share"),
                                    (HOUR, "predictions.model_version"), as_of=end))
    rows = [(h, v, m, n, share) for h, v, m, n, share in got.rows if n]  # leads without a prediction: no share
    assert_same_rows(rows, want, f"matured share at {end}")
    shares = {share for *_, share in want}
    assert {0.0, 1.0} <= shares  # hours all in and hours not yet in, both present


def cbpe(rows):
    """Plain-Python CBPE: expected confusion cells as sums of the score over (label, score) rows."""
    scored = [(label, score) for label, score in rows if label is not None and score is not None]
    tp = sum(p for label, p in scored if label == 1)
    tn = sum(1 - p for label, p in scored if label == 0)
    fn = sum(p for label, p in scored if label == 0)
    positives = [p for label, p in scored if label == 1]
    return (_div(tp + tn, len(scored)), _div(tp, len(positives)), _div(tp, tp + fn))


ESTIMATES = ("conversion_3h.estimated_accuracy", "conversion_3h.estimated_precision", "conversion_3h.estimated_recall")


@pytest.mark.parametrize("end", [dt.datetime(2026, 2, 20, 12), dt.datetime(2026, 2, 28, 23, 59, 59)], ids=lambda d: d.isoformat())
def test_estimated_performance_equals_plain_python_cbpe(service, end):
    """Over the predictions younger than the 1-day label delay at E: (E - 1 day, E]."""
    young = [r for r in lead_rows(service, end) if r[2] is not None and end - dt.timedelta(days=1) < r[0] <= end]
    got = service.run(SemanticQuery(ESTIMATES, ("predictions.model_version",), as_of=end))
    expected = [(v,) + cbpe([(r[2], r[3]) for r in young if r[1] == v]) for v in {r[1] for r in young}]
    assert expected and all(e[1] is not None for e in expected)
    assert_same_rows([r for r in got.rows if r[0] is not None], expected, f"CBPE at {end}")


def test_estimate_converges_to_realized_on_calibrated_data(tmp_path):
    """Labels drawn with probability = score: the estimate approaches the realized accuracy."""
    import random

    import duckdb

    rng = random.Random(7)
    db = tmp_path / "cal.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE leads (id INTEGER, created_at TIMESTAMP)")
        con.execute("CREATE TABLE prediction_events (lead_id INTEGER, predicted_at TIMESTAMP, model_version TEXT, label INTEGER, score DOUBLE)")
        con.execute("CREATE TABLE conversions (lead_id INTEGER, converted_at TIMESTAMP)")
        leads, preds, convs = [], [], []
        start = dt.datetime(2026, 1, 1)
        for i in range(20_000):
            at = start + dt.timedelta(seconds=4 * i)  # 20k leads within ~22 hours: all younger than the delay
            p = rng.random()
            leads.append((i, at))
            preds.append((i, at, "v1", int(p >= 0.5), p))
            if rng.random() < p:
                convs.append((i, at + dt.timedelta(days=2)))  # the label arrives after the delay
        con.executemany("INSERT INTO leads VALUES (?, ?)", leads)
        con.executemany("INSERT INTO prediction_events VALUES (?, ?, ?, ?, ?)", preds)
        con.executemany("INSERT INTO conversions VALUES (?, ?)", convs)
    folder = make_project(tmp_path / "p", f"duckdb:///{db}")
    svc = MetricsService(load_project(folder))
    try:
        end = start + dt.timedelta(hours=23)
        estimate = svc.run(SemanticQuery(("conversion_3h.estimated_accuracy",), as_of=end)).rows[0][0]
        later = end + dt.timedelta(days=3)  # every label in; the same leads realized with no delay
        realized = svc.run(SemanticQuery(("conversion_model.accuracy",), as_of=later)).rows[0][0]
        assert abs(estimate - realized) < 0.015, (estimate, realized)
        assert abs(estimate - 0.75) < 0.01  # E[max(p, 1-p)] for p uniform
    finally:
        svc.engine.close()
