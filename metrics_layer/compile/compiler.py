"""SemanticModel + SemanticQuery -> SQL text. Pure: no I/O; results cached per (query, dialect).

Every query has the same three levels, which keeps each concern in one place:

  rows:    one row per row of the measure's model, joined (many-to-one only) to the models
           that dimensions and filters read; dedupe and as_of happen in each model's source.
           Projects dimension values d0.., measure values v0.. and measure conditions c0..
  groups:  aggregates rows per dimension values: AGG(CASE WHEN c THEN v END) AS m0..
           (for a rolling window: a series of time buckets joined to rows by time range).
  metrics: metric expressions over m0.. (ratios, derived formulas), metric filters,
           order, limit.

Measures from different models (or with different windows) are aggregated in separate
groups and combined with UNION ALL + GROUP BY on the dimensions, so no join can fan out.
"""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass, field

from sqlglot import exp

from ..model.errors import did_you_mean
from ..model.joins import JoinError, join_path, join_plan
from ..model.types import parse_interval, qualify
from ..model.types import Interval, Materialization, Measure, MeasureInput, Metric, Model, SemanticModel, describe_seconds
from ..query import GRAINS, DimensionRef, Filter, OrderBy, QueryError, SemanticQuery, parse_timestamp
from . import dialects
from .routing import Route, Routing, route

_CACHE_LIMIT = 4096
_MAX_FAN_OUT = 1024  # most buckets a rolling window's rows are fanned out to (else a range join)
_GRAIN_INTERVALS = {
    "minute": Interval(60, "1 minute"), "hour": Interval(3600, "1 hour"), "day": Interval(86400, "1 day"),
    "week": Interval(604800, "1 week"), "month": Interval(0, "1 month"), "quarter": Interval(0, "3 months"),
    "year": Interval(0, "1 year"),
}


def compile_query(model: SemanticModel, query: SemanticQuery, dialect: str = "duckdb", routes: tuple[Route, ...] = ()) -> str:
    """SQL text for `query` in `dialect`. Raises QueryError for anything not answerable.

    `routes`: deployed materializations the query may read instead of the base tables,
    when one answers it exactly (routing.py)."""
    return explain_query(model, query, dialect, routes).sql


@dataclass(frozen=True)
class Compiled:
    sql: str
    materialization: str | None = None  # the materialization the SQL reads, if any
    not_used: tuple[tuple[str, str], ...] = ()  # (materialization, why not)


def explain_query(model: SemanticModel, query: SemanticQuery, dialect: str = "duckdb", routes: tuple[Route, ...] = ()) -> Compiled:
    """The SQL for `query`, the materialization it reads, and why each other route was not used."""
    key = (query, dialect, routes)
    compiled = model.compile_cache.get(key)
    if compiled is None:
        dialects.get(dialect)
        compiler = _Compiler(model, query, dialect, routes)
        # The tree is built for this call only: no defensive copy before rendering.
        sql = compiler.build().sql(dialect=dialect, copy=False)
        routing = compiler.routing
        compiled = Compiled(sql, routing.chosen, tuple(routing.reasons.items()))
        if len(model.compile_cache) >= _CACHE_LIMIT:
            model.compile_cache.clear()
        model.compile_cache[key] = compiled
    return compiled


def compile_materialization(model: SemanticModel, name: str, dialect: str = "duckdb") -> exp.Select:
    """The SELECT a materialization stores: its dimensions d0.. and the additive parts m0..
    of its metrics (numerators and denominators apart), one row per dimension values."""
    return materialization_compiler(model, model.materializations[name], dialect).aggregated([])


def materialization_compiler(model: SemanticModel, mat: Materialization, dialect: str) -> "_Compiler":
    """A compiler holding the materialization's groups and uses (what routing matches against)."""
    compiler = _Compiler(model, materialization_query(mat), dialect)
    compiler.presence = True
    if mat.retention is not None:
        (name, grain), age = mat.retention
        compiler.retention = (next(d for d in compiler.dimensions if d.name == name and d.grain == grain), age)
    for metric in compiler.query.metrics:
        compiler.metric_expression(metric)
    return compiler


def model_source(model: Model, dialect: dialects.Dialect, as_of: dt.datetime | None = None, where: list[exp.Expression] = ()) -> exp.Expression:
    """The model's rows as a FROM item aliased by the model's name: as_of, then dedupe, then `where`.

    `where` (conditions on the model's own columns, e.g. its trailing window) applies after
    the dedupe: the latest row per key is chosen first, then kept or not.
    """
    def alias() -> exp.Identifier:  # a new node each time: cheaper than copying one
        return exp.to_identifier(model.name, quoted=True)

    source = model.source.copy()
    table = source if isinstance(source, exp.Table) else source.subquery()
    table.set("alias", exp.TableAlias(this=alias()))
    cut = None  # as_of: the rows known at that moment
    if as_of is not None and model.time_expr is not None:
        cut = exp.LTE(this=model.time_expr.copy(), expression=dialects.timestamp(as_of))
    if model.dedupe is not None:
        keys = [exp.column(k, table=alias()) for k in model.dedupe.key]
        order = exp.column(model.dedupe.by, table=alias())
        select = dialect.deduplicated(table, keys, order, model.dedupe.keep == "latest", cut)
        if not where:
            return select.subquery(alias(), copy=False)
        table, conditions = select.subquery(alias(), copy=False), list(where)
    else:
        conditions = ([cut] if cut is not None else []) + list(where)
    if not conditions:
        return table
    select = exp.select(exp.Star(), copy=False).from_(table, copy=False)
    for condition in conditions:
        select.where(condition, copy=False)
    return select.subquery(alias(), copy=False)


def compile_model_rows(model: SemanticModel, name: str, dialect: str = "duckdb") -> exp.Select:
    """The rows of one model as every query reads them (deduplicated), for a view of the model."""
    return exp.select(exp.Star(), copy=False).from_(model_source(model.models[name], dialects.get(dialect)), copy=False)


def materialization_query(mat: Materialization) -> SemanticQuery:
    return SemanticQuery(mat.metrics, tuple(DimensionRef(n, g) for n, g in mat.dimensions))


@dataclass(frozen=True)
class Window:
    length: Interval | None  # None: no lower bound, every row older than the delay (no rolling)
    delay: Interval | None

    @property
    def text(self) -> str:
        if self.length is None:
            return f"older than {self.delay.text}"
        return f"a trailing window of {self.length.text}" + (f" delayed {self.delay.text}" if self.delay else "")


