"""Property-based tests (issue 8): random small data sets and random queries over the demo model,
each compiled and run on DuckDB and compared with the plain-Python reference evaluator in
property_reference.py (which implements the documented semantics, independently).

The data hold duplicates (a lead predicted twice, converted twice, a transaction rescored or
charged back twice; never two events of one key at the same moment, so dedupe has no ties),
late rows (conversions days after the lead, after the data's span), orphan events, empty
groups and empty hours, and times on whole hours that sit exactly a window or a label delay
away from as_of and from the bucket ends.

Each property is one kind of query; a failure prints the minimal data set and query. Profiles
(HYPOTHESIS_PROFILE): "ci" (the default; derandomized, so every run draws the same cases), "dev"
(a quick tenth of it), "long" (ten times more, random).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import property_reference as ref
from metrics_layer.demo_data import TABLES
from metrics_layer.engines.duckdb_engine import DuckDBEngine
from metrics_layer.model import load_model
from metrics_layer.project import Project
from metrics_layer.query import DimensionRef, Filter, SemanticQuery
from metrics_layer.service import MetricsService

REPO = Path(__file__).resolve().parent.parent

# No deadline: an example's time is mostly DuckDB's (connect, load, run), not the property's.
_COMMON = dict(deadline=None, print_blob=True)
settings.register_profile("ci", max_examples=300, derandomize=True, database=None, **_COMMON)
settings.register_profile("dev", max_examples=30, derandomize=True, database=None, **_COMMON)
settings.register_profile("long", max_examples=3000, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(weight: float) -> settings:
    """The profile's settings with `weight` times its number of examples."""
    return settings(PROFILE, max_examples=max(1, int(PROFILE.max_examples * weight)))


MODEL = load_model(REPO / "metrics")
PROJECT = Project(root=REPO, engine_url="duckdb:///:memory:", metrics_dir=REPO / "metrics")

BASE = dt.datetime(2026, 3, 1)  # a Sunday
SPAN_HOURS = 48
SECOND, HOUR, DAY = dt.timedelta(seconds=1), dt.timedelta(hours=1), dt.timedelta(days=1)

# ---------------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """{table: [row dict]} for the six demo tables."""

    tables: dict[str, list[dict]]

    def __repr__(self) -> str:
        parts = []
        for table, rows in self.tables.items():
            if rows:
                cols = ref.TABLE_COLUMNS[table]
                body = ", ".join("(" + ", ".join(_short(r[c]) for c in cols) + ")" for r in rows)
                parts.append(f"{table}{cols}: [{body}]")
        return "Dataset(" + "; ".join(parts) + ")" if parts else "Dataset(empty)"

    def times(self) -> list[dt.datetime]:
        return sorted({v for rows in self.tables.values() for r in rows for v in r.values() if isinstance(v, dt.datetime)})


def _short(v) -> str:
    if isinstance(v, dt.datetime):
        return f"'{v:%m-%d %H:%M:%S}'"
    return repr(v) if not isinstance(v, Decimal) else str(v)


# Whole hours mostly; a second past, half past or a second before the next hour sometimes.
# Hours cluster at the start of each day (one label delay apart), so that windows hold rows.
_hours = st.one_of(st.integers(0, 3), st.integers(24, 27), st.integers(0, SPAN_HOURS - 1))
moments = st.builds(lambda h, s: BASE + h * HOUR + s * SECOND, _hours, st.sampled_from([0, 0, 0, 1, 1800, 3599]))
cents = st.integers(1, 99999).map(lambda c: Decimal(c).scaleb(-2))

# Delays (seconds) of an event after its lead / transaction; a key's events get distinct delays.
PREDICTION_DELAYS = [0, 1, 3600, 3 * 3600, 86400, 60]
CONVERSION_DELAYS = [3600, 0, 86400, 86400 + 3 * 3600, 2 * 86400, 5 * 86400]  # 5 days: after the data
SCORE_DELAYS = [1, 0, 3600, 86400]
CHARGEBACK_DELAYS = [86400, 0, 3600, 2 * 86400, 10 * 86400]


