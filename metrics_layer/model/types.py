"""The validated, immutable semantic model every door and the compiler work from."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Mapping

from sqlglot import exp

from .errors import Location


def qualify(expression: exp.Expression, model: str) -> exp.Expression:
    """Give every unqualified column the model's alias, so the SQL is unambiguous in joins."""
    expression = expression.copy()
    for column in expression.find_all(exp.Column):
        if not column.table:
            column.set("table", exp.to_identifier(model, quoted=True))
    return expression


@functools.lru_cache(maxsize=4096)
def _text(expression: exp.Expression) -> str:
    """SQL text of a model expression, rendered once (expressions hash by structure)."""
    return expression.sql()


# Aggregates of a dimension a query may ask for as a measure: `model.max(dimension)`.
DIMENSION_AGGREGATES = ("min", "max", "count_distinct")


def dimension_aggregate(agg: str, dimension: str) -> str:
    """The measure name of an aggregate over a dimension's model rows: leads.max(created_at)."""
    model, _, name = dimension.partition(".")
    return f"{model}.{agg}({name})"

AGGREGATIONS = ("count", "count_distinct", "sum", "avg", "min", "max", "median", "percentile")
ENTITY_TYPES = ("primary", "unique", "foreign")
DIMENSION_TYPES = ("categorical", "time", "number", "boolean")
METRIC_TYPES = ("simple", "ratio", "derived")
FORMATS = ("number", "percent", "currency", "integer")


@dataclass(frozen=True)
class Interval:
    """A duration written in YAML or a query ("3 hours"), kept in seconds."""

    seconds: int
    text: str

    def __add__(self, other: "Interval") -> "Interval":
        total = self.seconds + other.seconds
        return Interval(total, describe_seconds(total))


_INTERVAL = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day|week)s?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}


def parse_interval(text) -> Interval | None:
    """'3 hours' -> Interval; None when the text is not a duration."""
    match = _INTERVAL.match(str(text))
    if not match or int(match.group(1)) <= 0:
        return None
    count, unit = int(match.group(1)), match.group(2).lower()
    return Interval(count * _UNIT_SECONDS[unit], f"{count} {unit}{'s' if count != 1 else ''}")


