"""The demo data generator (metrics_layer/demo_data.py) and the reference SQL (tests/reference.py).

- generation is deterministic (twice, and with another thread count, gives identical rows);
- the data has the properties the mission needs (duplicates, unpredicted leads, late
  conversions, the 5-hour outage, no dedupe ties, nothing at or after `end`);
- PostgreSQL gets exactly the rows DuckDB gets;
- every reference query runs on both engines with equal results, and a few of them agree with
  a plain-Python computation of the same definitions (so the reference is checked too).
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import math
import os
import sys
from decimal import Decimal
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
for _p in (str(_TESTS.parent), str(_TESTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import reference as R  # noqa: E402
from metrics_layer import demo_data  # noqa: E402

duckdb = pytest.importorskip("duckdb")

PG_URL = os.environ.get("METRICS_LAYER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PG_SCHEMA = "demo_test_data"
LEADS = 3000
SEED = 7
END = dt.datetime(2026, 3, 1)
START = END - dt.timedelta(days=30)
AS_OFS = [
    None,
    dt.datetime(2026, 2, 20, 12, 0, 0),   # accuracy_3h window falls exactly on the outage
    dt.datetime(2026, 2, 24, 17, 30, 0),
    dt.datetime(2026, 2, 1, 3, 0, 0),     # early: little data, some empty groups
    dt.datetime(2026, 1, 1),              # before any data
]

KEYS = {  # dedupe key and time column of the event tables
    "prediction_events": ("lead_id", "predicted_at"),
    "conversions": ("lead_id", "converted_at"),
    "fraud_scores": ("transaction_id", "scored_at"),
    "chargebacks": ("transaction_id", "charged_back_at"),
}


def _rows(con, table: str, schema: str | None = None) -> list[tuple]:
    cols = ", ".join(c for c, _, _ in demo_data.TABLES[table])
    name = f"{schema}.{table}" if schema else table
    return con.execute(f"SELECT {cols} FROM {name} ORDER BY 1").fetchall()


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return type(a) is type(b) and a == b if a is not None and b is not None else a is b


def _assert_same_result(a: list[tuple], b: list[tuple], what: str) -> None:
    assert len(a) == len(b), f"{what}: {len(a)} rows vs {len(b)}"
    for i, (ra, rb) in enumerate(zip(a, b)):
        assert len(ra) == len(rb) and all(_same(x, y) for x, y in zip(ra, rb)), f"{what} row {i}: {ra} != {rb}"


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def duck_paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    paths = [str(d / "a.duckdb"), str(d / "b.duckdb")]
    messages: list[str] = []
    demo_data.generate_duckdb(paths[0], leads=LEADS, seed=SEED, end=END, progress=messages.append)
    demo_data.generate_duckdb(paths[1], leads=LEADS, seed=SEED, end=END, progress=None)
    assert any(m.startswith("demo: leads 3,000 rows") for m in messages), messages
    return paths


@pytest.fixture(scope="module")
def duck(duck_paths):
    con = duckdb.connect(duck_paths[0], read_only=True)
    yield con
    con.close()


@pytest.fixture(scope="module")
def pg():
    psycopg = pytest.importorskip("psycopg")
    try:
        con = psycopg.connect(PG_URL, connect_timeout=30, autocommit=True)
    except psycopg.OperationalError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL unreachable at {PG_URL}: {e}")
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}: {e}")
    demo_data.generate_postgres(PG_URL, leads=LEADS, seed=SEED, end=END, progress=None, schema=PG_SCHEMA)
    con.execute(f"SET search_path TO {PG_SCHEMA}")
    yield con
    con.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
    con.close()


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------

def test_sql_hash_matches_python():
    con = duckdb.connect()
    keys = list(range(0, 2000)) + [2**32 - 1, 2**32, 5_000_000_000]
    src = "SELECT unnest([" + ", ".join(map(str, keys)) + "]::BIGINT[]) AS k"
    got = con.execute(demo_data._hashed(src, "k", ["a", "b"], 42) + " ORDER BY k").fetchall()
    assert [(k, demo_data.stream_hash(42, "a", k), demo_data.stream_hash(42, "b", k)) for k in keys] == got
    # roughly uniform, and the two streams are not the same
    us = [r[1] / 2**32 for r in got]
    assert abs(sum(us) / len(us) - 0.5) < 0.03
    assert sum(r[1] == r[2] for r in got) == 0


def test_deterministic(duck_paths):
    a = duckdb.connect(duck_paths[0], read_only=True)
    b = duckdb.connect(duck_paths[1], read_only=True)
    # and once more in memory, single-threaded, in another schema
    c = duckdb.connect()
    c.execute("SET threads = 1")
    demo_data._build(c, "other", LEADS, SEED, END, None)
    for table in demo_data.TABLES:
        rows = _rows(a, table)
        assert rows, table
        assert rows == _rows(b, table), table
        assert rows == _rows(c, table, "other"), table
    # another seed gives other data
    d = duckdb.connect()
    demo_data._build(d, "main", LEADS, SEED + 1, END, None)
    assert _rows(d, "leads") != _rows(a, "leads")
    for con in (a, b, c, d):
        con.close()


# sha256 (first 16 hex digits) of repr() of each table's rows ordered by id, for LEADS, SEED, END.
# These pin the data across runs, machines and library versions; if a deliberate change to the
# generator moves them, update them here (and say so in the commit).
GOLDEN = {
    "leads": "85a5773abec980e7",
    "prediction_events": "3f7d8491e7e7f833",
    "conversions": "f5101e64a834f7d9",
    "transactions": "64957a5355ae4f45",  # + merchant_id (issue 11); id..amount still hash to 09f1786944dfd734
    "fraud_scores": "8ed2526c4a588fe4",
    "chargebacks": "7f0f70e3bab9e7ae",
}


def test_golden_fingerprints(duck):
    got = {t: hashlib.sha256(repr(_rows(duck, t)).encode()).hexdigest()[:16] for t in demo_data.TABLES}
    assert got == GOLDEN
    # merchant_id came from its own hash stream: the columns before it are exactly as they were.
    before = duck.execute("SELECT id, created_at, merchant_category, amount FROM transactions ORDER BY 1").fetchall()
    assert hashlib.sha256(repr(before).encode()).hexdigest()[:16] == "09f1786944dfd734"


def test_column_types(duck):
    for table, cols in demo_data.TABLES.items():
        got = duck.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position", [table]).fetchall()
        assert got == [(c, t) for c, t, _ in cols], table


def test_properties(duck):
    q = lambda sql: duck.execute(sql).fetchall()  # noqa: E731
    one = lambda sql: q(sql)[0][0]  # noqa: E731

    # ids are 1..n in every table
    for table in demo_data.TABLES:
        idc = demo_data.TABLES[table][0][0]
        n, lo, hi, nd = q(f"SELECT count(*), min({idc}), max({idc}), count(DISTINCT {idc}) FROM {table}")[0]
        assert (lo, hi, nd) == (1, n, n), table

    # everything in [end - 30 days, end)
    for table, col in [("leads", "created_at"), ("transactions", "created_at")] + [(t, c) for t, (_, c) in KEYS.items()]:
        lo, hi = q(f"SELECT min({col}), max({col}) FROM {table}")[0]
        assert START <= lo and hi < END, table

    assert one("SELECT count(*) FROM leads") == LEADS
    assert one("SELECT count(*) FROM transactions") == LEADS
    assert 0.005 < one("SELECT avg(CASE WHEN utm_source IS NULL THEN 1 ELSE 0 END) FROM leads") < 0.04
    assert {r[0] for r in q("SELECT DISTINCT utm_source FROM leads")} == {
        None, "google", "facebook", "newsletter", "partner", "direct"}

    # the outage: 5 consecutive hours with no leads, with leads right before and after it
    gap_lo, gap_hi = demo_data.outage_window(END)
    assert gap_hi - gap_lo == dt.timedelta(hours=5)
    assert one(f"SELECT count(*) FROM leads WHERE created_at >= {R.ts(gap_lo)} AND created_at < {R.ts(gap_hi)}") == 0
    assert one(f"SELECT count(*) FROM leads WHERE created_at >= {R.ts(gap_lo)} - INTERVAL '2 hours' AND created_at < {R.ts(gap_lo)}") > 0
    assert one(f"SELECT count(*) FROM leads WHERE created_at >= {R.ts(gap_hi)} AND created_at < {R.ts(gap_hi)} + INTERVAL '2 hours'") > 0

    # no dedupe ties; duplicates exist and come strictly later
    for table, (key, col) in KEYS.items():
        assert one(f"SELECT count(*) FROM (SELECT {key}, {col} FROM {table} GROUP BY {key}, {col} HAVING count(*) > 1) t") == 0, table
        assert one(f"SELECT count(*) FROM (SELECT {key} FROM {table} GROUP BY {key} HAVING count(*) > 1) t") > 0, table

    # predictions: ~90% of leads, seconds to minutes after creation; some never predicted
    predicted = one("SELECT count(DISTINCT lead_id) FROM prediction_events")
    assert 0.86 < predicted / LEADS < 0.93
    assert one("SELECT count(*) FROM leads l WHERE NOT EXISTS (SELECT 1 FROM prediction_events p WHERE p.lead_id = l.id)") > 0
    first_delay = q("""SELECT min(p.predicted_at - l.created_at), max(p.predicted_at - l.created_at)
                       FROM prediction_events p JOIN leads l ON l.id = p.lead_id
                       WHERE p.event_id = (SELECT min(event_id) FROM prediction_events p2 WHERE p2.lead_id = p.lead_id)""")[0]
    assert first_delay[0] >= dt.timedelta(seconds=1) and first_delay[1] <= dt.timedelta(minutes=10)
    assert {r[0] for r in q("SELECT DISTINCT model_version FROM prediction_events")} == {"v1", "v2"}
    assert {r[0] for r in q("SELECT DISTINCT label FROM prediction_events")} == {0, 1}
    dup = one("SELECT count(DISTINCT lead_id) FROM (SELECT lead_id FROM prediction_events GROUP BY lead_id HAVING count(*) > 1) t")
    assert 0.04 < dup / predicted < 0.12

    # conversions: ~20%, some more than a day after the lead, all after it
    converted = one("SELECT count(DISTINCT lead_id) FROM conversions")
    assert 0.15 < converted / LEADS < 0.25
    late = q("""SELECT min(c.converted_at - l.created_at),
                       count(CASE WHEN c.converted_at - l.created_at > INTERVAL '1 day' THEN 1 END)
                FROM conversions c JOIN leads l ON l.id = c.lead_id""")[0]
    assert late[0] > dt.timedelta(0) and late[1] > 0.2 * converted

    # fraud side
    assert 0.94 < one("SELECT count(DISTINCT transaction_id) FROM fraud_scores") / LEADS < 0.99
    assert {r[0] for r in q("SELECT DISTINCT model_version FROM fraud_scores")} == {"fraud-v1", "fraud-v2"}
    assert 0.01 < one("SELECT count(DISTINCT transaction_id) FROM chargebacks") / LEADS < 0.03
    assert one("""SELECT min(c.charged_back_at - t.created_at) FROM chargebacks c
                  JOIN transactions t ON t.id = c.transaction_id""") >= dt.timedelta(days=1)
    lo, hi, cats = q("SELECT min(amount), max(amount), count(DISTINCT merchant_category) FROM transactions")[0]
    assert Decimal("1.00") <= lo and hi <= Decimal("2000.00") and cats == 6
    # truly fraudulent transactions are charged back far more often: flagged ones have a higher rate
    rates = dict(q("""SELECT s.is_fraud, avg(CASE WHEN c.transaction_id IS NULL THEN 0 ELSE 1 END)
                      FROM fraud_scores s LEFT JOIN (SELECT DISTINCT transaction_id FROM chargebacks) c
                      ON c.transaction_id = s.transaction_id GROUP BY s.is_fraud"""))
    assert rates[1] > 5 * rates[0]


def test_default_end_is_todays_utc_midnight():
    end = demo_data._default_end(None)
    today = dt.datetime.now(dt.timezone.utc).date()
    assert end.tzinfo is None and end in (dt.datetime(today.year, today.month, today.day),
                                          dt.datetime.combine(today - dt.timedelta(days=1), dt.time()))
    aware = dt.datetime(2026, 3, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert demo_data._default_end(aware) == dt.datetime(2026, 3, 1)


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

def test_postgres_identical(duck, pg):
    for table in demo_data.TABLES:
        a = _rows(duck, table)
        b = _rows(pg, table)
        assert a == b, table
        assert [tuple(type(v) for v in r) for r in a[:50]] == [tuple(type(v) for v in r) for r in b[:50]]
    idx = {r[0] for r in pg.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = %s", [PG_SCHEMA]).fetchall()}
    assert {"leads_id_idx", "prediction_events_lead_id_idx", "conversions_lead_id_idx", "transactions_id_idx",
            "fraud_scores_transaction_id_idx", "chargebacks_transaction_id_idx"} <= idx


@pytest.mark.parametrize("as_of", AS_OFS, ids=str)
def test_reference_queries_agree_across_engines(duck, pg, as_of):
    queries = R.all_queries(as_of or END)
    queries.update({
        "conversion_metrics_by_model_version_day": R.accuracy_precision_by_model_version_and_time("day", as_of),
        "conversion_metrics_by_day": R.conversion_metrics_by_time("day", as_of),
        "accuracy_1d_by_day": R.trailing_accuracy_series("day", "1 day", "2 days", "accuracy_1d", as_of),
        "fraud_by_model_version_and_week": R.fraud_by_model_version_and_time("week", as_of),
    })
    for name, sql in queries.items():
        a = duck.execute(sql).fetchall()
        b = pg.execute(sql).fetchall()
        _assert_same_result(a, b, f"{name} as_of={as_of}")


def test_reference_schema_parameter(duck):
    a = duck.execute(R.conversion_metrics(schema="main")).fetchall()
    assert a == duck.execute(R.conversion_metrics()).fetchall()


# ---------------------------------------------------------------------------------------------
# The reference SQL against plain Python
# ---------------------------------------------------------------------------------------------

def _ratio(num, den):
    return num / den if den else None


def _py_leads(duck, as_of):
    """Per lead (as_of-filtered): (id, created_at, utm_source, prediction (version, label) or None, converted)."""
    ok = (lambda t: True) if as_of is None else (lambda t: t <= as_of)  # noqa: E731
    latest = {}
    for _, lead_id, at, version, label, _ in _rows(duck, "prediction_events"):
        if ok(at) and (lead_id not in latest or at > latest[lead_id][0]):
            latest[lead_id] = (at, version, label)
    converted = {lead_id for _, lead_id, at, _ in _rows(duck, "conversions") if ok(at)}
    return [(i, c, s, latest[i][1:] if i in latest else None, i in converted)
            for i, c, s in _rows(duck, "leads") if ok(c)]


def _py_conversion(leads):
    pred = [x for x in leads if x[3] is not None]
    correct = sum(1 for x in pred if (x[3][1] == 1) == x[4])
    tp = sum(1 for x in pred if x[3][1] == 1 and x[4])
    pp = sum(1 for x in pred if x[3][1] == 1)
    pos = sum(1 for x in pred if x[4])
    p, r = _ratio(tp, pp), _ratio(tp, pos)
    f1 = None if p is None or r is None or p + r == 0 else 2 * p * r / (p + r)
    return {"lead_count": len(leads), "accuracy": _ratio(correct, len(pred)), "precision": p, "recall": r,
            "f1": f1, "conversion_rate": _ratio(sum(1 for x in leads if x[4]), len(leads))}


def _hour(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _boundary_as_ofs(duck) -> list[dt.datetime]:
    """as_of values that sit exactly on a boundary of some definition, taken from the data."""
    one = lambda sql: duck.execute(sql).fetchone()[0]  # noqa: E731
    # a second prediction, with another label than the first, exactly at as_of
    relabel = one("""SELECT max(b.predicted_at) FROM prediction_events a JOIN prediction_events b
                     ON a.lead_id = b.lead_id AND a.predicted_at < b.predicted_at AND a.label <> b.label""")
    # the first conversion of a predicted lead exactly at as_of
    conv = one("""SELECT max(c.converted_at) FROM conversions c JOIN prediction_events p ON p.lead_id = c.lead_id
                  WHERE c.id = (SELECT min(id) FROM conversions c2 WHERE c2.lead_id = c.lead_id)""")
    # the first chargeback of a scored transaction exactly at as_of
    cb = one("""SELECT max(c.charged_back_at) FROM chargebacks c JOIN fraud_scores s ON s.transaction_id = c.transaction_id
                WHERE c.id = (SELECT min(id) FROM chargebacks c2 WHERE c2.transaction_id = c.transaction_id)
                  AND s.scored_at < c.charged_back_at""")
    # a wrongly predicted lead in a busy afternoon, to sit exactly at E - D (excluded) and at
    # E - D - W (included)
    lead = one("""SELECT max(l.created_at) FROM leads l JOIN prediction_events p ON p.lead_id = l.id
                  WHERE l.created_at < TIMESTAMP '2026-02-24 15:00:00' AND p.label = 1
                    AND NOT EXISTS (SELECT 1 FROM conversions c WHERE c.lead_id = l.id)""")
    return [relabel, conv, cb, lead, lead + dt.timedelta(days=1), lead + dt.timedelta(days=1, hours=3)]


@pytest.mark.parametrize("as_of", AS_OFS, ids=str)
def test_reference_matches_python(duck, as_of):
    _check_against_python(duck, as_of)


def test_reference_on_boundaries(duck, pg):
    for as_of in _boundary_as_ofs(duck):
        _check_against_python(duck, as_of)
        for name, sql in R.all_queries(as_of).items():
            _assert_same_result(duck.execute(sql).fetchall(), pg.execute(sql).fetchall(), f"{name} as_of={as_of}")


def _check_against_python(duck, as_of):
    leads = _py_leads(duck, as_of)

    # 1. overall
    want = _py_conversion(leads)
    got = duck.execute(R.conversion_metrics(as_of)).fetchall()
    _assert_same_result(got, [tuple(want[k] for k in
                        ("lead_count", "accuracy", "precision", "recall", "f1", "conversion_rate"))], "overall")

    # 2. by model version
    versions = sorted({x[3][0] if x[3] else None for x in leads}, key=lambda v: (v is None, v or ""))
    want = []
    for v in versions:
        m = _py_conversion([x for x in leads if (x[3][0] if x[3] else None) == v])
        want.append((v, m["accuracy"], m["precision"], m["recall"], m["f1"]))
    _assert_same_result(duck.execute(R.conversion_metrics_by_model_version(as_of)).fetchall(), want, "by version")

    # 3. by hour
    by_hour: dict[dt.datetime, list] = {}
    for x in leads:
        by_hour.setdefault(_hour(x[1]), []).append(x)
    hours = sorted(by_hour)
    want = []
    for h in hours:
        m = _py_conversion(by_hour[h])
        want.append((h, m["accuracy"], m["precision"], m["recall"]))
    _assert_same_result(duck.execute(R.conversion_metrics_by_hour(as_of)).fetchall(), want, "by hour")

    # 5. accuracy_3h at as_of (or at END)
    e = as_of or END
    window = [x for x in leads
              if e - dt.timedelta(days=1, hours=3) < x[1] <= e - dt.timedelta(days=1)]
    got = duck.execute(R.accuracy_3h_at(e)).fetchall()
    _assert_same_result(got, [(_py_conversion(window)["accuracy"],)], "accuracy_3h_at")

    # 6. accuracy_3h rolling by hour, empty buckets included
    want = []
    if leads:
        by_time = sorted(leads, key=lambda x: x[1])
        times = [x[1] for x in by_time]
        b, last = _hour(times[0]), _hour(times[-1])
        while b <= last:
            e = b + dt.timedelta(hours=1)
            lo = bisect.bisect_left(times, e - dt.timedelta(days=1, hours=3))
            hi = bisect.bisect_left(times, e - dt.timedelta(days=1))
            want.append((b, _py_conversion(by_time[lo:hi])["accuracy"]))
            b += dt.timedelta(hours=1)
    got = duck.execute(R.accuracy_3h_by_hour(as_of)).fetchall()
    _assert_same_result(got, want, "accuracy_3h_by_hour")
    if as_of is None:
        # the outage hours are buckets of their own (no leads, yet a value from a day earlier)
        gap_lo, _ = demo_data.outage_window(END)
        assert gap_lo in {r[0] for r in got} and gap_lo not in hours

    # 7. by utm_source
    sources = sorted({x[2] for x in leads}, key=lambda v: (v is None, v or ""))
    want = []
    for s in sources:
        m = _py_conversion([x for x in leads if x[2] == s])
        want.append((s, m["conversion_rate"], m["lead_count"]))
    _assert_same_result(duck.execute(R.conversion_by_utm_source(as_of)).fetchall(), want, "by utm_source")

    # 8. fraud overall
    ok = (lambda t: True) if as_of is None else (lambda t: t <= as_of)  # noqa: E731
    latest = {}
    for _, tx, at, version, _, flag in _rows(duck, "fraud_scores"):
        if ok(at) and (tx not in latest or at > latest[tx][0]):
            latest[tx] = (at, version, flag)
    cb = {tx for _, tx, at, _ in _rows(duck, "chargebacks") if ok(at)}
    txs = [(i, a) for i, c, _, a, _m in _rows(duck, "transactions") if ok(c)]
    missed = [a for i, a in txs if i in latest and latest[i][2] == 0 and i in cb]
    missed_sum = sum(missed, Decimal("0.00")) if missed else None
    alarms = sum(1 for i, _ in txs if i in latest and latest[i][2] == 1 and i not in cb)
    tp = sum(1 for i, _ in txs if i in latest and latest[i][2] == 1 and i in cb)
    flagged = sum(1 for i, _ in txs if i in latest and latest[i][2] == 1)
    pos = sum(1 for i, _ in txs if i in latest and i in cb)
    want = [(missed_sum, alarms, (missed_sum or Decimal("0.00")) + 25 * alarms,
             _ratio(tp, flagged), _ratio(tp, pos))]
    _assert_same_result(duck.execute(R.fraud_metrics(as_of)).fetchall(), want, "fraud overall")
