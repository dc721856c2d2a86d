"""The dialect-neutral base: what PostgreSQL and DuckDB share, and the engine differences as methods.

The compiler builds dialect-neutral sqlglot expressions and asks its dialect only for what
sqlglot cannot transpile: how "now" is written, how a trailing window becomes a filter the
engine can maintain, the deduplication form each engine runs best, how an aggregate takes a
row condition, and which aggregates it can compute at all. A dialect overrides only what differs.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

from sqlglot import exp

from ...model.types import Interval


def interval(value: Interval) -> exp.Interval:
    return exp.Interval(this=exp.Literal.string(value.text))


def truncate(value: exp.Expression, grain: str) -> exp.Expression:
    """date_trunc(grain, value) on a timestamp.

    Built as exp.DateTrunc: every dialect here renders it exactly as exp.TimestampTrunc
    (DATE_TRUNC('HOUR', x)), and sqlglot's DuckDB generator renders TimestampTrunc by building
    and copying a new function node each time, ~80 us per truncation in a ~1.5 ms compile.
    A dialect that tells dates from timestamps here (BigQuery) would need TimestampTrunc.
    """
    return exp.DateTrunc(this=value, unit=exp.Literal.string(grain.upper()))


def timestamp(value: dt.datetime) -> exp.Expression:
    timestamp_type = exp.DataType(this=exp.DataType.Type.TIMESTAMP)  # exp.cast() would copy and re-check
    return exp.Cast(this=exp.Literal.string(value.isoformat(sep=" ")), to=timestamp_type)


def shift(expression: exp.Expression, by: Interval | None, sign: int) -> exp.Expression:
    """expression ± by (the expression itself for no or a zero interval)."""
    if by is None or by.seconds == 0:
        return expression
    op = exp.Add if sign > 0 else exp.Sub
    return op(this=expression, expression=interval(by))


class Dialect:
    """PostgreSQL semantics: the base every engine here starts from."""

    name = "postgres"
    streaming = False  # the engine maintains views incrementally (no clock reads, no scans)

    def now(self) -> exp.Expression:
        # A naive UTC timestamp, comparable with the naive UTC timestamps models store.
        return exp.AtTimeZone(this=exp.CurrentTimestamp(), zone=exp.Literal.string("UTC"))

    def trailing_window(
        self, time: exp.Expression, window: Interval, delay: Interval | None, end: dt.datetime | None
    ) -> list[exp.Expression]:
        """Conditions keeping rows with time in (end - delay - window, end - delay].

        The window includes its end: a row at exactly `end` (which as_of keeps) is in the window
        ending there, as in `created_at > NOW() - INTERVAL '3 hours'`. `end` is the as_of moment,
        or None for "now".
        """
        reach = window + delay if delay else window
        if end is not None:
            upper = end - dt.timedelta(seconds=delay.seconds if delay else 0)
            lower = end - dt.timedelta(seconds=reach.seconds)
            return [exp.GT(this=time.copy(), expression=timestamp(lower)), exp.LTE(this=time.copy(), expression=timestamp(upper))]
        return self.trailing_window_now(time, reach, delay)

    def trailing_window_now(self, time: exp.Expression, reach: Interval, delay: Interval | None) -> list[exp.Expression]:
        """The window ending now: time > now - reach AND time <= now - delay."""
        return [
            exp.GT(this=time.copy(), expression=shift(self.now(), reach, -1)),
            exp.LTE(this=time.copy(), expression=shift(self.now(), delay, -1)),
        ]

    def at_or_before_now(self, moment: exp.Expression) -> exp.Expression:
        """moment <= now, as a filter the engine can maintain."""
        return exp.LTE(this=moment, expression=self.now())

    def aggregate_where(
        self, aggregate: Callable[[exp.Expression], exp.Expression], value: exp.Expression,
        condition: exp.Expression | None,
    ) -> exp.Expression:
        """`aggregate` of `value` over the rows where `condition` holds (all rows when None):
        AGG(x) FILTER (WHERE c), which DuckDB evaluates inside the aggregate (a few % faster
        than projecting a CASE per row)."""
        if condition is None:
            return aggregate(value)
        return exp.Filter(this=aggregate(value), expression=exp.Where(this=condition))

    def deduplicated(
        self, source: exp.Expression, keys: list[exp.Expression], order: exp.Expression,
        descending: bool, where: exp.Expression | None,
    ) -> exp.Select:
        """One row per key, the first by `order` (descending for 'latest'): DISTINCT ON."""
        select = self._select_from(source, where)
        select.set("distinct", exp.Distinct(on=exp.Tuple(expressions=[k.copy() for k in keys])))
        return select.order_by(*[k.copy() for k in keys], _ordered(order, descending), copy=False)

    def unsupported_aggregate(self, agg: str) -> str | None:
        """Why this engine cannot compute the aggregate (None: it can)."""
        return None

    @staticmethod
    def _select_from(source: exp.Expression, where: exp.Expression | None) -> exp.Select:
        # Built in place (copy=False): every node here is new, and copying the tree on each
        # builder call was most of a cold compile.
        select = exp.select(exp.Star(), copy=False).from_(source, copy=False)
        return select.where(where, copy=False) if where is not None else select

    @staticmethod
    def _row_rank(keys: list[exp.Expression], order: exp.Expression, descending: bool) -> exp.Window:
        return exp.Window(this=exp.RowNumber(), partition_by=[k.copy() for k in keys],
                          order=exp.Order(expressions=[_ordered(order, descending)]))


def _ordered(order: exp.Expression, descending: bool) -> exp.Ordered:
    return exp.Ordered(this=order, desc=descending, nulls_first=False)


class Streaming(Dialect):
    """An engine that keeps views current incrementally (Materialize, RisingWave).

    Aggregates take conditions as AGG(CASE WHEN c THEN x END): FILTER is not accepted
    everywhere in their streaming plans. Percentiles have no incremental form they document.
    """

    streaming = True

    def aggregate_where(self, aggregate, value, condition):
        if condition is None:
            return aggregate(value)
        return aggregate(exp.Case(ifs=[exp.If(this=condition, true=value)]))

    def unsupported_aggregate(self, agg: str) -> str | None:
        if agg in ("median", "percentile"):
            return (f"{self.name} cannot maintain a {agg} incrementally (no documented streaming percentile); "
                    "query it on DuckDB or PostgreSQL, or use avg, min or max")
        return None
