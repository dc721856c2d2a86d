"""Corners where a plausible number would be wrong, each against SQL written by hand, on DuckDB
and PostgreSQL: formulas over a measure with no rows in a group, a time filter on a rolling
series, and rows exactly on a trailing window's bounds.
"""

from __future__ import annotations

import datetime as dt
import os
import textwrap
from pathlib import Path

import pytest

import reference
from conftest import make_project, postgres_or_skip
from streaming_rules import violated_rules
from metrics_layer.project import load_project
from metrics_layer.query import DimensionRef, Filter, SemanticQuery
from metrics_layer.service import MetricsService
from test_metrics_numbers import assert_same_rows
from test_metrics_numbers import service as demo  # noqa: F401  (the demo on DuckDB and PostgreSQL)

ENGINES = ["duckdb", "postgres"]


class TinyData:
    """A few hand-made tables in a fresh DuckDB file or PostgreSQL schema, and a project over them."""

    def __init__(self, engine: str, folder: Path, tables: dict[str, tuple[str, list[tuple]]], yaml_text: str):
        self.engine, self.folder = engine, folder
        folder.mkdir(parents=True, exist_ok=True)
        if engine == "duckdb":
            import duckdb

            path = folder / "tiny.duckdb"
            with duckdb.connect(str(path)) as conn:
                self._load(conn.execute, conn.executemany, tables, "?")
            url = f"duckdb:///{path}"
        else:
            import psycopg

            base = postgres_or_skip()
            self.schema = f"ml_corner_{os.getpid()}_{folder.name}"
            self.base = base
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
                conn.execute(f'CREATE SCHEMA "{self.schema}"')
                conn.execute(f'SET search_path TO "{self.schema}"')
                with conn.cursor() as cur:
                    self._load(conn.execute, cur.executemany, tables, "%s")
            url = f"{base}?options=-csearch_path%3D{self.schema}"
        (folder / "metrics").mkdir(exist_ok=True)
        (folder / "metrics" / "model.yml").write_text(textwrap.dedent(yaml_text))
        (folder / "metrics_layer.yml").write_text(f"engine: {url}\nresult_cache: false\n")
        self.service = MetricsService(load_project(folder))

    @staticmethod
    def _load(execute, executemany, tables, marker: str) -> None:
        for name, (columns, rows) in tables.items():
            execute(f"CREATE TABLE {name} ({columns})")
            if rows:
                width = len(rows[0])
                executemany(f"INSERT INTO {name} VALUES ({', '.join([marker] * width)})", rows)

    def sql(self, text: str):
        return self.service.engine.execute(text).rows

    def close(self) -> None:
        self.service.engine.close()
        if self.engine == "postgres":
            import psycopg

            with psycopg.connect(self.base, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


# ---- 1. a measure with no rows in a group reads 0 inside a formula ------------------------

def test_fraud_loss_by_hour_counts_false_alarms_in_hours_without_missed_fraud(demo):
    """The demo's hours with alarms but no missed fraud: loss is 25 per alarm, never NULL."""
    query = SemanticQuery(("fraud_loss", "transactions.missed_fraud_amount", "transactions.false_alarms"),
                          (DimensionRef("transactions.created_at", "hour"),))
    rows = demo.run(query).rows
    assert_same_rows(rows, demo.engine.execute(reference.fraud_by_time("hour")).rows, "fraud_loss by hour")
    only_alarms = [r for r in rows if r[2] is None and r[3] > 0]
    assert only_alarms, "the demo has hours with false alarms and no missed fraud"
    assert all(float(r[1]) == 25 * r[3] for r in only_alarms)
    assert all(r[1] is not None for r in rows)


NET_REVENUE_YAML = """
models:
  - name: orders
    table: orders
    entities: [{name: order, type: primary, expr: id}]
    time: created_at
    dimensions:
      - {name: region}
      - {name: created_at, type: time}
    measures:
      - {name: gross, agg: sum, expr: amount}
      - {name: order_count, agg: count}
  - name: refunds
    table: refunds
    entities:
      - {name: refund, type: primary, expr: id}
      - {name: order, type: foreign, expr: order_id}
    time: refunded_at
    measures:
      - {name: refunded, agg: sum, expr: amount}
      - {name: refunded_or_zero, agg: sum, expr: amount, fill_nulls_with: 0}
      - {name: avg_refund, agg: avg, expr: amount}
metrics:
  - {name: net_revenue, type: derived, expr: orders.gross - refunds.refunded}
  - {name: refunds_total, type: simple, measure: refunds.refunded}
  - {name: net_via_metric, type: derived, expr: orders.gross - refunds_total}
  - {name: refund_share, type: ratio, numerator: refunds.refunded, denominator: orders.gross}
  - {name: refund_share_or_zero, type: ratio, numerator: refunds.refunded, denominator: orders.gross, fill_nulls_with: 0}
  - {name: gross_minus_avg_refund, type: derived, expr: orders.gross - refunds.avg_refund}
"""

ORDERS = [
    (1, dt.datetime(2026, 5, 1, 9), "eu", 100.0), (2, dt.datetime(2026, 5, 1, 10), "eu", 50.0),
    (3, dt.datetime(2026, 5, 2, 9), "us", 80.0), (4, dt.datetime(2026, 5, 2, 11), "us", 20.0),
    (5, dt.datetime(2026, 5, 3, 8), "apac", 0.0), (6, dt.datetime(2026, 5, 3, 9), "latam", None),
]
REFUNDS = [(1, 1, dt.datetime(2026, 5, 4), 30.0), (2, 1, dt.datetime(2026, 5, 5), 5.0), (3, 5, dt.datetime(2026, 5, 6), 0.0)]

NET_REVENUE_SQL = """
WITH g AS (SELECT {key} AS k, SUM(amount) AS gross FROM orders GROUP BY 1),
     r AS (SELECT {okey} AS k, SUM(r.amount) AS refunded, AVG(r.amount) AS avg_refund
           FROM refunds r JOIN orders o ON o.id = r.order_id GROUP BY 1)
SELECT g.k,
       COALESCE(g.gross, 0) - COALESCE(r.refunded, 0),
       COALESCE(g.gross, 0) - COALESCE(r.refunded, 0),
       r.refunded,
       COALESCE(r.refunded, 0),
       CAST(COALESCE(r.refunded, 0) AS DOUBLE PRECISION) / NULLIF(g.gross, 0),
       COALESCE(CAST(COALESCE(r.refunded, 0) AS DOUBLE PRECISION) / NULLIF(g.gross, 0), 0),
       g.gross - r.avg_refund
FROM g LEFT JOIN r ON r.k = g.k
"""


@pytest.fixture(scope="module", params=ENGINES)
def shop(request, tmp_path_factory):
    data = TinyData(request.param, tmp_path_factory.mktemp("shop"), {
        "orders": ("id INTEGER, created_at TIMESTAMP, region TEXT, amount DOUBLE PRECISION", ORDERS),
        "refunds": ("id INTEGER, order_id INTEGER, refunded_at TIMESTAMP, amount DOUBLE PRECISION", REFUNDS),
    }, NET_REVENUE_YAML)
    yield data
    data.close()


NET_METRICS = ("net_revenue", "net_via_metric", "refunds.refunded", "refunds.refunded_or_zero",
               "refund_share", "refund_share_or_zero", "gross_minus_avg_refund")


@pytest.mark.parametrize("by,key", [("orders.region", "region"), ("orders.created_at:day", "date_trunc('day', created_at)")])
def test_net_revenue_in_groups_without_refunds(shop, by, key):
    """gross - refunds is gross where a group has no refunds; a refund ratio is 0 there (its
    denominator exists) and NULL where the denominator is 0 or empty; a non-additive measure
    (avg) stays NULL; fill_nulls_with gives the chosen value."""
    name, _, grain = by.partition(":")
    query = SemanticQuery(NET_METRICS, (DimensionRef(name, grain or None),))
    expected = shop.sql(NET_REVENUE_SQL.format(key=key, okey=key.replace("created_at", "o.created_at").replace("region", "o.region")))
    rows = shop.service.run(query).rows
    assert_same_rows(rows, expected, f"net revenue by {by}")
    by_key = {r[0]: r for r in rows}
    if name == "orders.region":
        assert by_key["us"][1] == 100 and by_key["us"][3] is None and by_key["us"][4] == 0 and by_key["us"][5] == 0
        assert by_key["apac"][5] is None and by_key["latam"][1] == 0 and by_key["latam"][5] is None
        assert by_key["latam"][6] == 0 and by_key["us"][7] is None


def test_net_revenue_without_dimensions_and_fill_validation(shop, tmp_path):
    row = shop.service.run(SemanticQuery(("net_revenue", "refunds.refunded"), filters=(Filter("orders.region", "=", "us"),))).rows
    assert [tuple(float(v) if v is not None else None for v in r) for r in row] == [(100.0, None)]
    from metrics_layer.model.errors import ValidationFailed
    from metrics_layer.model.load import load_model

    (tmp_path / "m.yml").write_text(NET_REVENUE_YAML.replace("fill_nulls_with: 0}", "fill_nulls_with: zero}", 1))
    with pytest.raises(ValidationFailed) as error:
        load_model(tmp_path)
    assert "m.yml:" in str(error.value) and "fill_nulls_with needs a number" in str(error.value)


# ---- 2. a time filter on a rolling series picks buckets; windows read before it -----------

RANGES = [
    ("mid-data", "2026-02-20 00:00:00", "2026-02-23 00:00:00"),
    ("starts-before-data", "2025-12-01 00:00:00", "2026-02-03 00:00:00"),
    ("ends-after-data", "2026-02-27 05:00:00", "2027-01-01 00:00:00"),
    ("outside-data", "2025-01-01 00:00:00", "2025-02-01 00:00:00"),
    ("cuts-a-window", "2026-02-10 08:30:00", "2026-02-10 14:00:00"),
]


@pytest.mark.parametrize("grain", ["hour", "day"])
@pytest.mark.parametrize("label,start,end", RANGES, ids=[r[0] for r in RANGES])
def test_rolling_series_with_a_time_range(demo, grain, label, start, end):
    """accuracy_3h (count distinct, 1-day label delay) over [start, end): only buckets whose
    start is in the range, each with the whole window it reads, also the part before `start`."""
    query = SemanticQuery(("accuracy_3h",), (DimensionRef("leads.created_at", grain),), filters=(
        Filter("leads.created_at", ">=", start), Filter("leads.created_at", "<", end)))
    where = f"bucket >= {reference.ts(start)} AND bucket < {reference.ts(end)}"
    expected = demo.engine.execute(reference.trailing_accuracy_series(grain, buckets_where=where)).rows
    rows = demo.run(query).rows
    assert_same_rows(rows, expected, f"{label} by {grain}")
    if label == "mid-data":
        assert len(rows) == (3 if grain == "day" else 72)
        assert rows[0][1] is not None, "the first bucket's window lies before the range and is not empty"
    if label == "outside-data":
        assert rows == []


def test_rolling_series_range_between_and_at_a_grain(demo):
    """`between` and a filter at a grain (created_at:day >= ...) select buckets the same way."""
    hour = DimensionRef("leads.created_at", "hour")
    start, end = "2026-02-14 00:00:00", "2026-02-15 00:00:00"
    expected = demo.engine.execute(reference.trailing_accuracy_series(
        "hour", buckets_where=f"bucket BETWEEN {reference.ts(start)} AND {reference.ts(end)}")).rows
    between = demo.run(SemanticQuery(("accuracy_3h",), (hour,), filters=(Filter("leads.created_at", "between", (start, end)),))).rows
    assert_same_rows(between, expected, "between")
    grained = demo.run(SemanticQuery(("accuracy_3h",), (hour,), filters=(
        Filter("leads.created_at", ">=", "2026-02-14", grain="day"), Filter("leads.created_at", "<=", "2026-02-14", grain="day")))).rows
    day_only = [r for r in expected if r[0] < dt.datetime(2026, 2, 15)]
    assert_same_rows(grained, day_only, "created_at:day filter")
    assert len(grained) == 24


def test_rolling_series_range_with_a_plain_measure(demo):
    """The issue's query: a day series of accuracy_3h and lead_count over three days is three
    rows; lead_count counts the leads of each day in the range."""
    day = DimensionRef("leads.created_at", "day")
    filters = (Filter("leads.created_at", ">=", "2026-02-20"), Filter("leads.created_at", "<", "2026-02-23"))
    rows = demo.run(SemanticQuery(("accuracy_3h", "leads.lead_count"), (day,), filters=filters)).rows
    counts = demo.engine.execute(
        "SELECT date_trunc('day', created_at), COUNT(*) FROM leads WHERE created_at >= TIMESTAMP '2026-02-20' "
        "AND created_at < TIMESTAMP '2026-02-23' GROUP BY 1 ORDER BY 1").rows
    assert [(r[0], r[2]) for r in rows] == [tuple(c) for c in counts]
    where = "bucket >= TIMESTAMP '2026-02-20' AND bucket < TIMESTAMP '2026-02-23'"
    expected = demo.engine.execute(reference.trailing_accuracy_series("day", buckets_where=where)).rows
    assert_same_rows([r[:2] for r in rows], expected, "accuracy_3h next to lead_count")


# ---- 3. the current value of a trailing window includes its end ----------------------------

WINDOW_YAML = """
models:
  - name: leads
    table: leads
    entities: [{name: lead, type: primary, expr: id}]
    time: created_at
    dimensions: [{name: created_at, type: time}]
    measures: [{name: lead_count, agg: count_distinct, expr: id}]
  - name: predictions
    table: prediction_events
    entities: [{name: lead, type: foreign, expr: lead_id}]
    dedupe: {key: [lead_id], keep: latest, by: predicted_at}
    time: predicted_at
metrics:
  - name: predicted_3h
    type: simple
    measure: {measure: leads.lead_count, filter: predictions.lead_id IS NOT NULL}
    window: 3 hours
    label_delay: 1 day
"""
T = dt.datetime(2026, 6, 10, 12)
DELAY, WINDOW = dt.timedelta(days=1), dt.timedelta(hours=3)
SECOND = dt.timedelta(seconds=1)
# Leads on and next to both bounds of (T - delay - window, T - delay], and one at T itself.
BOUND_TIMES = {
    1: T - DELAY - WINDOW,           # on the open lower bound: out
    2: T - DELAY - WINDOW + SECOND,  # in
    3: T - DELAY - SECOND,           # in
    4: T - DELAY,                    # on the closed upper bound: in
    5: T - DELAY + SECOND,           # out
    6: T,                            # kept by as_of T; in a no-delay window ending at T
    7: T + SECOND,                   # after as_of: never
}


@pytest.fixture(scope="module", params=ENGINES)
def bounds_data(request, tmp_path_factory):
    leads = [(i, t) for i, t in BOUND_TIMES.items()]
    predictions = [(i, t + dt.timedelta(minutes=1)) for i, t in BOUND_TIMES.items() if i != 6] + [(6, T)]
    data = TinyData(request.param, tmp_path_factory.mktemp("bounds"), {
        "leads": ("id INTEGER, created_at TIMESTAMP", leads),
        "prediction_events": ("lead_id INTEGER, predicted_at TIMESTAMP", predictions),
    }, WINDOW_YAML)
    yield data
    data.close()


def _count_sql(lower: str, upper: str) -> str:
    return f"SELECT COUNT(DISTINCT id) FROM leads WHERE created_at {lower} AND created_at {upper} AND created_at <= {reference.ts(T)}"


def test_current_window_includes_its_end(bounds_data):
    svc = bounds_data.service
    got = svc.run(SemanticQuery(("predicted_3h",), as_of=T)).rows
    lo, hi = T - DELAY - WINDOW, T - DELAY
    expected = bounds_data.sql(
        f"SELECT COUNT(DISTINCT l.id) FROM leads l JOIN prediction_events p ON p.lead_id = l.id "
        f"WHERE l.created_at > {reference.ts(lo)} AND l.created_at <= {reference.ts(hi)} AND p.predicted_at <= {reference.ts(T)}")
    assert got == expected == [(3,)]  # leads 2, 3, 4
    no_delay = svc.run(SemanticQuery(("leads.lead_count",), window="3 hours", as_of=T)).rows
    assert no_delay == bounds_data.sql(_count_sql(f"> {reference.ts(T - WINDOW)}", f"<= {reference.ts(T)}")) == [(1,)]  # lead 6


def test_rolling_buckets_read_the_window_before_their_end(bounds_data):
    """Bucket b of an hourly series reads [b + 1h - window, b + 1h): a lead exactly at a bucket's
    end belongs to the next bucket's window."""
    rows = bounds_data.service.run(SemanticQuery(("leads.lead_count",), (DimensionRef("leads.created_at", "hour"),),
                                                 window="3 hours", as_of=T)).rows
    expected = bounds_data.sql(f"""
        WITH l AS (SELECT * FROM leads WHERE created_at <= {reference.ts(T)}),
        bounds AS (SELECT date_trunc('hour', MIN(created_at)) AS lo, date_trunc('hour', MAX(created_at)) AS hi FROM l),
        s AS (SELECT g.b FROM bounds, generate_series(bounds.lo, bounds.hi, INTERVAL '1 hour') AS g(b))
        SELECT s.b, COUNT(DISTINCT l.id) FROM s LEFT JOIN l
          ON l.created_at >= s.b + INTERVAL '1 hour' - INTERVAL '3 hours' AND l.created_at < s.b + INTERVAL '1 hour'
        GROUP BY s.b ORDER BY s.b""")
    assert_same_rows(rows, expected, "hourly rolling count")
    by_bucket = dict(rows)
    assert by_bucket[T - DELAY - dt.timedelta(hours=1)] == 3  # leads 1, 2, 3; lead 4 sits on its end
    assert by_bucket[T - DELAY] == 3  # leads 3, 4, 5


@pytest.mark.parametrize("grain,window", [("month", "3 hours"), ("week", "3 hours"), ("hour", "90 minutes"),
                                          ("day", "36 hours"), ("minute", "3 hours")])
def test_rolling_series_at_any_grain_and_window(demo, grain, window):
    """Rows fan out to the buckets whose end lies in (t + delay, t + delay + window], also for
    calendar grains and windows that are not whole buckets (each copy checked)."""
    query = SemanticQuery(("accuracy_3h",), (DimensionRef("leads.created_at", grain),), window=window,
                          filters=(Filter("leads.created_at", ">=", "2026-02-10"), Filter("leads.created_at", "<", "2026-02-12"))
                          if grain == "minute" else ())
    where = "bucket >= TIMESTAMP '2026-02-10' AND bucket < TIMESTAMP '2026-02-12'" if grain == "minute" else "TRUE"
    expected = demo.engine.execute(reference.trailing_accuracy_series(grain, window, buckets_where=where)).rows
    assert_same_rows(demo.run(query).rows, expected, f"{window} by {grain}")


@pytest.mark.parametrize("dialect", ["materialize", "risingwave"])
@pytest.mark.parametrize("grain", ["hour", "day"])
def test_streaming_rolling_form_runs_and_agrees_on_postgres(request, grain, dialect):
    """The streaming engines' rolling series (rows fanned out with UNION ALL, no series over
    the data) cannot run here; with as_of its SQL is plain PostgreSQL, so run it there: every
    bucket it returns equals the batch series', the empty buckets between its first and last
    are filled at read time (accuracy NULL, counts 0) and the batch buckets it leaves out are
    those before its first or after its last window holding a lead. A second metric without a
    window (its own group, combined with the rolling one) keeps its counts."""
    url = request.getfixturevalue("demo_postgres_url")
    svc = MetricsService(load_project(make_project(request.getfixturevalue("tmp_path") / "p", url)))
    try:
        as_of = dt.datetime(2026, 2, 20, 18, 30)
        by = (DimensionRef("leads.created_at", grain),)
        query = SemanticQuery(("accuracy_3h", "leads.lead_count"), by, as_of=as_of)
        sql = svc.compile(query, dialect=dialect)
        assert ("UNION ALL" in sql) == (grain == "hour")  # a day holds a 3-hour window once
        assert violated_rules(sql, dialect) == set()  # the read-time fill is the only generate_series
        streaming = {r[0]: (r[1], r[2]) for r in svc.engine.execute(sql).rows}
        batch = {r[0]: (r[1], r[2]) for r in svc.run(query).rows}
        first, last = min(streaming), max(streaming)
        step = dt.timedelta(hours=1) if grain == "hour" else dt.timedelta(days=1)
        assert sorted(streaming) == [first + k * step for k in range((last - first) // step + 1)]  # no gap
        for bucket, (accuracy, count) in streaming.items():
            if bucket in batch:
                assert accuracy == pytest.approx(batch[bucket][0]) if accuracy is not None else batch[bucket][0] is None, bucket
                assert count == batch[bucket][1], bucket
            else:
                assert max(batch) < bucket <= as_of and count == 0
        for bucket, (accuracy, _) in batch.items():
            if bucket not in streaming:
                assert accuracy is None and not first <= bucket <= last
        assert len(streaming) > 10
    finally:
        svc.engine.close()


GAP_YAML = """
models:
  - name: events
    table: events
    entities: [{name: event, type: primary, expr: id}]
    time: at
    dimensions: [{name: at, type: time}]
    measures:
      - {name: n, agg: count}
      - {name: total, agg: sum, expr: amount}
metrics:
  - {name: n_2h, type: simple, measure: events.n, window: 2 hours}
  - {name: mean_2h, type: ratio, numerator: events.total, denominator: events.n, window: 2 hours}
"""
GAP_AS_OF = dt.datetime(2026, 5, 1, 18, 30)
# Two bursts five hours apart, a row exactly on a bucket bound, one after as_of.
GAP_EVENTS = [(1, dt.datetime(2026, 5, 1, 9, 10), 4.0), (2, dt.datetime(2026, 5, 1, 9, 50), 6.0),
              (3, dt.datetime(2026, 5, 1, 10, 30), None), (4, dt.datetime(2026, 5, 1, 16, 5), 1.0),
              (5, dt.datetime(2026, 5, 1, 16, 59, 59), 2.0), (6, dt.datetime(2026, 5, 1, 17), 3.0),
              (7, dt.datetime(2026, 5, 1, 19), 100.0)]


@pytest.mark.parametrize("dialect", ["materialize", "risingwave"])
def test_streaming_series_fills_empty_buckets_at_read_time(tmp_path, dialect):
    """Streaming engines maintain only the buckets whose windows hold rows; the read fills the
    hours between the two bursts (count 0, mean NULL). Run on PostgreSQL (with as_of the
    streaming SQL is plain PostgreSQL) and compared with a plain-Python trailing window."""
    data = TinyData("postgres", tmp_path / "gap", {"events": ("id INT, at TIMESTAMP, amount DOUBLE PRECISION", GAP_EVENTS)}, GAP_YAML)
    try:
        query = SemanticQuery(("n_2h", "mean_2h", "events.n"), (DimensionRef("events.at", "hour"),), as_of=GAP_AS_OF)
        sql = data.service.compile(query, dialect=dialect)
        assert violated_rules(sql, dialect) == set()
        got = [tuple(r) for r in data.sql(sql)]
        known = [(t, a) for _, t, a in GAP_EVENTS if t <= GAP_AS_OF]
        hour = dt.timedelta(hours=1)
        expected, bucket = [], dt.datetime(2026, 5, 1, 9)
        while bucket <= GAP_AS_OF:  # each bucket's window: [bucket + 1 h - 2 h, bucket + 1 h)
            inside = [a for t, a in known if bucket - hour <= t < bucket + hour]
            amounts = [a for a in inside if a is not None]  # a sum over only NULLs reads 0 in a formula (section 1)
            own = sum(1 for t, _ in known if bucket <= t < bucket + hour)
            expected.append((bucket, len(inside), sum(amounts) / len(inside) if inside else None, own))
            bucket += hour
        while expected[-1][1] == 0:  # the series ends at the last bucket whose window holds rows
            expected.pop()
        assert [r[0] for r in got] == [e[0] for e in expected]
        for row, want in zip(got, expected):
            assert row[1] == want[1] and row[3] == want[3], row
            assert (row[2] is None) == (want[2] is None) and (row[2] is None or row[2] == pytest.approx(want[2])), row
        assert any(e[1] == 0 for e in expected)  # the data has empty buckets inside the series
    finally:
        data.close()
