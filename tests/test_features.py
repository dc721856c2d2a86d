"""Training sets over a spine: point-in-time values with no later row leaking in.

Hand-made data where rows after each spine time (late conversions, later duplicate predictions)
would change the value if they leaked. Every spine row is checked against a plain-Python
reference written here, and a global metric against the same metric queried as_of that time,
on DuckDB and on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pytest

from conftest import PG_URL, make_project, postgres_or_skip
from metrics_layer.project import load_project
from metrics_layer.query import QueryError, SemanticQuery
from metrics_layer.service import MetricsService

H = dt.timedelta(hours=1)
T0 = dt.datetime(2026, 3, 1)

# leads(id, created_at, utm_source); prediction_events(event_id, lead_id, predicted_at, model_version, label, score);
# conversions(id, lead_id, converted_at, revenue)
LEADS = [(i, T0 + i * 5 * H / 2, "Facebook" if i % 2 else "Google") for i in range(1, 31)]
PREDICTIONS = []
CONVERSIONS = []
for lead, created, _ in LEADS:
    if lead % 5 != 0:  # some leads never predicted
        PREDICTIONS.append((lead * 10, lead, created + dt.timedelta(minutes=1), "v1", lead % 2, 0.5))
    if lead % 3 == 0:  # a later re-prediction with the other label: leaks if cut wrong
        PREDICTIONS.append((lead * 10 + 1, lead, created + 30 * H, "v2", 1 - lead % 2, 0.7))
    if lead % 4 == 1:  # conversions arriving 2 h to 40 h later, some with a later duplicate
        CONVERSIONS.append((lead * 10, lead, created + (2 + lead % 39) * H, 10))
        if lead % 8 == 1:
            CONVERSIONS.append((lead * 10 + 1, lead, created + 60 * H, 99))


def _tables_sql() -> list[str]:
    def ts(v):
        return f"TIMESTAMP '{v.isoformat(sep=' ')}'"

    sql = ["CREATE TABLE leads (id BIGINT, created_at TIMESTAMP, utm_source VARCHAR)",
           "CREATE TABLE prediction_events (event_id BIGINT, lead_id BIGINT, predicted_at TIMESTAMP, model_version VARCHAR, label INTEGER, score DOUBLE PRECISION)",
           "CREATE TABLE conversions (id BIGINT, lead_id BIGINT, converted_at TIMESTAMP, revenue NUMERIC(12,2))"]
    sql.append("INSERT INTO leads VALUES " + ", ".join(f"({i}, {ts(c)}, '{s}')" for i, c, s in LEADS))
    sql.append("INSERT INTO prediction_events VALUES " + ", ".join(
        f"({e}, {l}, {ts(p)}, '{v}', {lab}, {sc})" for e, l, p, v, lab, sc in PREDICTIONS))
    sql.append("INSERT INTO conversions VALUES " + ", ".join(f"({i}, {l}, {ts(c)}, {r})" for i, l, c, r in CONVERSIONS))
    return sql


def _reference(at: dt.datetime, metric: str, lead_key=None):
    """Plain Python: the models cut at `at`, deduped, windows (at - delay - window, at - delay]."""
    preds, convs = {}, {}
    for e, l, p, v, lab, sc in sorted(PREDICTIONS, key=lambda r: r[2]):
        if p <= at:
            preds[l] = lab  # latest
    for i, l, c, r in sorted(CONVERSIONS, key=lambda r: r[2]):
        if c <= at and l not in convs:
            convs[l] = c  # earliest
    leads = [(i, c) for i, c, _ in LEADS if c <= at and (lead_key is None or i == lead_key)]
    if metric == "leads.lead_count":
        return len(leads)
    if metric == "predictions.prediction_count":  # a deduplicated base model: one row per lead
        return len(preds)
    if metric == "conversion_rate":
        return len([i for i, _ in leads if i in convs]) / len(leads) if leads else None
    if metric == "accuracy_3h":
        lo, hi = at - 27 * H, at - 24 * H
        window = [i for i, c in leads if lo < c <= hi]
        numerator = len([i for i in window if i in preds and (preds[i] == 1) == (i in convs)])
        denominator = len([i for i in window if i in preds])
        return numerator / denominator if denominator else None
    raise AssertionError(metric)


SPINE_TIMES = [T0 - H, T0 + 26 * H, T0 + 26 * H, T0 + 27.5 * H, T0 + 40 * H, T0 + 52 * H + dt.timedelta(minutes=1),
               T0 + 60 * H, T0 + 75 * H, T0 + 100 * H, T0 + 26 * H]
METRICS = ["accuracy_3h", "conversion_rate", "leads.lead_count", "predictions.prediction_count"]


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def service(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"features_{request.param}")
    if request.param == "duckdb":
        import duckdb

        path = folder / "f.duckdb"
        con = duckdb.connect(str(path))
        for sql in _tables_sql():
            con.execute(sql)
        con.close()
        yield MetricsService(load_project(make_project(folder / "p", f"duckdb:///{path}")))
        return
    import psycopg

    url = postgres_or_skip(PG_URL)
    schema = f"ml_test_{os.getpid()}_features"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path = "{schema}"')
        for sql in _tables_sql():
            conn.execute(sql)
    service = MetricsService(load_project(make_project(folder / "p", f"{url}?options=-csearch_path%3D{schema}")))
    yield service
    service.engine.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) < 1e-9


def test_global_metrics_equal_reference_and_as_of(service):
    from metrics_layer.features import training_set

    spine = pa.table({"at": pa.array(SPINE_TIMES, pa.timestamp("us")), "label": list(range(len(SPINE_TIMES)))})
    out = training_set(service, spine, METRICS)
    assert out.column_names == ["at", "label", *METRICS]
    assert out.column("label").to_pylist() == list(range(len(SPINE_TIMES)))  # spine order, columns unchanged
    for row in out.to_pylist():
        as_of = service.run(SemanticQuery(tuple(METRICS), as_of=row["at"])).rows[0]
        for i, metric in enumerate(METRICS):
            assert _close(row[metric], _reference(row["at"], metric)), (row, metric)
            assert _close(row[metric], as_of[i]), (row, metric, as_of)


def test_per_entity_with_keys_without_rows(service):
    from metrics_layer.features import training_set

    keys = [1, 3, 9, 999, 3, None, 17]
    times = [T0 + 30 * H, T0 + 40 * H, T0 + 60 * H, T0 + 60 * H, T0 + 100 * H, T0 + 60 * H, T0 - H]
    spine = pa.table({"ts": pa.array(times, pa.timestamp("us")), "lead": pa.array(keys, pa.int64())})
    out = training_set(service, spine, ["conversion_rate", "leads.lead_count"], at="ts", entity="leads.lead")
    for row in out.to_pylist():
        for metric in ("conversion_rate", "leads.lead_count"):
            expected = _reference(row["ts"], metric, lead_key=row["lead"] if row["lead"] is not None else -1)
            assert _close(row[metric], expected), (row, metric)


def test_filters_apply_per_row(service):
    from metrics_layer.features import training_set
    from metrics_layer.query import Filter

    spine = pa.table({"at": pa.array(SPINE_TIMES, pa.timestamp("us"))})
    out = training_set(service, spine, ["leads.lead_count"], filters=[Filter("leads.utm_source", "=", "Facebook")])
    for row in out.to_pylist():
        expected = len([1 for i, c, s in LEADS if c <= row["at"] and s == "Facebook"])
        assert row["leads.lead_count"] == expected


def test_streaming_dialects_refuse():
    from metrics_layer.compile.spine import SpineQuery, compile_spine

    from conftest import REPO
    from metrics_layer.model import load_model

    model = load_model(REPO / "metrics")
    for dialect in ("materialize", "risingwave"):
        with pytest.raises(QueryError, match="batch job"):
            compile_spine(model, SpineQuery(("accuracy_3h",)), dialect)


def test_cli_writes_the_spine_plus_metrics(service, tmp_path):
    import subprocess
    import sys

    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    spine = tmp_path / "spine.csv"
    spine.write_text("at,who\n" + "".join(f"{t.isoformat(sep=' ')},{i}\n" for i, t in enumerate(SPINE_TIMES)))
    for out in (tmp_path / "train.parquet", tmp_path / "train.csv"):
        done = subprocess.run(
            [sys.executable, "-m", "metrics_layer.cli", "features", "--project", str(service.project.root), "--spine", str(spine),
             "--metric", "accuracy_3h", "--metric", "leads.lead_count", "--out", str(out), "--show-sql"],
            capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "ml_points" in done.stderr  # --show-sql
        table = pq.read_table(out) if out.suffix == ".parquet" else pcsv.read_csv(out)
        assert table.column_names == ["at", "who", "accuracy_3h", "leads.lead_count"]
        assert table.column("who").to_pylist() == list(range(len(SPINE_TIMES)))
        for row in table.to_pylist():
            at = row["at"] if isinstance(row["at"], dt.datetime) else dt.datetime.fromisoformat(str(row["at"]))
            assert _close(row["accuracy_3h"], _reference(at, "accuracy_3h"))
            assert row["leads.lead_count"] == _reference(at, "leads.lead_count")


def test_python_api_returns_pandas(service):
    import pandas as pd

    import metrics_layer

    spine = pd.DataFrame({"at": pd.to_datetime(SPINE_TIMES)})
    frame = metrics_layer.training_set(service, spine, ["leads.lead_count"])
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["leads.lead_count"]) == [_reference(t, "leads.lead_count") for t in SPINE_TIMES]


def test_demo_feature_on_prediction_events(demo_duckdb_path, tmp_path):
    """The demo's conversion_rate_fb_3h at each of a sample of its prediction events equals a
    per-row hand-written SQL and the metric queried as_of that time."""
    import duckdb

    from metrics_layer.features import training_set

    service = MetricsService(load_project(make_project(tmp_path / "demo", f"duckdb:///{demo_duckdb_path}")))
    con = duckdb.connect(str(demo_duckdb_path), read_only=True)
    spine = con.sql("SELECT lead_id, predicted_at AS at FROM prediction_events ORDER BY event_id LIMIT 40 OFFSET 3000").to_arrow_table()
    out = training_set(service, spine, ["conversion_rate_fb_3h"])
    for row in out.to_pylist():
        at = row["at"]
        expected = con.execute("""
            WITH l AS (SELECT id FROM leads WHERE utm_source = 'facebook' AND created_at <= ?
                         AND created_at > ? - INTERVAL 27 HOUR AND created_at <= ? - INTERVAL 24 HOUR),
                 c AS (SELECT DISTINCT lead_id FROM conversions WHERE converted_at <= ?)
            SELECT CAST(COUNT(c.lead_id) AS DOUBLE) / NULLIF(COUNT(*), 0) FROM l LEFT JOIN c ON c.lead_id = l.id""",
            [at, at, at, at]).fetchone()[0]
        assert _close(row["conversion_rate_fb_3h"], expected), row
        as_of = service.run(SemanticQuery(("conversion_rate_fb_3h",), as_of=at)).rows[0][0]
        assert _close(row["conversion_rate_fb_3h"], as_of)
    con.close()
