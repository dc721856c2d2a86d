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
        self, time: exp.Expression, window: Interval, delay: Interval | None, end: dt.datetime | exp.Expression | None
    ) -> list[exp.Expression]:
        """Conditions keeping rows with time in (end - delay - window, end - delay] (window None:
        time <= end - delay, every row older than the delay).

        The window includes its end: a row at exactly `end` (which as_of keeps) is in the window
        ending there, as in `created_at > NOW() - INTERVAL '3 hours'`. `end` is the as_of moment,
        an expression (a spine row's time), or None for "now".
        """
        if window is None:
            if isinstance(end, exp.Expression):
                return [exp.LTE(this=time.copy(), expression=shift(end.copy(), delay, -1))]
            if end is not None:
                return [exp.LTE(this=time.copy(), expression=timestamp(end - dt.timedelta(seconds=delay.seconds)))]
            return [self.older_than(time.copy(), delay)]
        reach = window + delay if delay else window
        if isinstance(end, exp.Expression):  # a column: each spine row's own time (spine.py)
            return [exp.GT(this=time.copy(), expression=shift(end.copy(), reach, -1)),
                    exp.LTE(this=time.copy(), expression=shift(end.copy(), delay, -1))]
        if end is not None:
            upper = end - dt.timedelta(seconds=delay.seconds if delay else 0)
            lower = end - dt.timedelta(seconds=reach.seconds)
            return [exp.GT(this=time.copy(), expression=timestamp(lower)), exp.LTE(this=time.copy(), expression=timestamp(upper))]
        return self.trailing_window_now(time, reach, delay)

    def trailing_window_now(self, time: exp.Expression, reach: Interval, delay: Interval | None) -> list[exp.Expression]:
        """The window ending now: time > now - reach AND time <= now - delay."""
        return [self.newer_than(time.copy(), reach), self.older_than(time.copy(), delay)]

    def at_or_before_now(self, moment: exp.Expression) -> exp.Expression:
        """moment <= now, as a filter the engine can maintain."""
        return exp.LTE(this=moment, expression=self.now())

    def newer_than(self, moment: exp.Expression, age: Interval) -> exp.Expression:
        """moment > now - age, as a filter the engine can maintain (a materialization's retention)."""
        return exp.GT(this=moment, expression=shift(self.now(), age, -1))

    def older_than(self, moment: exp.Expression, age: Interval | None) -> exp.Expression:
        """moment <= now - age (age None: moment <= now), as a filter the engine can maintain."""
        return exp.LTE(this=moment, expression=shift(self.now(), age, -1))

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


    # ---- DDL: how `deploy` stores objects (metrics_layer/deploy.py diffs and applies them) ----

    transactional_ddl = True  # CREATE/DROP commit or roll back with the transaction around them

    def lag_query(self, schema: str, objects: list[str]) -> exp.Expression | None:
        """A catalog statement saying how far materializations the engine keeps current trail the
        wall clock (read by `lags`); None where `refresh` keeps them (their freshness is refreshed_at)."""
        return None

    def lags(self, rows: list[tuple], objects: list[str]) -> dict[str, tuple[float, str]]:
        """(seconds, what they are) per object from the rows of `lag_query`: here rows of
        (object, seconds behind the wall clock), as measured by the engine."""
        return {obj: (float(lag), "wallclock") for obj, lag in rows if obj in objects and lag is not None}
    stored_kind = "MATERIALIZED VIEW"  # what a materialization is stored as

    def create_view(self, table: exp.Table, select: exp.Select) -> list[exp.Expression]:
        return [exp.Create(this=table, kind="VIEW", expression=select)]

    def create_materialization(self, table: exp.Table, select: exp.Select, key: tuple[str, ...],
                               options: dict[str, str]) -> list[exp.Expression]:
        """A materialized view and a unique index over its key: REFRESH ... CONCURRENTLY needs one
        (https://www.postgresql.org/docs/current/sql-refreshmaterializedview.html), and NULLS NOT
        DISTINCT (PostgreSQL 15+) lets a NULL dimension value be a key. A single-row
        materialization gets a constant key column `_k`."""
        if not key:
            select = select.copy().select(exp.alias_(exp.Literal.number(1), "_k", copy=False), copy=False)
            key = ("_k",)
        columns = ", ".join(exp.to_identifier(k, quoted=True).sql(dialect=self.name) for k in key)
        index = exp.to_identifier(f"{table.name}_key", quoted=True).sql(dialect=self.name)
        return [
            exp.Create(this=table, kind="VIEW", expression=select,
                       properties=exp.Properties(expressions=[exp.MaterializedProperty()])),
            # sqlglot has no node for NULLS NOT DISTINCT: the names are rendered identifiers
            exp.Command(this="CREATE", expression=f"UNIQUE INDEX {index} ON {table.sql(dialect=self.name)} ({columns}) NULLS NOT DISTINCT"),
        ]

    def refresh_materialization(self, table: exp.Table, select: exp.Select) -> list[exp.Expression]:
        """Statements that recompute a stored materialization; readers keep seeing the old rows
        until they commit. Empty where the engine keeps it current itself."""
        return [exp.Command(this="REFRESH", expression=f"MATERIALIZED VIEW CONCURRENTLY {table.sql(dialect=self.name)}")]

    def drop(self, table: exp.Table, stored: bool) -> exp.Expression:
        """DROP of a model view (stored=False) or a materialization (stored=True)."""
        kind = self.stored_kind if stored else "VIEW"
        return exp.Drop(tables=[table], kind=kind.split()[-1], exists=True, materialized=kind.startswith("MATERIALIZED"))


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

    # Streaming engines keep materializations current; DDL is not transactional there, so
    # deploy creates new objects under new names and swaps (deploy.py).
    transactional_ddl = False

    def create_materialization(self, table, select, key, options):
        """A materialized view the engine keeps current (RisingWave derives its key from the GROUP BY:
        https://docs.risingwave.com/sql/commands/sql-create-mv)."""
        return [exp.Create(this=table, kind="VIEW", expression=select,
                           properties=exp.Properties(expressions=[exp.MaterializedProperty()]))]

    def refresh_materialization(self, table, select):
        return []
