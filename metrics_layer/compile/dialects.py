"""Everything that differs between engines, in one place, keyed by dialect name.

The rest of the compiler builds dialect-neutral sqlglot expressions; sqlglot renders them.
What sqlglot cannot transpile by itself lives here: how "now" is written, how a trailing
window becomes a temporal filter that streaming engines can maintain incrementally, and
which deduplication form each engine runs best.
"""

from __future__ import annotations

import datetime as dt

from sqlglot import exp

from ..model.types import Interval

DIALECTS = ("duckdb", "postgres", "materialize", "risingwave")
STREAMING = ("materialize", "risingwave")


def check_dialect(dialect: str) -> str:
    from ..query import QueryError

    if dialect not in DIALECTS:
        raise QueryError(f"unknown dialect {dialect!r}; valid dialects: {', '.join(DIALECTS)}")
    return dialect


def interval(value: Interval) -> exp.Interval:
    return exp.Interval(this=exp.Literal.string(value.text))


def timestamp(value: dt.datetime) -> exp.Expression:
    return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), exp.DataType.Type.TIMESTAMP)


def _shift(expression: exp.Expression, by: Interval | None, sign: int) -> exp.Expression:
    if by is None or by.seconds == 0:
        return expression
    op = exp.Add if sign > 0 else exp.Sub
    return op(this=expression, expression=interval(by))


def now_utc() -> exp.Expression:
    # A naive UTC timestamp, comparable with the naive UTC timestamps models store.
    return exp.AtTimeZone(this=exp.CurrentTimestamp(), zone=exp.Literal.string("UTC"))


def trailing_window(
    dialect: str, time: exp.Expression, window: Interval, delay: Interval | None, end: dt.datetime | None
) -> list[exp.Expression]:
    """Conditions keeping rows with time in [end - delay - window, end - delay).

    `end` is the as_of moment, or None for "now". On streaming engines "now" becomes the
    engine's temporal filter, written so that the engine can maintain it incrementally:
    Materialize wants `mz_now()` alone on one side with no arithmetic on it; RisingWave
    wants `NOW()` compared with a timestamptz.
    """
    start_offset = window + delay if delay else window
    if end is not None:
        upper = end - dt.timedelta(seconds=delay.seconds if delay else 0)
        lower = end - dt.timedelta(seconds=start_offset.seconds)
        return [exp.GTE(this=time.copy(), expression=timestamp(lower)), exp.LT(this=time.copy(), expression=timestamp(upper))]
    if dialect == "materialize":
        mz_now = exp.Anonymous(this="mz_now", expressions=[])
        return [
            exp.LTE(this=mz_now, expression=_shift(time.copy(), start_offset, +1)),
            exp.GT(this=mz_now.copy(), expression=_shift(time.copy(), delay, +1)),
        ]
    if dialect == "risingwave":
        as_tz = exp.cast(time.copy(), exp.DataType.Type.TIMESTAMPTZ)
        now = exp.Anonymous(this="NOW", expressions=[])
        return [
            exp.GTE(this=as_tz, expression=_shift(now, start_offset, -1)),
            exp.LT(this=as_tz.copy(), expression=_shift(now.copy(), delay, -1)),
        ]
    now = now_utc()
    return [
        exp.GTE(this=time.copy(), expression=_shift(now, start_offset, -1)),
        exp.LT(this=time.copy(), expression=_shift(now.copy(), delay, -1)),
    ]


def deduplicated(
    dialect: str, source: exp.Expression, keys: list[exp.Expression], order: exp.Expression,
    descending: bool, where: exp.Expression | None,
) -> exp.Select:
    """One row per key: the first row by `order` (descending for 'latest').

    DuckDB: QUALIFY ROW_NUMBER() (fast, pipelined); PostgreSQL and Materialize: DISTINCT ON,
    their idiomatic form; RisingWave: ROW_NUMBER in a subquery with a rank filter, the form
    its streaming top-N operator recognises.
    """
    ordered = exp.Ordered(this=order, desc=descending, nulls_first=False)
    select = exp.select("*").from_(source)
    if where is not None:
        select = select.where(where)
    if dialect in ("postgres", "materialize"):
        select.set("distinct", exp.Distinct(on=exp.Tuple(expressions=[k.copy() for k in keys])))
        return select.order_by(*[k.copy() for k in keys], ordered)
    rank = exp.Window(
        this=exp.RowNumber(),
        partition_by=[k.copy() for k in keys],
        order=exp.Order(expressions=[ordered]),
    )
    if dialect == "duckdb":
        return select.qualify(exp.EQ(this=rank, expression=exp.Literal.number(1)))
    ranked = select.select(exp.alias_(rank, "_row_rank"))
    return (
        exp.select("*")
        .from_(ranked.subquery("_ranked"))
        .where(exp.EQ(this=exp.column("_row_rank"), expression=exp.Literal.number(1)))
    )
