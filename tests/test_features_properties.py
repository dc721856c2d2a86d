"""Property-based tests of training sets (issue 11): random small data and random spines; every
spine row's value equals a plain-Python point-in-time evaluator written here.

The data hold duplicates (a lead predicted twice or converted twice, a transaction rescored or
charged back twice; never two events of one key at the same moment, so dedupe has no ties),
late labels (conversions and chargebacks a day or more after the row), events of keys that are
not in the base table, and rows with no time. Spine times sit exactly on data times, on window
bounds (a lead's time + the 1-day label delay, + delay + 3 hours) and a second either side of
them, before all data, and repeat (equal spine times); keyed spines add keys with no rows and
NULL keys. Both forms of compile/spine.py are exercised: the cumulative form (counts and sums,
over base models with a primary key and over deduplicated ones: predictions `latest`,
conversions `earliest`) and the range join (an avg).

Runs on DuckDB (HYPOTHESIS_PROFILE "ci": 80 examples per property) and, with fewer examples,
on the local PostgreSQL (in CI a missing server fails the test).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PG_URL, postgres_or_skip
from metrics_layer.demo_data import TABLES
from metrics_layer.engines.duckdb_engine import DuckDBEngine
from metrics_layer.features import training_set
from metrics_layer.model import load_model
from metrics_layer.project import Project
from metrics_layer.service import MetricsService

REPO = Path(__file__).resolve().parent.parent
MODEL = load_model(REPO / "metrics")

_COMMON = dict(deadline=None, print_blob=True, database=None)
settings.register_profile("ci", max_examples=80, derandomize=True, **_COMMON)
settings.register_profile("dev", max_examples=15, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=1500, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(weight: float) -> settings:
    return settings(PROFILE, max_examples=max(1, int(PROFILE.max_examples * weight)))


BASE = dt.datetime(2026, 3, 1)
SECOND, HOUR, DAY = dt.timedelta(seconds=1), dt.timedelta(hours=1), dt.timedelta(days=1)
DELAY, WINDOW = DAY, 3 * HOUR  # accuracy_3h, conversion_rate_fb_3h: (T - 27 h, T - 24 h]
NO_KEY = 999  # a key no table holds

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

_hours = st.one_of(st.integers(0, 3), st.integers(24, 28), st.integers(0, 60))
moments = st.builds(lambda h, s: BASE + h * HOUR + s * SECOND, _hours, st.sampled_from([0, 0, 0, 1, 1800, 3599]))
maybe_moment = st.one_of(moments, moments, moments, moments, st.none())  # a row without a time, sometimes
cents = st.integers(1, 99999).map(lambda c: Decimal(c).scaleb(-2))
# Seconds after the parent row; a key's events get distinct delays (no dedupe ties).
PREDICTION_DELAYS = [0, 1, 3600, 3 * 3600, DAY.seconds + 86400, 86400 + 2 * 3600, 60]
CONVERSION_DELAYS = [3600, 0, 86400, 86400 + 3 * 3600, 2 * 86400, 86400 - 1, 5 * 86400]
SCORE_DELAYS = [1, 0, 3600, 86400, 2 * 86400]
CHARGEBACK_DELAYS = [86400, 0, 3600, 2 * 86400, 10 * 86400]


@dataclass
class Data:
    tables: dict[str, list[dict]]

    def times(self) -> list[dt.datetime]:
        return sorted({v for rows in self.tables.values() for r in rows for v in r.values() if isinstance(v, dt.datetime)})

    def __repr__(self) -> str:
        return "Data(" + "; ".join(f"{t}: {rows}" for t, rows in self.tables.items() if rows) + ")"


def _events(delays):
    return st.lists(st.sampled_from(delays), max_size=2, unique=True)


@st.composite
def data_sets(draw) -> Data:
    leads, predictions, conversions = [], [], []
    for lead_id in range(1, draw(st.integers(0, 7)) + 1):
        leads.append({"id": lead_id, "created_at": draw(maybe_moment),
                      "utm_source": draw(st.sampled_from(["facebook", "facebook", "google", None]))})
    parents = [(l["id"], l["created_at"] or draw(moments)) for l in leads]
    if draw(st.integers(0, 5)) == 5:  # events of a lead that is not in leads
        parents.append((len(leads) + 1, draw(moments)))
    for lead_id, created in parents:
        for delay in draw(_events(PREDICTION_DELAYS)):
            predictions.append({"event_id": len(predictions) + 1, "lead_id": lead_id, "predicted_at": created + delay * SECOND,
                                "model_version": "v1", "label": draw(st.sampled_from([0, 1])),
                                "score": draw(st.sampled_from([0.25, 0.5, 0.75]))})
        for delay in draw(_events(CONVERSION_DELAYS)):
            conversions.append({"id": len(conversions) + 1, "lead_id": lead_id, "converted_at": created + delay * SECOND,
                                "revenue": draw(cents)})
    transactions, scores, chargebacks = [], [], []
    for tx_id in range(1, draw(st.integers(0, 5)) + 1):
        transactions.append({"id": tx_id, "created_at": draw(maybe_moment), "merchant_category": "food", "amount": draw(cents)})
    for tx in transactions:
        created = tx["created_at"] or BASE
        for delay in draw(_events(SCORE_DELAYS)):
            scores.append({"id": len(scores) + 1, "transaction_id": tx["id"], "scored_at": created + delay * SECOND,
                           "model_version": "f1", "score": 0.5, "is_fraud": draw(st.sampled_from([0, 1]))})
        for delay in draw(_events(CHARGEBACK_DELAYS)):
            chargebacks.append({"id": len(chargebacks) + 1, "transaction_id": tx["id"],
                                "charged_back_at": created + delay * SECOND, "amount": tx["amount"]})
    return Data({"leads": leads, "prediction_events": predictions, "conversions": conversions,
                 "transactions": transactions, "fraud_scores": scores, "chargebacks": chargebacks})


def spine_times(data: Data):
    """Times on the data's moments and window bounds, a second either side, before all data."""
    anchors = data.times() or [BASE]
    near = st.builds(lambda a, shift, eps: a + shift + eps * SECOND, st.sampled_from(anchors),
                     st.sampled_from([dt.timedelta(0), DELAY, DELAY + WINDOW, DELAY + WINDOW / 2]),
                     st.sampled_from([0, 0, -1, 1]))
    return st.one_of(near, near, near, moments, st.just(BASE - 10 * DAY))