def _events(delays):
    return st.lists(st.sampled_from(delays), max_size=2, unique=True)


@st.composite
def conversion_data(draw) -> Dataset:
    """leads, prediction_events, conversions (the fraud tables empty)."""
    n = draw(st.integers(0, 8))
    leads, predictions, conversions = [], [], []
    for lead_id in range(1, n + 1):
        leads.append({"id": lead_id, "created_at": draw(moments),
                      "utm_source": draw(st.sampled_from(["google", "ads", None, "email"]))})
    parents = [(l["id"], l["created_at"]) for l in leads]
    if draw(st.integers(0, 9)) == 9:  # events of a lead that is not in leads
        parents.append((n + 1, draw(moments)))
    for lead_id, created in parents:
        for delay in draw(_events(PREDICTION_DELAYS)):
            predictions.append({"event_id": len(predictions) + 1, "lead_id": lead_id,
                                "predicted_at": created + delay * SECOND,
                                "model_version": draw(st.sampled_from(["v1", "v2"])),
                                "label": draw(st.sampled_from([0, 1])), "score": draw(st.sampled_from([0.25, 0.5, 0.75]))})
        for delay in draw(_events(CONVERSION_DELAYS)):
            conversions.append({"id": len(conversions) + 1, "lead_id": lead_id,
                                "converted_at": created + delay * SECOND, "revenue": draw(cents)})
    return Dataset({"leads": leads, "prediction_events": predictions, "conversions": conversions,
                    "transactions": [], "fraud_scores": [], "chargebacks": []})


@st.composite
def fraud_data(draw) -> Dataset:
    """transactions, fraud_scores, chargebacks (the conversion tables empty)."""
    n = draw(st.integers(0, 8))
    transactions, scores, chargebacks = [], [], []
    for tx_id in range(1, n + 1):
        transactions.append({"id": tx_id, "created_at": draw(moments),
                             "merchant_category": draw(st.sampled_from(["food", "travel", "electronics", None])),
                             "amount": draw(cents)})
    parents = [(t["id"], t["created_at"], t["amount"]) for t in transactions]
    if draw(st.integers(0, 9)) == 9:  # a score or chargeback of an unknown transaction
        parents.append((n + 1, draw(moments), Decimal("1.00")))
    for tx_id, created, amount in parents:
        for delay in draw(_events(SCORE_DELAYS)):
            scores.append({"id": len(scores) + 1, "transaction_id": tx_id, "scored_at": created + delay * SECOND,
                           "model_version": draw(st.sampled_from(["fraud-v1", "fraud-v2"])),
                           "score": draw(st.sampled_from([0.1, 0.9])), "is_fraud": draw(st.sampled_from([0, 1]))})
        for delay in draw(_events(CHARGEBACK_DELAYS)):
            chargebacks.append({"id": len(chargebacks) + 1, "transaction_id": tx_id,
                                "charged_back_at": created + delay * SECOND, "amount": amount})
    return Dataset({"leads": [], "prediction_events": [], "conversions": [],
                    "transactions": transactions, "fraud_scores": scores, "chargebacks": chargebacks})


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Family:
    data: st.SearchStrategy
    time: str  # the base model's time dimension
    metrics: tuple[str, ...]  # no window of their own, any model of the family
    base_metrics: tuple[str, ...]  # measures of the base model only (they can roll)
    dimensions: tuple[str, ...]  # categorical / number dimensions
    values: dict  # dimension -> values to filter by


