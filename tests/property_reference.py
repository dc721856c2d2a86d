"""A reference evaluator of the demo model (metrics/*.yml), in plain Python, for the property tests.

Independent of metrics_layer: nothing is imported from it and no SQL is run. The demo YAML is
transcribed by hand below (MODELS, MEASURES, METRICS); the semantics are those of the spec of
issue 8:

(a) dedupe: predictions keep the latest row per lead_id (by predicted_at), conversions the
    earliest per lead_id (by converted_at), fraud_scores the latest per transaction_id (by
    scored_at), chargebacks the earliest per transaction_id (by charged_back_at).
(b) as_of T: every model keeps only the rows whose time is at or before T, then dedupes. A
    model's time is its `time:` or else its dedupe `by` column (load.py's rule, and the only
    way predictions, conversions, fraud_scores and chargebacks have a time at all).
(c) a measure's rows are its model's rows LEFT JOINed many-to-one on the entity (lead id,
    transaction id) to the other models of its family; measure, metric and query filters are
    conditions on that joined row, with SQL NULL semantics (a comparison with NULL is false).
(d) a trailing window W with label delay D: as one value, the rows with time in
    (T - D - W, T - D] (T = as_of); as a rolling series by the window model's time at a grain,
    bucket b (end e = b + grain) aggregates the rows with time in [e - D - W, e - D); the
    buckets run from the first to the last bucket of that model's rows (after as_of), empty
    ones included; a filter on the rolling time dimension selects buckets, not rows.
(e) in a group that exists, an additive measure over no rows enters a derived metric as 0; a
    ratio with an empty or zero denominator is NULL. A group exists when any of the query's
    measures' models has rows for it.
(f) count_distinct counts distinct non-null values; a sum of nothing is NULL (outside (e)).

Rows are dicts keyed by column name; a joined row is keyed "model.column". None is NULL.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

# ---------------------------------------------------------------------------------------------
# The demo model, transcribed from metrics/conversion.yml and metrics/fraud.yml
# ---------------------------------------------------------------------------------------------

# Table columns (metrics_layer/demo_data.py), in order.
TABLE_COLUMNS = {
    "leads": ("id", "created_at", "utm_source"),
    "prediction_events": ("event_id", "lead_id", "predicted_at", "model_version", "label", "score"),
    "conversions": ("id", "lead_id", "converted_at", "revenue"),
    "transactions": ("id", "created_at", "merchant_category", "amount"),
    "fraud_scores": ("id", "transaction_id", "scored_at", "model_version", "score", "is_fraud"),
    "chargebacks": ("id", "transaction_id", "charged_back_at", "amount"),
}


@dataclass(frozen=True)
class Model:
    table: str
    time: str  # the column that places a row in time (as_of, windows)
    entity: str  # the join key column (lead id / transaction id)
    keep: str | None = None  # dedupe on `entity` by `time`: "latest" | "earliest"; None: no dedupe
    declared_time: bool = False  # `time:` in the YAML (else the time is the dedupe `by` column)


MODELS = {
    "leads": Model("leads", "created_at", "id", declared_time=True),
    "predictions": Model("prediction_events", "predicted_at", "lead_id", "latest"),
    "conversions": Model("conversions", "converted_at", "lead_id", "earliest"),
    "transactions": Model("transactions", "created_at", "id", declared_time=True),
    "fraud_scores": Model("fraud_scores", "scored_at", "transaction_id", "latest"),
    "chargebacks": Model("chargebacks", "charged_back_at", "transaction_id", "earliest"),
}

# as_of cuts the models without `time:` on their dedupe `by` column (model/load.py's rule, the
# README's "every model involved", tests/reference.py). False: only models with `time:` are cut.
AS_OF_CUTS_DEDUPE_BY = True

# Models that join each other on their entity (all many-to-one after dedupe).
FAMILIES = (("leads", "predictions", "conversions"), ("transactions", "fraud_scores", "chargebacks"))

# Dimensions: name -> (joined-row column, type).
DIMENSIONS = {
    "leads.utm_source": ("leads.utm_source", "categorical"),
    "leads.created_at": ("leads.created_at", "time"),
    "predictions.model_version": ("predictions.model_version", "categorical"),
    "predictions.label": ("predictions.label", "number"),
    "predictions.predicted_at": ("predictions.predicted_at", "time"),
    "conversions.converted_at": ("conversions.converted_at", "time"),
    "transactions.merchant_category": ("transactions.merchant_category", "categorical"),
    "transactions.created_at": ("transactions.created_at", "time"),
    "fraud_scores.model_version": ("fraud_scores.model_version", "categorical"),
    "fraud_scores.is_fraud": ("fraud_scores.is_fraud", "number"),
}

# The time dimension of each model, if it has one: slicing by it rolls a window.
TIME_DIMENSION = {
    "leads": "leads.created_at",
    "predictions": "predictions.predicted_at",
    "conversions": "conversions.converted_at",
    "transactions": "transactions.created_at",
}


def _eq(row: dict, column: str, value) -> bool:
    """SQL `column = value`: false when the column is NULL."""
    return row[column] is not None and row[column] == value


def _present(row: dict, column: str) -> bool:
    return row[column] is not None


# Conditions of the YAML (measure and metric filters).
def _correct(r):  # (label = 1 AND converted) OR (label = 0 AND NOT converted)
    return (_eq(r, "predictions.label", 1) and _present(r, "conversions.lead_id")) or (
        _eq(r, "predictions.label", 0) and not _present(r, "conversions.lead_id"))


def _predicted(r):
    return _present(r, "predictions.lead_id")


def _true_positive(r):
    return _eq(r, "predictions.label", 1) and _present(r, "conversions.lead_id")


def _predicted_positive(r):
    return _eq(r, "predictions.label", 1)


def _actual_positive(r):
    return _present(r, "predictions.lead_id") and _present(r, "conversions.lead_id")


def _converted(r):
    return _present(r, "conversions.lead_id")


@dataclass(frozen=True)
class Measure:
    model: str
    agg: str  # count | count_distinct | sum
    column: str | None  # joined-row column; None counts rows
    filter: Callable[[dict], bool] | None = None


MEASURES = {
    "leads.lead_count": Measure("leads", "count_distinct", "leads.id"),
    "predictions.prediction_count": Measure("predictions", "count", None),
    "conversions.revenue": Measure("conversions", "sum", "conversions.revenue"),
    "transactions.transaction_count": Measure("transactions", "count", None),
    "transactions.amount": Measure("transactions", "sum", "transactions.amount"),
    "transactions.missed_fraud_amount": Measure(
        "transactions", "sum", "transactions.amount",
        lambda r: _eq(r, "fraud_scores.is_fraud", 0) and _present(r, "chargebacks.transaction_id")),
    "transactions.false_alarms": Measure(
        "transactions", "count", None,
        lambda r: _eq(r, "fraud_scores.is_fraud", 1) and not _present(r, "chargebacks.transaction_id")),
    "transactions.caught_fraud": Measure(
        "transactions", "count", None,
        lambda r: _eq(r, "fraud_scores.is_fraud", 1) and _present(r, "chargebacks.transaction_id")),
    "transactions.flagged": Measure("transactions", "count", None, lambda r: _eq(r, "fraud_scores.is_fraud", 1)),
    "transactions.scored_chargebacks": Measure(
        "transactions", "count", None,
        lambda r: _present(r, "fraud_scores.transaction_id") and _present(r, "chargebacks.transaction_id")),
}


@dataclass(frozen=True)
class Use:
    """A measure under an extra (metric) filter."""

    measure: str
    filter: Callable[[dict], bool] | None = None


@dataclass(frozen=True)
class Ratio:
    numerator: Use
    denominator: Use
    window: str | None = None
    delay: str | None = None


@dataclass(frozen=True)
class Derived:
    """formula(values) over `inputs`: measure names or metric names."""

    inputs: tuple[str, ...]
    formula: Callable[..., Any]


def _divide(a, b):
    """a / NULLIF(b, 0), as a double; NULL in, NULL out."""
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)


METRICS = {
    "accuracy": Ratio(Use("leads.lead_count", _correct), Use("leads.lead_count", _predicted)),
    "precision": Ratio(Use("leads.lead_count", _true_positive), Use("leads.lead_count", _predicted_positive)),
    "recall": Ratio(Use("leads.lead_count", _true_positive), Use("leads.lead_count", _actual_positive)),
    "conversion_rate": Ratio(Use("leads.lead_count", _converted), Use("leads.lead_count")),
    "accuracy_3h": Ratio(Use("leads.lead_count", _correct), Use("leads.lead_count", _predicted), "3 hours", "1 day"),
    "f1": Derived(("precision", "recall"),
                  lambda p, r: None if p is None or r is None else _divide(2 * p * r, p + r)),
    "fraud_loss": Derived(("transactions.missed_fraud_amount", "transactions.false_alarms"),
                          lambda missed, alarms: None if missed is None or alarms is None else missed + 25 * alarms),
    "fraud_precision": Ratio(Use("transactions.caught_fraud"), Use("transactions.flagged")),
    "fraud_recall": Ratio(Use("transactions.caught_fraud"), Use("transactions.scored_chargebacks")),
}


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    """What the tests ask: the reference's own shape (the test turns it into a SemanticQuery)."""

    metrics: tuple[str, ...]
    dimensions: tuple[tuple[str, str | None], ...] = ()  # (name, grain)
    filters: tuple[tuple[str, str, Any], ...] = ()  # (field, op, value); field a dimension or a metric
    window: str | None = None
    as_of: dt.datetime | None = None