@st.composite
def spines(draw, data: Data, keys: list | None):
    times = draw(st.lists(spine_times(data), min_size=1, max_size=12))
    times += draw(st.lists(st.sampled_from(times), max_size=3))  # equal spine times
    times = draw(st.permutations(times))
    if keys is None:
        return times, None
    return times, [draw(st.sampled_from(keys + [NO_KEY, None])) for _ in times]


# ---------------------------------------------------------------------------------------------
# The point-in-time evaluator (plain Python)
# ---------------------------------------------------------------------------------------------

def _visible(rows, time_col, at):
    return [r for r in rows if r[time_col] is not None and r[time_col] <= at]


def _dedupe(rows, key, by, latest: bool) -> dict:
    """{key: row}: the latest (or earliest) row by `by` per key, among `rows` (already cut)."""
    kept = {}
    for r in sorted(rows, key=lambda r: r[by], reverse=latest):
        kept.setdefault(r[key], r)
    return kept


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else None


def reference(data: Data, at: dt.datetime, metric: str, key="all"):
    """The metric as SemanticQuery(metrics, as_of=at) means it, restricted to entity value `key`
    (key "all": global; None: a NULL key, which matches no row)."""
    t = data.tables

    def mine(value) -> bool:
        return key == "all" or (key is not None and value == key)

    if metric in ("accuracy_3h", "conversion_rate_fb_3h", "conversion_rate", "leads.lead_count", "predictions.prediction_count",
                  "predictions.avg_score"):
        preds = _dedupe(_visible(t["prediction_events"], "predicted_at", at), "lead_id", "predicted_at", latest=True)
        convs = _dedupe(_visible(t["conversions"], "converted_at", at), "lead_id", "converted_at", latest=False)
        leads = [r for r in _visible(t["leads"], "created_at", at) if mine(r["id"])]
        window = [r for r in leads if at - DELAY - WINDOW < r["created_at"] <= at - DELAY]
        if metric == "leads.lead_count":
            return len({r["id"] for r in leads})
        if metric == "predictions.prediction_count":
            return len([k for k in preds if mine(k)])
        if metric == "predictions.avg_score":
            scores = [r["score"] for k, r in preds.items() if mine(k)]
            return sum(scores) / len(scores) if scores else None
        if metric == "conversion_rate":
            return _ratio(len([r for r in leads if r["id"] in convs]), len(leads))
        if metric == "conversion_rate_fb_3h":
            fb = [r for r in window if r["utm_source"] == "facebook"]
            return _ratio(len([r for r in fb if r["id"] in convs]), len(fb))
        predicted = [r for r in window if r["id"] in preds]
        right = [r for r in predicted if (preds[r["id"]]["label"] == 1) == (r["id"] in convs)]
        return _ratio(len(right), len(predicted))
    if metric == "conversions.revenue":
        convs = _dedupe(_visible(t["conversions"], "converted_at", at), "lead_id", "converted_at", latest=False)
        values = [r["revenue"] for k, r in convs.items() if mine(k)]
        return sum(values) if values else None
    scores = _dedupe(_visible(t["fraud_scores"], "scored_at", at), "transaction_id", "scored_at", latest=True)
    backs = _dedupe(_visible(t["chargebacks"], "charged_back_at", at), "transaction_id", "charged_back_at", latest=False)
    txs = [r for r in _visible(t["transactions"], "created_at", at) if mine(r["id"])]
    if metric == "transactions.amount":
        return sum(r["amount"] for r in txs) if txs else None
    flagged = [r for r in txs if r["id"] in scores and scores[r["id"]]["is_fraud"] == 1]
    if metric == "fraud_precision":
        return _ratio(len([r for r in flagged if r["id"] in backs]), len(flagged))
    raise AssertionError(metric)