CONVERSION = Family(
    conversion_data(), "leads.created_at",
    ("leads.lead_count", "conversion_rate", "accuracy", "precision", "recall", "f1",
     "conversions.revenue", "predictions.prediction_count"),
    ("leads.lead_count", "conversion_rate", "accuracy", "precision", "recall", "f1"),
    ("leads.utm_source", "predictions.model_version", "predictions.label"),
    {"leads.utm_source": ["google", "ads", "email"], "predictions.model_version": ["v1", "v2"],
     "predictions.label": [0, 1]},
)
FRAUD = Family(
    fraud_data(), "transactions.created_at",
    ("transactions.transaction_count", "transactions.amount", "transactions.false_alarms",
     "transactions.missed_fraud_amount", "fraud_precision", "fraud_recall"),
    ("transactions.transaction_count", "transactions.amount", "transactions.false_alarms",
     "transactions.missed_fraud_amount", "fraud_precision", "fraud_recall"),
    ("transactions.merchant_category", "fraud_scores.model_version", "fraud_scores.is_fraud"),
    {"transactions.merchant_category": ["food", "travel", "electronics"],
     "fraud_scores.model_version": ["fraud-v1", "fraud-v2"], "fraud_scores.is_fraud": [0, 1]},
)
FAMILIES = {"conversion": CONVERSION, "fraud": FRAUD}

WINDOWS = ["3 hours", "1 hour", "2 hours", "90 minutes", "1 day"]


def moment_near(data: Dataset, shifts=(dt.timedelta(0),)):
    """A moment of the data (or a whole hour), moved by one of `shifts` and by -1 s / 0 / +1 s."""
    anchors = st.sampled_from(data.times()) if data.times() else moments
    return st.builds(lambda a, s, e: a + s + e * SECOND, st.one_of(anchors, anchors, moments),
                     st.sampled_from(list(shifts)), st.sampled_from([0, -1, 1]))


@st.composite
def dimension_filter(draw, family: Family, data: Dataset, time_ok: bool = True):
    """A row filter on one of the family's dimensions (or its time)."""
    names = list(family.dimensions) + ([family.time] if time_ok else [])
    name = draw(st.sampled_from(names))
    if name == family.time:
        return draw(time_filter(family, data))
    values = family.values[name]
    op = draw(st.sampled_from(["=", "in", "!=", "not in", "is null", "is not null"]))
    if op in ("in", "not in"):
        return (name, op, tuple(draw(st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True))))
    if op in ("is null", "is not null"):
        return (name, op, None)
    return (name, op, draw(st.sampled_from(values)))


@st.composite
def time_filter(draw, family: Family, data: Dataset):
    op = draw(st.sampled_from([">=", "<", "between"]))
    value = draw(moment_near(data))
    if op == "between":
        other = draw(moment_near(data, (dt.timedelta(0), 3 * HOUR, DAY)))
        return (family.time, op, tuple(sorted((value, other))))
    return (family.time, op, value)


def metric_filter(metrics):
    return st.tuples(st.sampled_from(list(metrics)), st.sampled_from([">=", "<", "is not null"]),
                     st.sampled_from([1, 0.5, 2, 0])).map(lambda f: (f[0], f[1], None if f[1] == "is not null" else f[2]))


def _dimension_refs(family: Family, with_time: bool):
    names = list(family.dimensions)
    dims = st.lists(st.sampled_from(names), max_size=2, unique=True).map(lambda ds: [(d, None) for d in ds])
    if not with_time:
        return dims
    time = st.sampled_from([None, "hour", "day", "week"]).map(lambda g: (family.time, g))
    return st.tuples(dims, st.lists(time, max_size=1)).map(lambda p: p[0] + p[1])


def _filters(draw, family: Family, data: Dataset, metrics, time_ok: bool = True):
    filters = draw(st.lists(dimension_filter(family, data, time_ok), max_size=2))
    if draw(st.integers(0, 4)) == 4:
        filters.append(draw(metric_filter(metrics)))
    return tuple(filters)


@st.composite
def plain_query(draw, family: Family, data: Dataset) -> ref.Query:
    """Metrics x dimensions (any grain) x filters, with or without as_of; no window."""
    metrics = tuple(draw(st.lists(st.sampled_from(family.metrics), min_size=1, max_size=3, unique=True)))
    dims = tuple(draw(_dimension_refs(family, with_time=True)))
    as_of = draw(st.one_of(st.none(), moment_near(data, (dt.timedelta(0), 3 * HOUR, DAY))))
    return ref.Query(metrics, dims, _filters(draw, family, data, metrics), as_of=as_of)