@dataclass
class _Dimension:
    label: str
    model: str  # "" for a spine's columns (spine.py), which belong to no model
    expr: exp.Expression  # qualified with the model's alias
    type: str
    grain: str | None
    is_time_of_model: bool
    name: str = ""  # model.dimension


@dataclass
class _Group:
    """Measures aggregated over one model's rows with one window."""

    base: str
    window: Window | None
    uses: dict[tuple, int] = field(default_factory=dict)  # use key -> m index
    values: dict[str, exp.Expression] = field(default_factory=dict)  # measure -> value expr
    conditions: dict[int, exp.Expression] = field(default_factory=dict)
    counts: set[int] = field(default_factory=set)  # m indexes of counts: 0, not NULL, when absent
    models: set[str] = field(default_factory=set)


class _Compiler:
    def __init__(self, model: SemanticModel, query: SemanticQuery, dialect: str, routes: tuple[Route, ...] = ()):
        self.model = model
        self.query = query
        self.dialect = dialect
        self.sql_dialect = dialects.get(dialect)
        self.window_override = self._window_override()
        self.groups: dict[tuple, _Group] = {}
        self.use_count = 0
        self.routes = routes
        self.routing = Routing()
        self.presence = False  # mark which group has rows in a combined row (materializations)
        self.retention: tuple[_Dimension, Interval] | None = None  # keep buckets newer than now - age (materializations)
        self.dimensions = [self._dimension(ref) for ref in query.dimensions]
        self._check_labels()

    # ---- resolving names ------------------------------------------------------------

    def _window_override(self) -> Interval | None:
        if self.query.window is None:
            return None
        value = parse_interval(self.query.window)
        if value is None:
            raise QueryError(f"window {self.query.window!r} is not a duration; write e.g. '3 hours', '30 minutes', '1 day'")
        return value

    def _find_dimension(self, name: str) -> tuple[Model, str, exp.Expression, str]:
        model_name, dot, dim_name = name.partition(".")
        if not dot:
            matches = [d for d in self.model.dimension_names() if d.split(".", 1)[1] == name]
            if len(matches) == 1:
                return self._find_dimension(matches[0])
            if len(matches) > 1:
                raise QueryError(f"dimension '{name}' is ambiguous; write one of: {', '.join(matches)}", "42702")
        model = self.model.models.get(model_name) if dot else None
        if model is not None:
            if dim_name in model.dimensions:
                dim = model.dimensions[dim_name]
                return model, dim.name, qualify(dim.expr, model.name), dim.type
            if dim_name in model.entities:
                return model, dim_name, qualify(model.entities[dim_name].expr, model.name), "categorical"
        raise QueryError(
            f"unknown dimension '{name}'{did_you_mean(name, self.model.dimension_names(), 'dimensions')}", "42703"
        )

    def _dimension(self, ref: DimensionRef) -> _Dimension:
        model, name, expr, kind = self._find_dimension(ref.name)
        grain = ref.grain.lower() if ref.grain else None
        if grain is not None:
            if grain not in GRAINS:
                raise QueryError(f"unknown grain '{ref.grain}' for '{ref.name}'{did_you_mean(grain, GRAINS, 'grains')}")
            if kind != "time":
                raise QueryError(f"grain '{grain}' applies only to time dimensions; '{ref.name}' is {kind}")
            expr = dialects.truncate(expr, grain)
        return _Dimension(ref.label, model.name, expr, kind, grain, model.time == name, f"{model.name}.{name}")

    def _check_labels(self) -> None:
        seen = set()
        for label in [d.label for d in self.dimensions] + list(self.query.metrics):
            if label in seen:
                raise QueryError(f"'{label}' is asked for twice; ask for each dimension or metric once")
            seen.add(label)

    # ---- metrics to expressions over aggregated measures ----------------------------

    def _window_for(self, metric: Metric | None, inherited: Window | None) -> Window | None:
        if self.window_override is not None:
            return Window(self.window_override, metric.label_delay if metric else None)
        if metric is not None and (metric.window is not None or metric.label_delay is not None):
            return Window(metric.window, metric.label_delay)
        return inherited

    def metric_expression(self, name: str, inherited: Window | None = None, trail: tuple = (), term: bool = False) -> exp.Expression:
        """The expression of a metric (or `model.measure`) over the aggregated columns m0...

        `term` is set where the value takes part in a formula (a derived metric's expr, a
        ratio's numerator): there an additive measure over no rows reads 0, not NULL.
        """
        metric = self.model.metrics.get(name)
        if metric is None:
            if self.model.measure(name) is None:
                raise QueryError(
                    f"unknown metric '{name}'{did_you_mean(name, self.model.metric_names(), 'metrics')}", "42703"
                )
            return self._use(MeasureInput(name, None, frozenset()), self._window_for(None, inherited), term)
        window = self._window_for(metric, inherited)
        if metric.type == "simple":
            expression = self._use(metric.inputs["measure"], window, term)
        elif metric.type == "ratio":
            numerator = self._use(metric.inputs["numerator"], window, term=True)
            denominator = self._use(metric.inputs["denominator"], window)
            double = exp.DataType(this=exp.DataType.Type.DOUBLE)  # exp.cast() would copy and re-check
            expression = _safe_divide(exp.Cast(this=numerator, to=double), denominator)
        else:
            expression = self._derived(metric, window, trail + (name,))
        return _fill(expression, metric.fill_nulls_with)

    def _derived(self, metric: Metric, window: Window | None, trail: tuple) -> exp.Expression:
        expression = metric.expr.copy()
        for division in list(expression.find_all(exp.Div)):  # x / 0 is NULL on every engine
            division.set("expression", exp.Nullif(this=division.expression, expression=exp.Literal.number(0)))
        for column in list(expression.find_all(exp.Column)):
            if column.table:
                inner = self._use(MeasureInput(f"{column.table}.{column.name}", None, frozenset()), window, term=True)
            else:
                inner = exp.Paren(this=self.metric_expression(column.name, window, trail, term=True))
            if column is expression:  # `expr: other_metric`: replace() has no parent to edit
                expression = inner
            else:
                column.replace(inner)
        return expression

    def _use(self, inp: MeasureInput, window: Window | None, term: bool = False) -> exp.Expression:
        """The aggregated column for a measure under a filter and window, registered once.

        NULL (no rows aggregated) becomes the measure's fill_nulls_with, or 0 for an
        additive measure that is a term of a formula.
        """
        measure = self.model.measure(inp.measure)
        refusal = self.sql_dialect.unsupported_aggregate(measure.agg)
        if refusal is not None:
            raise QueryError(f"measure '{measure.qualified_name}' ({measure.agg}): {refusal}", "0A000")
        group = self.groups.setdefault((measure.model, window), _Group(measure.model, window))
        # The measure fixes its own filter, so (measure, metric filter) identifies the use.
        # sqlglot expressions hash and compare by structure, and cache their hash: cheaper
        # than rendering the condition to text on every use.
        key = (inp.measure, inp.filter)
        if key not in group.uses:
            condition = _and(measure.filter, inp.filter)
            index = self.use_count
            self.use_count += 1
            group.uses[key] = index
            group.values.setdefault(measure.qualified_name, measure.expr)
            if measure.agg in ("count", "count_distinct"):
                group.counts.add(index)
            if condition is not None:
                group.conditions[index] = condition
            group.models |= measure.filter_models | inp.filter_models
        column = exp.column(f"m{group.uses[key]}")
        if measure.fill_nulls_with is not None:
            return _fill(column, measure.fill_nulls_with)
        return _fill(column, 0) if term and measure.agg == "sum" else column  # counts read 0 already

    # ---- building the three levels --------------------------------------------------

    def build(self) -> exp.Select:
        metric_exprs = [(name, self.metric_expression(name)) for name in self.query.metrics]
        metric_filters, row_filters = self._split_filters()
        top = self._top_groups() if self.query.top is not None else None
        if self.routes and top is not None:
            # The ranking is a second query over the same rows: reading it and the groups from
            # one place (the base tables) keeps them consistent; routing both is not worth it.
            self.routing = Routing(reasons={r.name: "the query keeps only its top groups (a series limit), which "
                                            "reads the base tables" for r in self.routes})
        elif self.routes:
            self.routing = route(self, self.routes, row_filters)
        source = self.routing.source if self.routing.source is not None else self.aggregated(row_filters)
        if self.sql_dialect.streaming:
            source = self._filled_series(source)
        labels = [exp.alias_(exp.column(f"d{i}"), d.label, quoted=True, copy=False) for i, d in enumerate(self.dimensions)]
        outer = exp.select(*labels, *[exp.alias_(e, name, quoted=True, copy=False) for name, e in metric_exprs], copy=False)
        outer = outer.from_(source.subquery("agg", copy=False), copy=False)
        for condition in metric_filters:
            outer = outer.where(condition, copy=False)
        if top is not None:
            outer = outer.where(top, copy=False)
        return self._order_and_limit(outer, metric_exprs)

    def _top_groups(self) -> exp.Expression:
        """`(d..) IN (<the ranking query's dimensions, ORDER BY metric, d.. LIMIT n>)` on the groups.

        The ranking is an ordinary SemanticQuery compiled like any other (as_of, dedupe,
        windows, the same window override), so its groups are exactly the ones this query
        would return for those dimensions and filters. The dimensions break ties on the metric.
        IN keeps no group with a NULL dimension value, as Superset's `ON d = d__` join does,
        while a NULL group still takes its place in the ranking there and here.
        """
        top = self.query.top
        positions = []
        for ref in top.dimensions:
            wanted = self._dimension(ref)
            index = next((i for i, d in enumerate(self.dimensions) if (d.name, d.grain) == (wanted.name, wanted.grain)), None)
            if index is None:
                asked = ", ".join(f"{d.label}" + (f" ({d.grain})" if d.grain else "") for d in self.dimensions) or "none"
                raise QueryError(
                    f"top groups by '{ref.name}'" + (f" at grain {wanted.grain}" if wanted.grain else "")
                    + f": it must be one of the query's dimensions at the same grain (the query's dimensions: {asked})", "0A000")
            if index in positions:
                raise QueryError(f"top groups name '{ref.name}' twice; name each dimension once")
            positions.append(index)
        ranking = SemanticQuery(
            metrics=(top.metric,), dimensions=top.dimensions, filters=top.filters,
            order_by=(OrderBy(top.metric, top.descending), *[OrderBy(d.label) for d in top.dimensions]),
            limit=top.limit, window=self.query.window, as_of=self.query.as_of,
        )
        ranked = _Compiler(self.model, ranking, self.dialect).build()
        ranked.set("expressions", ranked.expressions[:len(positions)])  # the dimensions; ORDER BY still reads the metric
        groups = [exp.column(f"d{i}", table="agg") for i in positions]
        target = groups[0] if len(groups) == 1 else exp.Tuple(expressions=groups)
        return exp.In(this=target, query=exp.Subquery(this=ranked))

    def aggregated(self, row_filters: list[tuple[_Dimension, Filter]]) -> exp.Select:
        """The groups level: one row per dimension values d0.. with the aggregated measures m0.."""
        if not self.groups:  # dimensions only: their distinct values
            base = self.dimensions[0].model
            self.groups[(base, None)] = _Group(base, None)
        aggregated = [self._group_select(group, row_filters) for group in self.groups.values()]
        return aggregated[0] if len(aggregated) == 1 else self._combine(aggregated)

    def _split_filters(self) -> tuple[list[exp.Expression], list[tuple[_Dimension, Filter]]]:
        metric_filters, row_filters = [], []
        metric_names = set(self.model.metric_names())
        for flt in self.query.filters:
            if flt.field in metric_names:
                metric_filters.append(_condition(self.metric_expression(flt.field), flt, "metric", self.dialect))
            else:
                dim = self._dimension(DimensionRef(flt.field, flt.grain))
                row_filters.append((dim, flt))
        return metric_filters, row_filters

    def _group_select(self, group: _Group, row_filters: list[tuple[_Dimension, Filter]]) -> exp.Select:
        base = self.model.models[group.base]
        if group.window is not None and base.time_expr is None:
            raise QueryError(
                f"{group.window.text} needs the time of model '{base.name}', which has "
                f"none; query its measures without a window, or add `time: <timestamp column>` to model '{base.name}'",
                "0A000",
            )
        rolling = self._rolling_dimension(group)
        # A filter on the time a series rolls along picks buckets; their windows still read
        # rows from before the filter's range, so it must not cut the rows themselves.
        bucket_filters = [(d, f) for d, f in row_filters if rolling is not None and d.model == base.name and d.is_time_of_model]
        picked = {id(f) for _, f in bucket_filters}
        conditions = [_condition(d.expr, f, d.type, self.dialect) for d, f in row_filters if id(f) not in picked]
        needed = group.models | {d.model for d in self.dimensions if d.model} | {d.model for d, _ in row_filters}
        try:
            steps = join_plan(self.model.models, base.name, needed)
        except JoinError as e:
            raise QueryError(self._join_refusal(base, group, row_filters, e), "0A000") from None

        rows = exp.select(*[exp.alias_(d.expr.copy(), f"d{i}", copy=False) for i, d in enumerate(self.dimensions) if d is not rolling], copy=False)
        value_index = {name: i for i, name in enumerate(group.values)}
        rows.select(*[exp.alias_(v, f"v{i}") for i, v in enumerate(group.values.values())], copy=False)
        rows.select(*[exp.alias_(c, f"c{i}") for i, c in group.conditions.items()], copy=False)
        if rolling is not None:
            rows.select(exp.alias_(base.time_expr, "t"), copy=False)
        if not rows.expressions:
            rows.select(exp.Literal.number(1), copy=False)
        # Conditions on the base model's own time go on its source, before any join: streaming
        # engines then drop the join state of rows that leave the window (RisingWave asks for
        # temporal filters on the source in FROM), and every engine joins fewer rows.
        own_time = self._window_reach(base, group.window, rolling, bucket_filters)
        if group.window is not None and rolling is None:
            own_time += self.sql_dialect.trailing_window(base.time_expr, group.window.length, group.window.delay, self._window_end())
        retained_source, retained_rows = self._retained(base, group.window, rolling)
        self._from_rows(rows, base, own_time + retained_source, steps)
        for condition in conditions + retained_rows:
            rows.where(condition, copy=False)
        if not group.uses and self._has_primary_key(base):
            return rows  # dimensions only, one row per key already: GROUP BY would change nothing

        unique_keys = {qualify(e.expr, base.name) for e in base.entities.values() if e.type in ("primary", "unique")}
        aggregates = []
        for (measure_name, _), index in group.uses.items():
            measure = self.model.measure(measure_name)
            value = exp.column(f"v{value_index[measure.qualified_name]}", table="r")
            condition = exp.column(f"c{index}", table="r") if index in group.conditions else None
            aggregate = self.sql_dialect.aggregate_where(lambda v: _aggregate(measure, v, unique_keys), value, condition)
            aggregates.append(exp.alias_(aggregate, f"m{index}", copy=False))
        if rolling is None:
            dims = [exp.column(f"d{i}", table="r") for i in range(len(self.dimensions))]
            select = exp.select(*[exp.alias_(d, f"d{i}", copy=False) for i, d in enumerate(dims)], *aggregates, copy=False)
            select.from_(rows.subquery("r", copy=False), copy=False)
            return select.group_by(*[d.copy() for d in dims], copy=False) if dims else select
        return self._rolling_select(group, base, rolling, rows, aggregates, bucket_filters)

    def _window_reach(self, base: Model, window: Window | None, rolling: _Dimension | None, bucket_filters) -> list[exp.Expression]:
        """Row conditions that keep just the rows the windows of the filtered buckets can read.

        A bucket b reads [b + grain - delay - window, b + grain - delay). A filter giving b >= L
        needs rows from L - delay - window on; one giving b <= U (or trunc(b, g) <= U) needs rows
        before U + g + grain - delay. Only a saving: the bucket filters decide the answer.
        """
        if not bucket_filters:
            return []
        time = base.time_expr
        reach = window.length + window.delay if window.delay else window.length
        conditions = []
        for dim, flt in bucket_filters:
            values = flt.value if isinstance(flt.value, tuple) else (flt.value,)
            moments = [_moment(v, flt.field) for v in values]
            if flt.op in (">=", ">", "=", "in", "between"):
                lower = min(moments) - dt.timedelta(seconds=reach.seconds)
                conditions.append(exp.GTE(this=time.copy(), expression=dialects.timestamp(lower)))
            if flt.op in ("<=", "<", "=", "in", "between"):
                upper: exp.Expression = dialects.timestamp(max(moments))
                for step in (dim.grain, rolling.grain):
                    if step:
                        upper = exp.Add(this=upper, expression=dialects.interval(_GRAIN_INTERVALS[step]))
                if window.delay:
                    upper = exp.Sub(this=upper, expression=dialects.interval(window.delay))
                conditions.append(exp.LT(this=time.copy(), expression=upper))
        return conditions

    def _retained(self, base: Model, window: Window | None, rolling: _Dimension | None) -> tuple[list, list]:
        """A materialization's retention as (conditions on the base model's source, on the joined rows).

        Kept: the buckets b > now - age. A bucket's rows are newer than its start; a rolling
        bucket's window reaches back delay + window further. So a source filter with that reach
        keeps every row a kept bucket reads (streaming engines then drop older rows' state), and
        the bucket filter (here, or in _rolling_select for a rolling series) decides the answer.
        """
        if self.retention is None:
            return [], []
        dim, age = self.retention
        if dim is rolling:  # (a rolling window has a length)
            reach = age + window.length + window.delay if window.delay else age + window.length
            return [self.sql_dialect.newer_than(base.time_expr.copy(), reach)], []
        buckets = [self.sql_dialect.newer_than(dim.expr.copy(), age)]
        if dim.model == base.name and dim.is_time_of_model:
            return [self.sql_dialect.newer_than(base.time_expr.copy(), age)], buckets
        return [], buckets

    def _has_primary_key(self, base: Model) -> bool:
        """True when an ungrained dimension is the primary key of `base`, the model the rows come from.

        A primary key is unique and not null per row of its model (after dedupe; README, Models),
        and joins never fan out (many-to-one only), so every other dimension has one value per
        key and the rows are already distinct on the dimensions.
        """
        keys = [qualify(e.expr, base.name) for e in base.entities.values() if e.type == "primary"]
        return any(d.model == base.name and d.grain is None and d.expr in keys for d in self.dimensions)

    def _join_refusal(self, base: Model, group: _Group, row_filters, error: JoinError) -> str:
        """Name the dimensions and filters that cannot meet the rows of `base`, and why."""
        blocked = set()
        for name in {d.model for d in self.dimensions if d.model} | {d.model for d, _ in row_filters}:
            try:
                join_path(self.model.models, base.name, name)
            except JoinError:
                blocked.add(name)
        fields = [d.label for d in self.dimensions if d.model in blocked]
        fields += [f.field for d, f in row_filters if d.model in blocked]
        asked = ", ".join(dict.fromkeys(fields)) or "these"
        if group.values:
            return f"measures of '{base.name}' ({', '.join(group.values)}) cannot be sliced or filtered by {asked}: {error}"
        return f"dimensions of '{base.name}' cannot be combined with {asked}: {error}"

    def _rolling_dimension(self, group: _Group) -> _Dimension | None:
        """The time dimension a windowed group rolls along, if the query slices by its model's time
        (a delay without a window does not roll: each bucket counts its rows older than the delay)."""
        if group.window is None or group.window.length is None:
            return None
        for dim in self.dimensions:
            if dim.model == group.base and dim.is_time_of_model:
                if dim.grain is None:
                    raise QueryError(
                        f"a trailing window sliced by '{dim.label}' needs a grain (e.g. hour or day), so that "
                        "each bucket's window can end at the bucket's end"
                    )
                return dim
        return None

    def _rolling_select(self, group: _Group, base: Model, rolling: _Dimension, rows: exp.Select,
                        aggregates: list, bucket_filters) -> exp.Select:
        """For each time bucket, aggregate the rows of the window that ends at the bucket's end.

        Aggregating the window's rows (not summing bucket values) keeps count distinct exact.
        The rows are fanned out to the buckets whose windows hold them (_fanned_out) and
        aggregated per bucket. On DuckDB and PostgreSQL a series spanning the model's rows is
        LEFT JOINed on the bucket, so empty buckets appear too (counts 0); windows of more than
        _MAX_FAN_OUT buckets join the series to the rows on a time range instead. Streaming
        engines get no series over the data's bounds (they maintain neither a range join nor a
        generate_series over MIN/MAX): their series holds the buckets whose windows hold rows,
        up to now (or as_of), and the read fills the empty ones in between (_filled_series).
        """
        copies = _fan_out(rolling.grain, group.window)
        streaming = self.sql_dialect.streaming
        if copies is None and streaming:
            raise QueryError(
                f"a trailing window of {group.window.length.text} spans more than {_MAX_FAN_OUT} {rolling.grain} buckets, "
                f"too many to maintain on {self.dialect}; slice by a coarser grain", "0A000")
        if copies is None:
            select, bucket = self._range_joined(group, base, rolling, rows, aggregates), exp.column("bucket", table="s")
        else:
            windowed = self._fanned_out(group, rolling, rows, aggregates, copies)
            if streaming:
                index = self.dimensions.index(rolling)
                # named columns, not *: _combine and _filled_series read the m<i> aliases
                select = exp.select(*[exp.alias_(exp.column(e.alias, table="w"), e.alias, copy=False) for e in windowed.expressions],
                                    copy=False).from_(windowed.subquery("w", copy=False), copy=False)
                bucket = exp.column(f"d{index}", table="w")
                select.where(self._at_or_before_end(bucket), copy=False)
            else:
                select, bucket = self._series_joined(group, base, rolling, windowed), exp.column("bucket", table="s")
        for dim, flt in bucket_filters:
            target = dialects.truncate(bucket.copy(), dim.grain) if dim.grain else bucket.copy()
            select.where(_condition(target, flt, dim.type, self.dialect), copy=False)
        if self.retention is not None and self.retention[0] is rolling:
            select.where(self.sql_dialect.newer_than(bucket.copy(), self.retention[1]), copy=False)
        return select

    def _at_or_before_end(self, moment: exp.Expression) -> exp.Expression:
        """moment <= as_of, or <= now as the dialect's temporal filter."""
        if self.query.as_of is not None:
            return exp.LTE(this=moment, expression=dialects.timestamp(self.query.as_of))
        return self.sql_dialect.at_or_before_now(moment)

    def _series(self, base: Model, rolling: _Dimension) -> tuple[exp.Expression, exp.Table]:
        """FROM items `bounds, generate_series(lo, hi, grain) AS s(bucket)` over the model's rows."""
        time = base.time_expr
        return _series_between(dialects.truncate(exp.Min(this=time.copy()), rolling.grain),
                               dialects.truncate(exp.Max(this=time.copy()), rolling.grain), self._source(base), rolling.grain)

    def _filled_series(self, source: exp.Select) -> exp.Select:
        """On a streaming engine, the groups level with the empty buckets of its rolling series
        filled in, between its first and its last bucket (counts 0, other measures NULL).

        What a streaming engine maintains holds only the buckets whose windows hold rows
        (_rolling_select: no series over the data's bounds, which it cannot maintain); the fill
        is a one-shot read of that groups level, routed to a materialization or not, and never
        part of a materialization (compile_materialization stores the groups level itself).
        """
        rolling = next((d for g in self.groups.values() if g.window is not None
                        and (d := self._rolling_dimension(g)) is not None), None)
        if rolling is None:
            return source
        column = f"d{self.dimensions.index(rolling)}"
        counts = {f"m{index}" for g in self.groups.values() for (name, _), index in g.uses.items()
                  if self.model.measure(name).agg in ("count", "count_distinct")}
        outputs = []
        for name in (e.alias_or_name for e in source.expressions):
            value = exp.column("bucket", table="s") if name == column else exp.column(name, table="g")
            if name in counts:
                value = exp.Coalesce(this=value, expressions=[exp.Literal.number(0)])
            outputs.append(exp.alias_(value, name, copy=False))
        ctes = source.args.get("with_")
        source.set("with_", None)  # hoisted: one WITH list, no WITH nested in a CTE
        bounds, series = _series_between(exp.Min(this=exp.column(column)), exp.Max(this=exp.column(column)),
                                         exp.to_table(_FILL_GROUPS), rolling.grain)
        filled = exp.select(*outputs, copy=False).from_(bounds, copy=False).join(series, copy=False)
        _left_join(filled, exp.to_table(_FILL_GROUPS, alias="g"),
                   exp.EQ(this=exp.column(column, table="g"), expression=exp.column("bucket", table="s")))
        for cte in ctes.expressions if ctes is not None else ():
            filled.with_(cte.alias, as_=cte.this, copy=False)
        return filled.with_(_FILL_GROUPS, as_=source, copy=False)

    def _range_joined(self, group: _Group, base: Model, rolling: _Dimension, rows: exp.Select, aggregates: list) -> exp.Select:
        """The series joined to the rows of each bucket's window by time range."""
        bucket = exp.column("bucket", table="s")
        end = exp.Add(this=bucket, expression=dialects.interval(_GRAIN_INTERVALS[rolling.grain]))
        window = group.window
        start_offset = window.length + window.delay if window.delay else window.length
        lower = exp.Sub(this=end.copy(), expression=dialects.interval(start_offset))
        upper = exp.Sub(this=end.copy(), expression=dialects.interval(window.delay)) if window.delay else end.copy()
        on = exp.and_(
            exp.GTE(this=exp.column("t", table="r"), expression=lower),
            exp.LT(this=exp.column("t", table="r"), expression=upper),
        )
        dims = []
        for i, dim in enumerate(self.dimensions):
            dims.append(bucket.copy() if dim is rolling else exp.column(f"d{i}", table="r"))
        bounds, series = self._series(base, rolling)
        select = (
            exp.select(*[exp.alias_(d, f"d{i}", copy=False) for i, d in enumerate(dims)], *aggregates, copy=False)
            .from_(bounds, copy=False)
            .join(series, copy=False)
        )
        _left_join(select, rows.subquery("r", copy=False), on)
        return select.group_by(*[d.copy() for d in dims], copy=False)

    def _fanned_out(self, group: _Group, rolling: _Dimension, rows: exp.Select, aggregates: list, copies: "_FanOut") -> exp.Select:
        """Aggregates per (bucket, other dimensions), each row counted in every bucket whose window holds it.

        Bucket b (end e = b + grain) reads [e - delay - window, e - delay), so a row at t counts
        in the buckets whose end lies in (t + delay, t + delay + window]: b_k = trunc(t + delay)
        + k * grain for k < copies.count, keeping b_k + grain <= t + delay + window where the
        window is not whole buckets. Aggregating each window's own rows keeps count distinct
        exact. DuckDB and PostgreSQL fan out with a join to a VALUES list of shifts (a hash
        aggregate, where the range join is a nested loop); streaming engines, which run no join
        without an equality, with UNION ALL of one shifted copy per k.
        """
        window = group.window
        reach = window.length + window.delay if window.delay else window.length
        time = exp.column("t", table="r")
        start = dialects.truncate(dialects.shift(time, window.delay, +1), rolling.grain)
        grain = _GRAIN_INTERVALS[rolling.grain]

        def fan(shift: exp.Expression | None, source: exp.Expression, joined: exp.Expression | None = None) -> exp.Select:
            bucket = start.copy() if shift is None else exp.Add(this=start.copy(), expression=shift)
            select = exp.select(exp.Column(this=exp.Star(), table=exp.to_identifier("r")), exp.alias_(bucket, "b", copy=False), copy=False)
            select.from_(source, copy=False)
            if joined is not None:
                select.join(joined, copy=False)
            if not copies.exact:
                ends = exp.Add(this=bucket.copy(), expression=dialects.interval(grain))
                select.where(exp.LTE(this=ends, expression=dialects.shift(time.copy(), reach, +1)), copy=False)
            return select

        if self.sql_dialect.streaming:
            fanned = None
            for k, shift in enumerate(copies.shifts):  # shift 0 first: no arithmetic for it
                copy = fan(dialects.interval(shift) if k else None, exp.to_table("_rows", alias="r"))
                fanned = copy if fanned is None else exp.union(fanned, copy, distinct=False, copy=False)
            fanned = exp.select(exp.Star(), copy=False).from_(fanned.subquery("_fanned", copy=False), copy=False)
            fanned.with_("_rows", as_=rows, copy=False)
        else:
            shift_rows = exp.Values(
                expressions=[exp.Tuple(expressions=[dialects.interval(shift)]) for shift in copies.shifts],
                alias=exp.TableAlias(this=exp.to_identifier("k"), columns=[exp.to_identifier("shift")]),
            )
            if copies.exact and all(_is_count(a.this) for a in aggregates):
                return self._counted_then_fanned(rolling, rows, aggregates, start, shift_rows)
            fanned = fan(exp.column("shift", table="k"), rows.subquery("r", copy=False), shift_rows)
        dims = [exp.column("b", table="r") if dim is rolling else exp.column(f"d{i}", table="r") for i, dim in enumerate(self.dimensions)]
        return (
            exp.select(*[exp.alias_(d.copy(), f"d{i}", copy=False) for i, d in enumerate(dims)], *aggregates, copy=False)
            .from_(fanned.subquery("r", copy=False), copy=False)
            .group_by(*dims, copy=False)
        )

    def _counted_then_fanned(self, rolling: _Dimension, rows: exp.Select, aggregates: list, start: exp.Expression,
                             shift_rows: exp.Values) -> exp.Select:
        """Counts per first bucket (trunc(t + delay)), then each bucket's counts added into the
        windows that hold it: the same numbers as fanning out every row (_fanned_out), from a
        few rows per bucket instead of every row times window / grain.

        Only for plain counts over a window of whole buckets: each row is in exactly one first
        bucket and all its copies are in windows, so adding integer counts is exact (a count
        distinct of a non-key, or a float sum, is not added up this way). The sum is cast back
        to the count's BIGINT (DuckDB sums BIGINT as HUGEINT, PostgreSQL as NUMERIC).
        """
        others = [(i, exp.column(f"d{i}", table="r")) for i, dim in enumerate(self.dimensions) if dim is not rolling]
        counted = exp.select(exp.alias_(start, "b", copy=False), *[exp.alias_(d, f"d{i}", copy=False) for i, d in others],
                             *aggregates, copy=False)
        counted.from_(rows.subquery("r", copy=False), copy=False)
        counted.group_by(start.copy(), *[d.copy() for _, d in others], copy=False)
        dims = [exp.Add(this=exp.column("b", table="p"), expression=exp.column("shift", table="k")) if dim is rolling
                else exp.column(f"d{i}", table="p") for i, dim in enumerate(self.dimensions)]
        sums = [exp.alias_(exp.Cast(this=exp.Sum(this=exp.column(a.alias, table="p")), to=exp.DataType(this=exp.DataType.Type.BIGINT)),
                           a.alias, copy=False) for a in aggregates]
        select = exp.select(*[exp.alias_(d.copy(), f"d{i}", copy=False) for i, d in enumerate(dims)], *sums, copy=False)
        select.from_(counted.subquery("p", copy=False), copy=False).join(shift_rows, copy=False)
        return select.group_by(*dims, copy=False)

    def _series_joined(self, group: _Group, base: Model, rolling: _Dimension, windowed: exp.Select) -> exp.Select:
        """The series LEFT JOINed to the windows' aggregates on the bucket: empty buckets count 0."""
        measures = []
        for (measure_name, _), index in group.uses.items():
            value = exp.column(f"m{index}", table="w")
            if self.model.measure(measure_name).agg in ("count", "count_distinct"):
                value = exp.Coalesce(this=value, expressions=[exp.Literal.number(0)])
            measures.append(exp.alias_(value, f"m{index}", copy=False))
        outer = []
        for i, dim in enumerate(self.dimensions):
            if dim is rolling:
                outer.append(exp.column("bucket", table="s"))
                on = exp.EQ(this=exp.column(f"d{i}", table="w"), expression=exp.column("bucket", table="s"))
            else:
                outer.append(exp.column(f"d{i}", table="w"))
        bounds, series = self._series(base, rolling)
        select = (
            exp.select(*[exp.alias_(d, f"d{i}", copy=False) for i, d in enumerate(outer)], *measures, copy=False)
            .from_(bounds, copy=False)
            .join(series, copy=False)
        )
        return _left_join(select, windowed.subquery("w", copy=False), on)

    def _combine(self, aggregated: list[exp.Select]) -> exp.Select:
        """Join each group's aggregates on the dimension values any group produced.

        The keys are the UNION of every group's dimension values; each group is LEFT JOINed
        to them null-safely, so a value missing from one group still shows the others'
        measures (counts read 0 there, not NULL). Joining on the keys, rather than stacking
        the groups with NULL padding, keeps every measure's own type on every engine.
        """
        names = [f"g{i}" for i in range(len(aggregated))]
        dims = [f"d{i}" for i in range(len(self.dimensions))]
        counts = set().union(*(g.counts for g in self.groups.values()))
        measures = []
        for name, select in zip(names, aggregated):
            for alias in (a.alias for a in select.expressions if a.alias.startswith("m")):
                value = exp.column(alias, table=name)
                if int(alias[1:]) in counts:
                    value = exp.Coalesce(this=value, expressions=[exp.Literal.number(0)])
                measures.append(exp.alias_(value, alias, copy=False))
        if not dims:  # one row per group: side by side, joined on a constant key
            # (an equality: a keyless cross join is a nested-loop join that RisingWave refuses)
            for select in aggregated:
                select.select(exp.alias_(exp.Literal.number(1), "k", copy=False), copy=False)
            combined = exp.select(*measures, copy=False).from_(names[0], copy=False)
            for name in names[1:]:
                combined.append("joins", exp.Join(this=exp.to_table(name), on=exp.EQ(
                    this=exp.column("k", table=names[0]), expression=exp.column("k", table=name))))
        else:
            keys = exp.select(*dims, copy=False).from_(names[0], copy=False)
            for name in names[1:]:
                keys = exp.union(keys, exp.select(*dims, copy=False).from_(name, copy=False), distinct=True, copy=False)
            if self.presence:  # p<i>: group i has rows for these values (a materialization's readers need it)
                for i, (name, select) in enumerate(zip(names, aggregated)):
                    select.select(exp.alias_(exp.Literal.number(1), "p", copy=False), copy=False)
                    measures.append(exp.alias_(exp.column("p", table=name), f"p{i}", copy=False))
            combined = exp.select(*[exp.column(d, table="keys") for d in dims], *measures, copy=False)
            combined.from_(keys.subquery("keys", copy=False), copy=False)
            for name in names:
                on = exp.and_(*[exp.NullSafeEQ(this=exp.column(d, table="keys"), expression=exp.column(d, table=name)) for d in dims])
                _left_join(combined, exp.to_table(name), on)
        for name, select in zip(names, aggregated):
            combined.with_(name, as_=select, copy=False)
        return combined

    def _order_and_limit(self, outer: exp.Select, metric_exprs) -> exp.Select:
        labels = {d.label: exp.column(f"d{i}") for i, d in enumerate(self.dimensions)}
        labels.update({name: expr for name, expr in metric_exprs})
        order = []
        for item in self.query.order_by:
            if item.field not in labels:
                raise QueryError(f"cannot order by '{item.field}': it is not in the query; order by one of: {', '.join(labels)}", "42703")
            order.append(exp.Ordered(this=labels[item.field].copy(), desc=item.descending, nulls_first=item.descending))
        if not order:  # a stable, readable default: by the dimensions, in the order asked
            order = [exp.Ordered(this=exp.column(f"d{i}"), nulls_first=False) for i in range(len(self.dimensions))]
        if order:
            outer = outer.order_by(*order, copy=False)
        if self.query.limit is not None:
            outer = outer.limit(self.query.limit, copy=False)
        if self.query.offset:
            outer = outer.offset(self.query.offset, copy=False)
        return outer

    # ---- model sources and joins ----------------------------------------------------

    def _source(self, model: Model, where: list[exp.Expression] = ()) -> exp.Expression:
        return model_source(model, self.sql_dialect, self.query.as_of, where)

    def _window_end(self) -> dt.datetime | exp.Expression | None:
        """Where a trailing window ends: as_of, or None for now (spine.py: each spine row's time)."""
        return self.query.as_of

    def _from_rows(self, rows: exp.Select, base: Model, own_time: list[exp.Expression], steps) -> None:
        """FROM the base model's source (conditions `own_time` on it), LEFT JOIN the models in `steps`
        (spine.py cuts each at every spine row's time instead)."""
        rows.from_(self._source(base, own_time), copy=False)
        for step in steps:
            _left_join(rows, self._source(self.model.models[step.right]), self._join_on(step))

    def _join_on(self, step) -> exp.Expression:
        left = self.model.models[step.left].entities[step.entity]
        right = self.model.models[step.right].entities[step.entity]
        return exp.EQ(this=qualify(left.expr, step.left), expression=qualify(right.expr, step.right))