# Each list is one training set. Counts and sums take the cumulative form; a group (the measures
# of one base model and window) with an avg takes the range join, so the last list has
# prediction_count both ways in one run.
GLOBAL = (["accuracy_3h", "conversion_rate_fb_3h", "conversion_rate", "leads.lead_count", "predictions.prediction_count",
           "conversions.revenue", "fraud_precision", "transactions.amount"],
          ["predictions.avg_score", "predictions.prediction_count", "accuracy_3h"])
BY_LEAD = (["accuracy_3h", "conversion_rate_fb_3h", "conversion_rate", "leads.lead_count", "predictions.prediction_count",
            "conversions.revenue"],
           ["predictions.avg_score", "predictions.prediction_count", "conversion_rate"])
BY_TRANSACTION = (["fraud_precision", "transactions.amount"],)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) < 1e-9


# ---------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------

def _sql_value(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, dt.datetime):
        return f"TIMESTAMP '{v.isoformat(sep=' ')}'"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return str(v)


def _load_statements(data: Data, kind: int) -> list[str]:
    """CREATE TABLE + INSERT for the demo's tables (`kind`: 1 DuckDB types, 2 PostgreSQL types)."""
    sql = []
    for table, columns in TABLES.items():
        sql.append(f"CREATE TABLE {table} ({', '.join(f'{c[0]} {c[kind]}' for c in columns)})")
        rows = data.tables.get(table, [])
        if rows:
            names = list(rows[0])
            values = ", ".join("(" + ", ".join(_sql_value(r[c]) for c in names) + ")" for r in rows)
            sql.append(f"INSERT INTO {table} ({', '.join(names)}) VALUES {values}")
    return sql


PROJECT = Project(root=REPO, engine_url="duckdb:///:memory:", metrics_dir=REPO / "metrics")