@st.composite
def fraud_loss_query(draw, data: Dataset) -> ref.Query:
    """fraud_loss (a derived metric over a sum and a count), alone or with other fraud metrics."""
    others = draw(st.lists(st.sampled_from(FRAUD.metrics), max_size=2, unique=True))
    base = draw(plain_query(FRAUD, data))
    return ref.Query(("fraud_loss", *others), base.dimensions, base.filters, as_of=base.as_of)


def _windowed_metrics(draw, family: Family, pool):
    """(metrics, window override): accuracy_3h with its own window, or any metrics under an override."""
    window = draw(st.one_of(st.none(), st.sampled_from(WINDOWS))) if family is CONVERSION else draw(st.sampled_from(WINDOWS))
    metrics = draw(st.lists(st.sampled_from(pool), max_size=2, unique=True))
    if family is CONVERSION and (window is None or draw(st.booleans())):
        metrics = ["accuracy_3h", *metrics]
    if not metrics:
        metrics = [draw(st.sampled_from(pool))]
    return tuple(metrics), window


def _as_of_near_window(draw, data: Dataset, window: str | None, metrics):
    """as_of a delay, or a delay and a window, after a moment of the data (the window's bounds)."""
    width = ref.duration(window or "3 hours")
    delay = DAY if "accuracy_3h" in metrics else dt.timedelta(0)
    return draw(moment_near(data, (delay, delay + width, dt.timedelta(0), width)))


@st.composite
def window_query(draw, family: Family, data: Dataset) -> ref.Query:
    """A trailing window as one value at as_of, sliced by categorical dimensions."""
    metrics, window = _windowed_metrics(draw, family, family.metrics)
    dims = tuple(draw(_dimension_refs(family, with_time=False)))
    as_of = _as_of_near_window(draw, data, window, metrics)
    return ref.Query(metrics, dims, _filters(draw, family, data, metrics), window, as_of)


@st.composite
def rolling_query(draw, family: Family, data: Dataset, ranged: bool) -> ref.Query:
    """A rolling series by the base model's time at hour or day; `ranged`: with a range on that time."""
    metrics, window = _windowed_metrics(draw, family, family.base_metrics)
    if ranged and window is None:
        metrics = ("accuracy_3h",)  # every measure rolls: no plain group shares the range filter
    grain = draw(st.sampled_from(["hour", "day"]))
    as_of = _as_of_near_window(draw, data, window, metrics) if draw(st.booleans()) else None
    filters = list(draw(st.lists(dimension_filter(family, data, time_ok=False), max_size=1)))
    if ranged:
        kind = draw(st.sampled_from([">=", "<", "between", ">= and <"]))
        low = draw(moment_near(data, (dt.timedelta(0), -DAY, HOUR)))
        high = draw(moment_near(data, (dt.timedelta(0), DAY, 3 * HOUR)))
        low, high = sorted((low, high))
        if kind == "between":
            filters.append((family.time, "between", (low, high)))
        if kind in (">=", ">= and <"):
            filters.append((family.time, ">=", low))
        if kind in ("<", ">= and <"):
            filters.append((family.time, "<", high))
    return ref.Query(metrics, ((family.time, grain),), tuple(filters), window, as_of)


def _cases(family_name: str, query_strategy, **kwargs):
    family = FAMILIES[family_name]
    if query_strategy is fraud_loss_query:
        return family.data.flatmap(lambda d: st.tuples(st.just(d), st.lists(fraud_loss_query(d), min_size=1, max_size=3)))
    return family.data.flatmap(
        lambda d: st.tuples(st.just(d), st.lists(query_strategy(family, d, **kwargs), min_size=1, max_size=3)))


# ---------------------------------------------------------------------------------------------
# Running and comparing
# ---------------------------------------------------------------------------------------------

def _literal(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, dt.datetime):
        return f"TIMESTAMP '{v.isoformat(sep=' ')}'"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return str(v)


