"""Timestamps and dates printed by DuckDB exactly as PostgreSQL prints them in text format.

Formatting a datetime in Python is the dearest part of encoding a row for the SQL endpoint;
DuckDB prints the same text for a fraction of the cost. For columns a client reads in text
format, the endpoint wraps the compiled SQL in a SELECT built here and sends the text as it
comes (serve/pgwire/semantic.py).
"""

from __future__ import annotations

import functools

import sqlglot
from sqlglot import exp

RENDERED_OIDS = (1114, 1082)  # timestamp, date: the PostgreSQL type OIDs printed here

# `v` is the value: DATE, TIMESTAMP, TIMESTAMPTZ, TIMESTAMP_NS, TIMESTAMP_MS or TIMESTAMP_S.
# As a TIMESTAMP, what DuckDB's Python conversion returns: TIMESTAMPTZ in UTC (the engine's
# TimeZone), TIMESTAMP_NS truncated toward zero on the epoch (1969-12-31 23:59:59.9999995 ->
# 1970-01-01 00:00:00; CAST rounds, epoch_us floors). typeof() is a constant: DuckDB folds the
# test away for the other types. nanosecond() takes no non-temporal value: a column of another
# type fails to bind (an error, never wrong text).
_AS_TIMESTAMP = sqlglot.parse_one(
    "CASE WHEN typeof(v) = 'TIMESTAMP_NS' AND nanosecond(v) % 1000 <> 0 "
    "THEN make_timestamp(epoch_us(v) + CASE WHEN epoch_us(v) < 0 THEN 1 ELSE 0 END) "
    "ELSE CAST(v AS TIMESTAMP) END", read="duckdb")
# `t` as a timestamp, `r` the value to print (t, or t as a DATE). DuckDB prints what PostgreSQL
# prints with DateStyle ISO (fraction without trailing zeros, years > 9999, 'infinity') except
# BC: '0044-03-15 (BC) 12:00:00' where PostgreSQL prints '0044-03-15 12:00:00 BC'.
_PG_TEXT = sqlglot.parse_one(
    "CASE WHEN t < CAST('0001-01-01' AS TIMESTAMP) AND isfinite(t) "
    "THEN replace(CAST(r AS VARCHAR), ' (BC)', '') || ' BC' ELSE CAST(r AS VARCHAR) END", read="duckdb")


def _substitute(template: exp.Expression, values: dict[str, exp.Expression]) -> exp.Expression:
    return template.transform(
        lambda node: values[node.name].copy() if isinstance(node, exp.Column) and not node.table and node.name in values
        else node)


def pg_text_expression(value: exp.Expression, oid: int) -> exp.Expression:
    """A DuckDB expression printing a temporal `value` as PostgreSQL's text for type `oid`
    (1114 timestamp, 1082 date), byte for byte what values.py sends for the Python value DuckDB
    returns, and PostgreSQL's text where DuckDB returns none that values.py can print right
    (BC, infinity)."""
    t = _substitute(_AS_TIMESTAMP, {"v": value})
    shown = t if oid == 1114 else exp.cast(t, "DATE")
    return _substitute(_PG_TEXT, {"t": t, "r": shown})


@functools.lru_cache(maxsize=1024)
def pg_text_select(sql: str, outputs: tuple[tuple[int, int | None], ...]) -> str:
    """DuckDB SQL selecting from the query `sql`, one column per (index of a column of `sql`,
    oid): printed by pg_text_expression when an oid is given, as it is otherwise."""
    names = [exp.to_identifier(f"c{i}") for i in range(max(source for source, _ in outputs) + 1)]
    query = exp.Subquery(
        this=sqlglot.parse_one(sql, read="duckdb"), alias=exp.TableAlias(this=exp.to_identifier("q"), columns=names))
    items = []
    for source, oid in outputs:
        column = exp.column(f"c{source}", table="q")
        items.append(column if oid is None else exp.alias_(pg_text_expression(column, oid), f"c{source}"))
    return exp.select(*items).from_(query).sql(dialect="duckdb")