# ---- small expression helpers ---------------------------------------------------------

@dataclass(frozen=True)
class _FanOut:
    shifts: tuple[Interval, ...]  # k * grain for each copy of a row
    exact: bool  # every copy is in a window: the window is whole buckets of a fixed length


_SHORTEST = {"month": 28 * 86400, "quarter": 89 * 86400, "year": 365 * 86400}  # calendar grains' shortest bucket
_CALENDAR_STEP = {"month": (1, "month"), "quarter": (3, "month"), "year": (1, "year")}


def _fan_out(grain: str, window: Window) -> _FanOut | None:
    """The copies of a row a rolling window needs (see _Compiler._fanned_out); None past _MAX_FAN_OUT.

    Bucket ends in (x, x + window] for x = t + delay: window / grain of them when the window is
    whole buckets of a fixed grain, else at most window // shortest bucket + 1, each checked.
    """
    length = window.length.seconds
    if grain in _SHORTEST:
        count = length // _SHORTEST[grain] + 1
        step, unit = _CALENDAR_STEP[grain]
        shifts = tuple(Interval(0, f"{k * step} {unit}{'s' if k * step != 1 else ''}") for k in range(count))
        exact = False
    else:
        size = _GRAIN_INTERVALS[grain].seconds
        exact = length % size == 0
        count = length // size if exact else length // size + 1
        shifts = tuple(Interval(k * size, describe_seconds(k * size) if k else "0 seconds") for k in range(count))
    return _FanOut(shifts, exact) if count <= _MAX_FAN_OUT else None