def _load(data: Dataset) -> MetricsService:
    engine = DuckDBEngine(":memory:", result_cache=False)
    for table, columns in TABLES.items():
        engine.execute(f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, t, _ in columns)})")
        rows = data.tables[table]
        if rows:
            values = ", ".join("(" + ", ".join(_literal(r.get(c)) for c, _, _ in columns) + ")" for r in rows)  # columns the generator leaves out are NULL
            engine.execute(f"INSERT INTO {table} VALUES {values}")
    return MetricsService(PROJECT, engine=engine, model=MODEL)


def semantic(query: ref.Query) -> SemanticQuery:
    return SemanticQuery(
        metrics=query.metrics,
        dimensions=tuple(DimensionRef(n, g) for n, g in query.dimensions),
        filters=tuple(Filter(f, op, v) for f, op, v in query.filters),
        window=query.window, as_of=query.as_of,
    )


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float, Decimal)) and isinstance(b, (int, float, Decimal)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


CASES_RUN = {"queries": 0}


def check(data: Dataset, queries: list[ref.Query]) -> None:
    """Every query's result equals the reference's: the same dimension keys, the same values."""
    service = _load(data)
    try:
        for query in queries:
            columns, expected = ref.evaluate(data.tables, query)
            result = service.run(semantic(query))
            CASES_RUN["queries"] += 1
            assert [c.name for c in result.columns] == columns
            n = len(query.dimensions)
            got = {}
            for row in result.rows:
                assert row[:n] not in got, f"{query}: two rows for {row[:n]}"
                got[row[:n]] = row[n:]
            want = {row[:n]: row[n:] for row in expected}
            missing = [k for k in want if k not in got]
            extra = [k for k in got if k not in want]
            assert not missing and not extra, (
                f"{query}\n{data!r}\nrows missing: {missing}\nrows not expected: {extra}\n"
                f"expected: {expected}\nactual:   {result.rows}")
            wrong = {k: (got[k], want[k]) for k in want if not all(map(_same, got[k], want[k]))}
            assert not wrong, f"{query}\n{data!r}\n(actual, expected) by key: {wrong}\nexpected: {expected}\nactual:   {result.rows}"
    finally:
        service.engine.close()


# ---------------------------------------------------------------------------------------------
# The properties
# ---------------------------------------------------------------------------------------------

def _leads(*leads) -> Dataset:
    """Leads (id, hours after BASE, label predicted a second later or None) without conversions."""
    rows = {t: [] for t in ref.TABLE_COLUMNS}
    for lead_id, hours, label in leads:
        created = BASE + hours * HOUR
        rows["leads"].append({"id": lead_id, "created_at": created, "utm_source": "google"})
        if label is not None:
            rows["prediction_events"].append({"event_id": lead_id, "lead_id": lead_id, "predicted_at": created + SECOND,
                                              "model_version": "v1", "label": label, "score": 0.5})
    return Dataset(rows)


def _transactions(*transactions) -> Dataset:
    """Transactions (id, hours after BASE, is_fraud scored a second later or None) without chargebacks."""
    rows = {t: [] for t in ref.TABLE_COLUMNS}
    for tx_id, hours, is_fraud in transactions:
        created = BASE + hours * HOUR
        rows["transactions"].append({"id": tx_id, "created_at": created, "merchant_category": "food",
                                     "amount": Decimal("10.00")})
        if is_fraud is not None:
            rows["fraud_scores"].append({"id": tx_id, "transaction_id": tx_id, "scored_at": created + SECOND,
                                         "model_version": "fraud-v1", "score": 0.9, "is_fraud": is_fraud})
    return Dataset(rows)


_HOURLY_TX = (("transactions.created_at", "hour"),)
_HOURLY_LEADS = (("leads.created_at", "hour"),)

# Cases spelled out from the spec (test_spec_examples), each known to fail on the main of this
# commit for the reason in its comment; the properties below draw the like of them at random.
KNOWN = {
    "derived": [
        # 4 false alarms and no missed fraud: 0 + 25 * 4 = 100 (main: NULL, the SUM over no rows)
        (_transactions((1, 0, 1), (2, 1, 1), (3, 2, 1), (4, 3, 1)),
         [ref.Query(("fraud_loss",), (("transactions.merchant_category", None),))]),
    ],
    "window:conversion": [
        # the lead sits exactly at as_of - delay: inside (main: outside, NULL)
        (_leads((1, 0, 0)), [ref.Query(("accuracy_3h",), as_of=BASE + DAY)]),
        # the lead sits exactly at as_of - delay - window: outside, NULL (main: inside, 1.0)
        (_leads((1, 0, 0)), [ref.Query(("accuracy_3h",), as_of=BASE + DAY + 3 * HOUR)]),
    ],
    "window:fraud": [
        # with no delay the window ends at as_of itself, which as_of keeps (main: 0)
        (_transactions((1, 0, None)), [ref.Query(("transactions.transaction_count",), window="3 hours", as_of=BASE)]),
        (_transactions((1, 0, None)), [ref.Query(("transactions.transaction_count",), window="3 hours", as_of=BASE + 3 * HOUR)]),
    ],
    "ranged:conversion": [
        # buckets 03-02 00:00 and 01:00 only, each 1.0 from the lead of 03-01 00:00 a day back
        # (main: every bucket from 03-01 00:00, NULL, since the range drops the lead itself)
        (_leads((1, 0, 0), (2, 24.5, 1)),
         [ref.Query(("accuracy_3h",), _HOURLY_LEADS, (("leads.created_at", "between", (BASE + DAY, BASE + DAY + HOUR)),))]),
    ],
    "ranged:fraud": [
        # bucket 02:00 only, its window [00:00, 03:00) holds both transactions (main: 00:00 to 02:00, and 1)
        (_transactions((1, 0, None), (2, 2, None)),
         [ref.Query(("transactions.transaction_count",), _HOURLY_TX, (("transactions.created_at", ">=", BASE + 2 * HOUR),),
                    window="3 hours")]),
    ],
}


def _run(strategy, weight: float):
    """The property: every case `strategy` draws matches the reference."""
    def run(case):
        check(*case)
    given(strategy)(examples(weight)(run))()


@pytest.mark.parametrize("kind,index", [(k, i) for k, cases in KNOWN.items() for i in range(len(cases))],
                         ids=[f"{k}-{i}" for k, cases in KNOWN.items() for i in range(len(cases))])
def test_spec_examples(kind, index):
    """The cases of KNOWN match the reference (they fail on today's main, see their comments)."""
    check(*KNOWN[kind][index])


@pytest.mark.parametrize("family", ["conversion", "fraud"])
def test_plain_metrics_match_reference(family):
    """Metrics x dimensions x grains x filters x as_of, no window, no derived-over-sum metric."""
    _run(_cases(family, plain_query), 1.0)


def test_derived_over_empty_sum_is_zero_in_its_group():
    """(e) fraud_loss = missed_fraud_amount + 25 * false_alarms: no missed fraud in a group reads 0.

    Known to fail on today's main (a SUM over no rows is NULL inside the formula).
    """
    _run(_cases("fraud", fraud_loss_query), 0.5)


@pytest.mark.parametrize("family", ["conversion", "fraud"])
def test_trailing_window_value_at_as_of(family):
    """(d) one value over (as_of - delay - window, as_of - delay]; accuracy_3h and window overrides.

    Known to fail on today's main at the bounds (today: [as_of - delay - window, as_of - delay)).
    """
    _run(_cases(family, window_query), 0.75)


@pytest.mark.parametrize("family", ["conversion", "fraud"])
def test_rolling_series(family):
    """(d) a rolling series by the base model's time: windows ending at each bucket's end, every bucket."""
    _run(_cases(family, rolling_query, ranged=False), 0.75)


@pytest.mark.parametrize("family", ["conversion", "fraud"])
def test_rolling_series_in_a_time_range(family):
    """(d) a range on the rolling time selects buckets; their windows still read rows before the range.

    Known to fail on today's main (the range filters rows, and the series spans all the data).
    """
    _run(_cases(family, rolling_query, ranged=True), 0.5)


@pytest.fixture(autouse=True, scope="module")
def _report_cases(request):
    """Say how many queries were compared (with -v or in the summary of a failing run)."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"test_properties: {CASES_RUN['queries']} queries compared with the reference")