GRAINS = {"minute": dt.timedelta(minutes=1), "hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1),
          "week": dt.timedelta(days=7)}

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}


def duration(text: str | None) -> dt.timedelta:
    """'3 hours' -> timedelta; None -> 0."""
    if text is None:
        return dt.timedelta(0)
    match = re.fullmatch(r"\s*(\d+)\s*(second|minute|hour|day|week)s?\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def truncate(value: dt.datetime, grain: str) -> dt.datetime:
    """date_trunc: weeks start on Monday."""
    if grain == "minute":
        return value.replace(second=0, microsecond=0)
    if grain == "hour":
        return value.replace(minute=0, second=0, microsecond=0)
    day = value.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "day":
        return day
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    raise ValueError(grain)


def matches(value, op: str, operand) -> bool:
    """SQL `value op operand` in a WHERE clause: a NULL value matches only `is null`."""
    if op == "is null":
        return value is None
    if op == "is not null":
        return value is not None
    if value is None:
        return False
    if op == "in":
        return value in operand
    if op == "not in":
        return value not in operand
    if op == "between":
        return operand[0] <= value <= operand[1]
    return {"=": value == operand, "!=": value != operand, "<": value < operand, "<=": value <= operand,
            ">": value > operand, ">=": value >= operand}[op]


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def model_rows(tables: dict[str, list[dict]], as_of: dt.datetime | None) -> dict[str, list[dict]]:
    """Each model's rows: cut at as_of on the model's time, then deduped (a, b)."""
    out = {}
    for name, model in MODELS.items():
        cut = as_of is not None and (model.declared_time or AS_OF_CUTS_DEDUPE_BY)
        rows = [r for r in tables[model.table] if not cut or r[model.time] <= as_of]
        if model.keep is not None:
            kept: dict[Any, dict] = {}
            for r in rows:
                best = kept.get(r[model.entity])
                if best is None or (r[model.time] > best[model.time] if model.keep == "latest"
                                    else r[model.time] < best[model.time]):
                    kept[r[model.entity]] = r
            rows = list(kept.values())
        out[name] = rows
    return out


def joined_rows(models: dict[str, list[dict]], base: str) -> list[dict]:
    """The rows of `base`, each LEFT JOINed to the other models of its family on the entity (c)."""
    family = next(f for f in FAMILIES if base in f)
    by_key = {}
    for other in family:
        if other != base:
            by_key[other] = {r[MODELS[other].entity]: r for r in models[other] if r[MODELS[other].entity] is not None}
    out = []
    for r in models[base]:
        key = r[MODELS[base].entity]
        row = {f"{base}.{c}": v for c, v in r.items()}
        for other, index in by_key.items():
            match = index.get(key) if key is not None else None
            for c in TABLE_COLUMNS[MODELS[other].table]:
                row[f"{other}.{c}"] = match[c] if match is not None else None
        out.append(row)
    return out


def aggregate(measure: Measure, rows: list[dict], extra: Callable[[dict], bool] | None):
    """The measure over `rows` (those passing its filter and the metric's) (f)."""
    rows = [r for r in rows if (measure.filter is None or measure.filter(r)) and (extra is None or extra(r))]
    if measure.agg == "count":
        return len(rows) if measure.column is None else sum(r[measure.column] is not None for r in rows)
    values = [r[measure.column] for r in rows if r[measure.column] is not None]
    if measure.agg == "count_distinct":
        return len(set(values))
    if measure.agg == "sum":
        return sum(values, Decimal(0)) if values else None
    raise ValueError(measure.agg)


@dataclass
class _Group:
    """Uses of one model's measures under one window."""

    model: str
    window: tuple[dt.timedelta, dt.timedelta] | None  # (W, D)
    uses: list[Use] = field(default_factory=list)


class _Evaluation:
    def __init__(self, tables: dict[str, list[dict]], query: Query):
        self.query = query
        self.models = model_rows(tables, query.as_of)
        self.groups: dict[tuple, _Group] = {}
        self.metric_names = set(METRICS) | set(MEASURES)

    def window_of(self, metric: str, inherited):
        """A metric's (W, D): the query's window (with the metric's delay) wins, then its own."""
        spec = METRICS.get(metric)
        delay = duration(spec.delay) if isinstance(spec, Ratio) else dt.timedelta(0)
        if self.query.window is not None:
            return (duration(self.query.window), delay)
        if isinstance(spec, Ratio) and spec.window is not None:
            return (duration(spec.window), delay)
        return inherited

    def register(self, use: Use, window) -> tuple:
        model = MEASURES[use.measure].model
        group = self.groups.setdefault((model, window), _Group(model, window))
        if use not in group.uses:
            group.uses.append(use)
        return (model, window, use)

    def plan(self, metric: str, inherited=None):
        """A tree of registered uses: ("use", ref) | ("ratio", a, b) | ("derived", spec, children)."""
        window = self.window_of(metric, inherited)
        if metric in MEASURES:
            return ("use", self.register(Use(metric), window))
        spec = METRICS[metric]
        if isinstance(spec, Ratio):
            return ("ratio", self.register(spec.numerator, window), self.register(spec.denominator, window))
        return ("derived", spec, [self.plan(name, window) for name in spec.inputs])

    def run(self) -> tuple[list[str], list[tuple]]:
        q = self.query
        plans = [(m, self.plan(m)) for m in q.metrics]
        metric_filters = [(f, self.plan(f[0])) for f in q.filters if f[0] in self.metric_names]
        row_filters = [f for f in q.filters if f[0] not in self.metric_names]
        values = {}  # (model, window) -> {dimension key: {use: value}}
        for key, group in self.groups.items():
            values[key] = self.group_values(group, row_filters)
        if q.dimensions:
            keys = sorted({k for per_key in values.values() for k in per_key}, key=_sort_key)
        else:
            keys = [()]
        rows = []
        for k in keys:
            def lookup(ref, in_derived=False):
                model, window, use = ref
                per_key = values[(model, window)].get(k)
                if per_key is not None:
                    value = per_key[use]
                else:  # the group has no rows for this key: counts are 0, sums NULL (e, f)
                    value = None if MEASURES[use.measure].agg == "sum" else 0
                if value is None and in_derived:
                    value = Decimal(0)  # (e): an additive measure over no rows enters a formula as 0
                return value

            def compute(plan, in_derived=False):
                if plan[0] == "use":
                    return lookup(plan[1], in_derived)
                if plan[0] == "ratio":
                    return _divide(lookup(plan[1]), lookup(plan[2]))
                _, spec, children = plan
                return spec.formula(*[compute(c, True) for c in children])

            if all(_metric_filter_holds(compute(p), f) for f, p in metric_filters):
                rows.append(k + tuple(compute(p) for _, p in plans))
        columns = [name for name, _ in q.dimensions] + list(q.metrics)
        return columns, rows

    def rolling_dimension(self, group: _Group):
        if group.window is None:
            return None
        for i, (name, grain) in enumerate(self.query.dimensions):
            if name == TIME_DIMENSION.get(group.model):
                if grain is None:
                    raise ValueError("a rolling window needs a grain")
                return i
        return None

    def group_values(self, group: _Group, row_filters) -> dict[tuple, dict]:
        """{dimension values: {use: aggregate}} for one group."""
        dims = self.query.dimensions
        rows = joined_rows(self.models, group.model)
        time_column = f"{group.model}.{MODELS[group.model].time}"
        rolling = self.rolling_dimension(group)
        bucket_filters = [f for f in row_filters if rolling is not None and f[0] == dims[rolling][0]]
        rows = [r for r in rows if all(matches(_dimension_value(r, f[0], None), f[1], f[2])
                                       for f in row_filters if f not in bucket_filters)]
        measures = {use: MEASURES[use.measure] for use in group.uses}
        if rolling is None:
            if group.window is not None:
                if self.query.as_of is None:
                    raise ValueError("a trailing window as one value needs as_of in these tests")
                width, delay = group.window
                end = self.query.as_of - delay
                rows = [r for r in rows if end - width < r[time_column] <= end]
            grouped: dict[tuple, list[dict]] = {}
            for r in rows:
                grouped.setdefault(tuple(_dimension_value(r, n, g) for n, g in dims), []).append(r)
            if not dims:
                grouped.setdefault((), [])
            return {k: {u: aggregate(m, rs, u.filter) for u, m in measures.items()} for k, rs in grouped.items()}
        if len(dims) != 1:
            raise ValueError("the reference rolls series sliced by the time dimension alone")
        grain = dims[rolling][1]
        step = GRAINS[grain]
        times = [r[MODELS[group.model].time] for r in self.models[group.model]]
        if not times:
            return {}
        width, delay = group.window
        out = {}
        bucket, last = truncate(min(times), grain), truncate(max(times), grain)
        while bucket <= last:
            if all(matches(bucket, f[1], f[2]) for f in bucket_filters):
                end = bucket + step
                in_window = [r for r in rows if end - delay - width <= r[time_column] < end - delay]
                out[(bucket,)] = {u: aggregate(m, in_window, u.filter) for u, m in measures.items()}
            bucket += step
        return out


def _dimension_value(row: dict, name: str, grain: str | None):
    column, kind = DIMENSIONS[name]
    value = row[column]
    if grain is not None and value is not None:
        value = truncate(value, grain)
    return value


def _metric_filter_holds(value, flt) -> bool:
    return matches(value, flt[1], flt[2])


def _sort_key(key: tuple):
    return tuple((v is None, v if v is not None else 0) for v in key)


def evaluate(tables: dict[str, list[dict]], query: Query) -> tuple[list[str], list[tuple]]:
    """(columns, rows) of `query` over `tables` ({table: [row dict]}); rows ordered by dimensions."""
    return _Evaluation(tables, query).run()
