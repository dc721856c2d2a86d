"""The shapes every door speaks: a SemanticQuery in, a Result out.

Doors (CLI, REST, GraphQL, the PostgreSQL wire endpoint) translate their protocol into a
`SemanticQuery`; the compiler turns it into SQL; an engine returns a `Result`. Queries are
frozen and hashable so that compiled SQL can be cached per (query, dialect).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

GRAINS = ("minute", "hour", "day", "week", "month", "quarter", "year")

# Filter operators, by the name every door uses.
FILTER_OPS = (
    "=", "!=", "<", "<=", ">", ">=",
    "in", "not in", "between", "is null", "is not null",
    "contains", "starts with",
)
_NO_VALUE_OPS = ("is null", "is not null")
_LIST_OPS = ("in", "not in")


class QueryError(ValueError):
    """A request that cannot be answered as asked; the message says why and what is valid.

    `code` is a PostgreSQL SQLSTATE, so that the SQL endpoint can pass it on unchanged:
    42703 unknown column/field, 42P01 unknown table/view, 22023 invalid value,
    0A000 not supported, 42883 wrong type, 57014 cancelled or timed out, 58000 engine error.
    """

    def __init__(self, message: str, code: str = "22023"):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class DimensionRef:
    """A dimension asked for by a query: `model.dimension`, with a grain for time dimensions."""

    name: str
    grain: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not (self.grain is None or isinstance(self.grain, str)):
            raise QueryError(f"a dimension is a name and an optional grain, both text; got {self.name!r}, {self.grain!r}")

    @property
    def label(self) -> str:
        """The output column name: the name as written (grain does not rename it)."""
        return self.name


@dataclass(frozen=True)
class Filter:
    """`field op value`. `field` is a dimension (filters rows) or a metric (filters results)."""

    field: str
    op: str
    value: Any = None  # scalar; tuple for in / not in / between; None for is (not) null
    grain: str | None = None  # compare the field truncated to this grain (time dimensions)

    def __post_init__(self) -> None:
        if not isinstance(self.field, str):
            raise QueryError(f"a filter's field must be a dimension or metric name, got {self.field!r}")
        op = " ".join(self.op.lower().split()) if isinstance(self.op, str) else self.op
        if op not in FILTER_OPS:
            raise QueryError(
                f"unknown filter operator {self.op!r} on {self.field!r}; "
                f"valid operators: {', '.join(FILTER_OPS)}",
                "42883",  # PostgreSQL's code for "operator does not exist"
            )
        object.__setattr__(self, "op", op)
        if isinstance(self.value, list):
            object.__setattr__(self, "value", tuple(self.value))
        if op in _NO_VALUE_OPS:
            return
        if op in _LIST_OPS and not isinstance(self.value, tuple):
            object.__setattr__(self, "value", (self.value,))
        if op == "between" and not (isinstance(self.value, tuple) and len(self.value) == 2):
            raise QueryError(f"filter {self.field!r} between needs exactly two values [low, high]")
        if self.value is None:
            raise QueryError(f"filter {self.field!r} {op} needs a value")
        try:
            hash(self.value)
        except TypeError:  # a dict, or a list inside the list
            raise QueryError(f"filter {self.field!r} {op}: a value must be a scalar or a list of scalars, got {self.value!r}") from None
        for value in self.value if isinstance(self.value, tuple) else (self.value,):
            if isinstance(value, str):
                check_text(value, f"filter value for {self.field!r}")


def check_text(text: str, what: str) -> str:
    """`text` unless it holds what no engine's text can: NUL, or a lone surrogate (not UTF-8).

    Raises QueryError 22021 (PostgreSQL's "character not in repertoire") naming `what` and where.
    """
    if text.isascii():
        if "\x00" not in text:
            return text
    for i, ch in enumerate(text):
        if ch == "\x00":
            raise QueryError(f"{what}: a NUL character (at position {i + 1}) cannot be part of a text value", "22021")
        if "\ud800" <= ch <= "\udfff":
            raise QueryError(
                f"{what}: the lone surrogate U+{ord(ch):04X} (at position {i + 1}) is not a character; "
                "text values must be valid Unicode", "22021")
    return text


@dataclass(frozen=True)
class OrderBy:
    field: str
    descending: bool = False


@dataclass(frozen=True)
class TopGroups:
    """Keep only the groups whose `dimensions` are among the top `limit` groups of those
    dimensions, ranked by `metric` (descending unless `descending` is false) under `filters`.

    A chart's series limit (Superset's "top N series"). The ranking is the query
    `SemanticQuery((metric,), dimensions, filters, order_by=(metric, *dimensions), limit=limit)`
    with the outer query's window and as_of: ties on the metric are broken by the dimensions
    (ascending), so the answer is deterministic where Superset's own SQL is not. A group with a
    NULL dimension value takes a place in the ranking but is never kept (as an equality join
    drops it). Each dimension must be one of the outer query's dimensions, at the same grain.
    """

    dimensions: tuple[DimensionRef, ...]
    metric: str
    limit: int
    descending: bool = True
    filters: tuple[Filter, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.dimensions, (str, DimensionRef)) or isinstance(self.filters, Filter):
            raise QueryError(f"top groups: dimensions and filters must be lists, got {self.dimensions!r}, {self.filters!r}")
        object.__setattr__(self, "dimensions", tuple(DimensionRef(d) if isinstance(d, str) else d for d in self.dimensions))
        object.__setattr__(self, "filters", tuple(self.filters))
        if not self.dimensions:
            raise QueryError("top groups need at least one dimension to rank the groups of")
        if not isinstance(self.metric, str):
            raise QueryError(f"top groups are ranked by a metric named by text, got {self.metric!r}")
        if not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit < 0:
            raise QueryError(f"top groups: the number of groups must be a non-negative integer, got {self.limit!r}")


@dataclass(frozen=True)
class SemanticQuery:
    """One request: metrics sliced by dimensions, filtered, ordered and limited.

    `window` overrides every metric's trailing window ("3 hours"); `as_of` evaluates the
    query using only rows whose time is at or before that moment, in every model involved.
    `top` keeps only the top groups of some of its dimensions (TopGroups: a series limit).
    """

    metrics: tuple[str, ...] = ()
    dimensions: tuple[DimensionRef, ...] = ()
    filters: tuple[Filter, ...] = ()
    order_by: tuple[OrderBy, ...] = ()
    limit: int | None = None
    offset: int | None = None
    window: str | None = None
    as_of: dt.datetime | None = None
    top: TopGroups | None = None

    def __post_init__(self) -> None:
        # Accept lists from callers; store tuples so the query stays hashable.
        for name in ("metrics", "dimensions", "filters", "order_by"):
            value = getattr(self, name)
            if isinstance(value, (str, DimensionRef, Filter, OrderBy)):
                raise QueryError(f"{name} must be a list, got {value!r}")
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        for metric in self.metrics:
            if not isinstance(metric, str):
                raise QueryError(f"a metric is named by text, got {metric!r}")
        object.__setattr__(
            self,
            "dimensions",
            tuple(DimensionRef(d) if isinstance(d, str) else d for d in self.dimensions),
        )
        for bound in ("limit", "offset"):
            value = getattr(self, bound)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise QueryError(f"{bound} must be a non-negative integer, got {value!r}")
        if isinstance(self.as_of, str):
            object.__setattr__(self, "as_of", parse_timestamp(self.as_of, "as_of"))
        elif isinstance(self.as_of, dt.date) and not isinstance(self.as_of, dt.datetime):
            object.__setattr__(self, "as_of", dt.datetime(self.as_of.year, self.as_of.month, self.as_of.day))
        elif self.as_of is not None and not isinstance(self.as_of, dt.datetime):
            raise QueryError(f"as_of must be a timestamp (ISO 8601 text), got {self.as_of!r}", "22007")
        if self.window is not None and not isinstance(self.window, (str, int)):
            raise QueryError(f"window must be a duration such as '3 hours', got {self.window!r}")
        if not self.metrics and not self.dimensions:
            raise QueryError("a query needs at least one metric or dimension")
        if self.top is not None and not isinstance(self.top, TopGroups):
            raise QueryError(f"top must be a TopGroups restriction, got {self.top!r}")


def parse_timestamp(text: str, what: str) -> dt.datetime:
    """ISO 8601 text to a naive UTC datetime (offsets are converted to UTC)."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(
            f"{what}: {text!r} is not a timestamp; write ISO 8601 such as 2026-03-01T12:00:00", "22007"
        ) from None
    if value.tzinfo is not None:
        try:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        except OverflowError:
            raise QueryError(
                f"{what}: {text!r} is out of range in UTC; timestamps run from 0001-01-01 to 9999-12-31 UTC", "22008"
            ) from None
    return value


# Logical column types a Result reports; doors map these to their own type systems.
COLUMN_TYPES = ("boolean", "integer", "bigint", "double", "decimal", "text", "date", "timestamp", "interval", "unknown")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # one of COLUMN_TYPES


@dataclass
class Result:
    """Columns and typed rows (Python values: int, float, Decimal, str, bool, datetime, date)."""

    columns: list[Column]
    rows: list[tuple] = field(default_factory=list)
    sql: str | None = None
    freshness: dict | None = None  # set when read from a materialization: which, and its last refresh

    def records(self) -> list[dict[str, Any]]:
        names = [c.name for c in self.columns]
        return [dict(zip(names, row)) for row in self.rows]