def _duckdb_service(data: Data) -> MetricsService:
    engine = DuckDBEngine(":memory:", result_cache=False)
    for statement in _load_statements(data, 1):
        engine.execute(statement)
    return MetricsService(PROJECT, engine=engine, model=MODEL)


class _Postgres:
    """One schema for the module's examples; the tables are recreated for each example."""

    def __init__(self):
        import psycopg

        self.url = postgres_or_skip(PG_URL)
        self.schema = f"ml_spine_props_{os.getpid()}"
        self.conn = psycopg.connect(self.url, autocommit=True)
        self.conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        self.conn.execute(f'CREATE SCHEMA "{self.schema}"')
        self.conn.execute(f'SET search_path = "{self.schema}"')
        project = Project(root=REPO, engine_url=f"{self.url}?options=-csearch_path%3D{self.schema}", metrics_dir=REPO / "metrics")
        self.service = MetricsService(project, model=MODEL)

    def load(self, data: Data) -> MetricsService:
        with self.conn.transaction():
            for table in TABLES:
                self.conn.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in _load_statements(data, 2):
                self.conn.execute(statement)
        return self.service

    def close(self):
        self.service.engine.close()
        self.conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        self.conn.close()


@pytest.fixture(scope="module")
def postgres():
    pg = _Postgres()
    yield pg
    pg.close()


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

def _check_global(service: MetricsService, data: Data, times: list) -> None:
    spine = pa.table({"at": pa.array(times, pa.timestamp("us")), "n": list(range(len(times)))})
    for metrics in GLOBAL:
        out = training_set(service, spine, metrics)
        assert out.column("n").to_pylist() == list(range(len(times)))  # the spine's order and columns
        for row in out.to_pylist():
            for metric in metrics:
                expected = reference(data, row["at"], metric)
                assert _same(row[metric], expected), (row["at"], metric, row[metric], expected)


def _check_keyed(service: MetricsService, data: Data, times: list, keys: list, entity: str, lists) -> None:
    spine = pa.table({"at": pa.array(times, pa.timestamp("us")), "k": pa.array(keys, pa.int64())})
    for metrics in lists:
        out = training_set(service, spine, metrics, entity=entity, key="k")
        assert out.column("k").to_pylist() == keys
        for row in out.to_pylist():
            for metric in metrics:
                expected = reference(data, row["at"], metric, key=row["k"])
                assert _same(row[metric], expected), (row["at"], row["k"], metric, row[metric], expected)


@st.composite
def global_case(draw):
    data = draw(data_sets())
    times, _ = draw(spines(data, None))
    return data, times


@st.composite
def keyed_case(draw):
    data = draw(data_sets())
    by_lead = draw(st.booleans())
    table = "leads" if by_lead else "transactions"
    keys = sorted({r["id"] for r in data.tables[table]}) or [1]
    times, spine_keys = draw(spines(data, keys))
    return data, times, spine_keys, by_lead


@examples(1.0)
@given(global_case())
def test_global_training_set_equals_reference_duckdb(case):
    data, times = case
    _check_global(_duckdb_service(data), data, times)


@examples(1.0)
@given(keyed_case())
def test_keyed_training_set_equals_reference_duckdb(case):
    data, times, keys, by_lead = case
    entity, metrics = ("leads.lead", BY_LEAD) if by_lead else ("transactions.transaction", BY_TRANSACTION)
    _check_keyed(_duckdb_service(data), data, times, keys, entity, metrics)


@examples(0.25)
@given(case=global_case())
def test_global_training_set_equals_reference_postgres(postgres, case):
    data, times = case
    _check_global(postgres.load(data), data, times)


@examples(0.25)
@given(case=keyed_case())
def test_keyed_training_set_equals_reference_postgres(postgres, case):
    data, times, keys, by_lead = case
    entity, metrics = ("leads.lead", BY_LEAD) if by_lead else ("transactions.transaction", BY_TRANSACTION)
    _check_keyed(postgres.load(data), data, times, keys, entity, metrics)