def describe_seconds(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


@dataclass(frozen=True)
class Entity:
    name: str
    type: str
    expr: exp.Expression  # over the model's own columns, unqualified
    location: Location


@dataclass(frozen=True)
class Dimension:
    name: str
    model: str
    type: str
    expr: exp.Expression  # over the model's own columns, unqualified
    description: str | None
    location: Location

    @property
    def qualified_name(self) -> str:
        return f"{self.model}.{self.name}"


@dataclass(frozen=True)
class Measure:
    name: str
    model: str
    agg: str
    expr: exp.Expression  # qualified with model aliases
    filter: exp.Expression | None  # qualified with model aliases
    filter_models: frozenset[str]  # models the filter reads, besides the measure's own
    percentile: float | None
    description: str | None
    location: Location
    fill_nulls_with: int | float | None = None  # the value when the measure aggregates no rows

    @property
    def qualified_name(self) -> str:
        return f"{self.model}.{self.name}"


@dataclass(frozen=True)
class Dedupe:
    key: tuple[str, ...]
    keep: str  # latest | earliest
    by: str


@dataclass(frozen=True)
class Model:
    name: str
    source: exp.Expression  # exp.Table or a parsed SELECT
    entities: dict[str, Entity]
    dimensions: dict[str, Dimension]
    measures: dict[str, Measure]
    time: str | None  # column (or dimension expression) that places a row in time
    time_expr: exp.Expression | None
    dedupe: Dedupe | None
    description: str | None
    location: Location
    # Where `table`, `sql`, `time`, `dedupe.key` and `dedupe.by` are written (for the schema check).
    key_locations: Mapping[str, Location] = field(default_factory=dict, compare=False)

    def at(self, key: str) -> Location:
        return self.key_locations.get(key, self.location)

    def unique_on(self, entity: str) -> bool:
        """True when the model holds at most one row per value of this entity."""
        ent = self.entities.get(entity)
        if ent is None:
            return False
        if ent.type in ("primary", "unique"):
            return True
        return self.dedupe is not None and len(self.dedupe.key) == 1 and self.dedupe.key[0] == _text(ent.expr)


@dataclass(frozen=True)
class MeasureInput:
    """A measure as a metric uses it: with the metric's extra row filter."""

    measure: str  # model.measure
    filter: exp.Expression | None
    filter_models: frozenset[str]


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    description: str | None
    label: str | None
    format: str | None
    inputs: dict[str, MeasureInput]  # simple: {"measure"}, ratio: {"numerator", "denominator"}
    expr: exp.Expression | None  # derived: over metric names and model.measure references
    window: Interval | None
    label_delay: Interval | None
    location: Location
    depends_on: tuple[str, ...] = ()  # derived: metric names used in expr
    fill_nulls_with: int | float | None = None  # the value shown where the metric is NULL
    expr_location: Location | None = None  # where expr is written (derived), for its errors

    @property
    def qualified_name(self) -> str:
        return self.name


@dataclass(frozen=True)
class View:
    name: str
    description: str | None
    metrics: tuple[str, ...]
    dimensions: tuple[str, ...]
    location: Location
    count: str | None = None  # the count measure COUNT(*) over the view maps to (model.measure)
    entity: str | None = None  # `model.entity` an online lookup is keyed by (GET /api/features/{view})


@dataclass(frozen=True)
class Materialization:
    """Metrics by dimensions stored in the engine: their additive parts, divided at read time."""

    name: str
    description: str | None
    metrics: tuple[str, ...]
    dimensions: tuple[tuple[str, str | None], ...]  # (model.dimension, grain)
    refresh: Interval | None  # PostgreSQL / DuckDB: how often it is rebuilt (streaming engines keep it current)
    location: Location
    # Keep only the buckets of `retention[0]` (a grained time dimension, as in `dimensions`)
    # newer than now - retention[1]: bounds a streaming engine's state; routing reads it only
    # for queries whose time filter starts inside what is kept.
    retention: tuple[tuple[str, str], Interval] | None = None


@dataclass(frozen=True)
class WrittenSql:
    """A SQL expression as written in the YAML, before references are resolved, and where.

    The schema check reads these: an error in a dimension's expr is then reported at the
    dimension, not again in every filter that uses the dimension.
    """

    what: str  # "measure 'leads.lead_count' expr", for messages
    kind: str  # dimension | entity | measure | filter
    owner: str  # model.element (dimension, entity, measure) or the metric's name (filter)
    expr: exp.Expression
    home: str | None  # the model unqualified columns belong to
    location: Location


@dataclass
class SemanticModel:
    """Models, metrics and views of one project, validated. Treat as immutable."""

    models: dict[str, Model]
    metrics: dict[str, Metric]
    views: dict[str, View]
    files: tuple[str, ...] = ()
    materializations: dict[str, Materialization] = field(default_factory=dict)
    written: tuple[WrittenSql, ...] = field(default=(), repr=False, compare=False)
    monitors: dict = field(default_factory=dict)  # name -> Monitor
    compile_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def measure(self, qualified: str) -> Measure | None:
        """A measure by model.name, or an aggregate of a dimension (`dimension_aggregate`):
        MIN / MAX / COUNT DISTINCT of the dimension over its model's rows (after as_of and
        dedupe, like any measure)."""
        model_name, _, name = qualified.partition(".")
        model = self.models.get(model_name)
        if model is None:
            return None
        found = model.measures.get(name)
        if found is None and name.endswith(")") and "(" in name:
            agg, _, dim_name = name[:-1].partition("(")
            dim = model.dimensions.get(dim_name)
            if agg in DIMENSION_AGGREGATES and dim is not None:
                return Measure(name, model.name, agg, qualify(dim.expr, model.name), None, frozenset(), None,
                               f"{agg} of {dim.qualified_name}", dim.location)
        return found

    def dimension(self, qualified: str) -> Dimension | None:
        model_name, _, name = qualified.partition(".")
        model = self.models.get(model_name)
        return model.dimensions.get(name) if model else None

    def metric_names(self) -> list[str]:
        """Every name a query may ask for as a metric: metrics, then model.measure."""
        names = list(self.metrics)
        for model in self.models.values():
            names.extend(m.qualified_name for m in model.measures.values())
        return names

    def dimension_names(self) -> list[str]:
        return [d.qualified_name for m in self.models.values() for d in m.dimensions.values()]


@dataclass(frozen=True)
class Monitor:
    """A condition on a metric, evaluated on a schedule (metrics_layer/monitors.py)."""

    name: str
    metric: str
    by: tuple[str, ...]  # dimensions (model.dimension[:grain]) it is evaluated per group of
    op: str  # < <= > >=
    threshold: float
    change: bool  # the condition is on value - previous evaluation's value of the group
    min_coverage: float | None
    coverage_metric: str | None  # <classification>.coverage when min_coverage is set
    every: Interval
    notify: tuple[str, ...]  # "log" or webhook URLs
    location: Location