_FILL_GROUPS = "_series_groups"  # the CTE a streaming read fills (tests/streaming_rules.py knows it)


def _series_between(lo: exp.Expression, hi: exp.Expression, source: exp.Expression, grain: str) -> tuple[exp.Expression, exp.Table]:
    """FROM items `(SELECT lo, hi FROM source) AS bounds, generate_series(lo, hi, grain) AS s(bucket)`."""
    bounds = exp.select(exp.alias_(lo, "lo", copy=False), exp.alias_(hi, "hi", copy=False), copy=False).from_(source, copy=False)
    series = exp.Table(
        this=exp.Anonymous(this="generate_series", expressions=[
            exp.column("lo", table="bounds"), exp.column("hi", table="bounds"), dialects.interval(_GRAIN_INTERVALS[grain])]),
        alias=exp.TableAlias(this=exp.to_identifier("s"), columns=[exp.to_identifier("bucket")]),
    )
    return bounds.subquery("bounds", copy=False), series


def _left_join(select: exp.Select, source: exp.Expression, on: exp.Expression) -> exp.Select:
    """Append `LEFT JOIN source ON on` in place (Select.join(join_type=...) re-parses the type each call)."""
    select.append("joins", exp.Join(this=source, on=on, side="LEFT"))
    return select


def _and(*conditions: exp.Expression | None) -> exp.Expression | None:
    present = [c for c in conditions if c is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else exp.and_(*[exp.Paren(this=c.copy()) for c in present])


def _fill(expression: exp.Expression, value: int | float | None) -> exp.Expression:
    """COALESCE(expression, value); the expression itself when there is no value."""
    if value is None:
        return expression
    return exp.Coalesce(this=expression, expressions=[exp.Literal.number(repr(value))])


def _safe_divide(numerator: exp.Expression, denominator: exp.Expression) -> exp.Expression:
    return exp.Div(this=numerator, expression=exp.Nullif(this=denominator, expression=exp.Literal.number(0)))


def _is_count(aggregate: exp.Expression) -> bool:
    """A plain COUNT (with or without its FILTER or CASE condition): additive over disjoint rows."""
    inner = aggregate.this if isinstance(aggregate, exp.Filter) else aggregate
    return isinstance(inner, exp.Count) and not isinstance(inner.this, exp.Distinct)


def _aggregate(measure: Measure, value: exp.Expression, unique_keys: set[exp.Expression]) -> exp.Expression:
    agg = measure.agg
    if agg == "count" or (agg == "count_distinct" and measure.expr in unique_keys):
        # Rows keep their model's grain (joins never fan out), so distinct keys need no DISTINCT.
        return exp.Count(this=value)
    if agg == "count_distinct":
        return exp.Count(this=exp.Distinct(expressions=[value]))
    if agg == "percentile":
        return exp.PercentileCont(this=value, expression=exp.Literal.number(measure.percentile))
    return {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max, "median": exp.Median}[agg](this=value)


def _moment(value, field_name: str) -> dt.datetime:
    """A filter value on a time dimension as a datetime (what _literal renders for it)."""
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        return parse_timestamp(value, f"filter on '{field_name}'")
    raise QueryError(f"filter on time dimension '{field_name}' needs a timestamp, got {value!r}", "22007")


def _literal(value, kind: str, field_name: str) -> exp.Expression:
    """A user value as a typed SQL literal, checked against the field's type."""
    if value is None:
        return exp.Null()
    if kind == "time":
        return dialects.timestamp(_moment(value, field_name))
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    what = "metric" if kind == "metric" else f"{kind} dimension"
    if isinstance(value, (int, float, decimal.Decimal)):
        if kind == "boolean":
            raise QueryError(f"filter on boolean dimension '{field_name}' needs true or false, got {value!r}", "22P02")
        if kind == "categorical":  # a text literal compares with text and number columns alike
            return exp.Literal.string(_number(value, what, field_name).this)
        return _number(value, what, field_name)
    if isinstance(value, str):
        if kind in ("number", "metric"):
            return _number(value, what, field_name)
        if kind == "boolean":
            if value.lower() not in ("true", "false"):
                raise QueryError(f"filter on boolean dimension '{field_name}' needs true or false, got {value!r}", "22P02")
            return exp.Boolean(this=value.lower() == "true")
        return exp.Literal.string(value)
    raise QueryError(f"filter on '{field_name}': unsupported value {value!r}", "22P02")


def _number(value, what: str, field_name: str) -> exp.Expression:
    """A numeric literal written from the parsed number, never from the user's text
    (float('nan'), 'infinity' or '1_000' would otherwise reach the SQL as words)."""
    try:
        number = decimal.Decimal(repr(value) if isinstance(value, float) else value)
    except (decimal.InvalidOperation, TypeError, ValueError):
        number = None
    if number is None or not number.is_finite():
        raise QueryError(f"filter on {what} '{field_name}' needs a number, got {value!r}", "22P02")
    return exp.Literal.number(str(number))


def _condition(target: exp.Expression, flt: Filter, kind: str, dialect: str) -> exp.Expression:
    op = flt.op
    target = target.copy()
    if op == "is null":
        return exp.Is(this=target, expression=exp.Null())
    if op == "is not null":
        return exp.Not(this=exp.Is(this=target, expression=exp.Null()))
    if op in ("in", "not in"):
        if not flt.value:  # IN () is not SQL; no value matches an empty list
            return exp.Boolean(this=op == "not in")
        condition = exp.In(this=target, expressions=[_literal(v, kind, flt.field) for v in flt.value])
        return exp.Not(this=condition) if op == "not in" else condition
    if op == "between":
        low, high = (_literal(v, kind, flt.field) for v in flt.value)
        return exp.Between(this=target, low=low, high=high)
    if op in ("contains", "starts with"):
        if not isinstance(flt.value, str):
            raise QueryError(f"'{op}' on '{flt.field}' needs a text value, got {flt.value!r}", "22P02")
        position = exp.StrPosition(this=exp.cast(target, exp.DataType.Type.TEXT), substr=exp.Literal.string(flt.value))
        if op == "contains":
            return exp.GT(this=position, expression=exp.Literal.number(0))
        return exp.EQ(this=position, expression=exp.Literal.number(1))
    comparison = {"=": exp.EQ, "!=": exp.NEQ, "<": exp.LT, "<=": exp.LTE, ">": exp.GT, ">=": exp.GTE}[op]
    return comparison(this=target, expression=_literal(flt.value, kind, flt.field))
