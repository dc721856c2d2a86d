"""Point-in-time evaluation over a spine: every metric as it was at each spine row's time, in one query.

A spine is a table of rows (time[, entity key]) in the engine, prepared by the caller as
`ml_row` (the row's position), `ml_point` (one id per distinct (time, key)), `ml_at` (naive UTC
timestamp) and optionally `ml_key`. The value of a metric at a point T is what
`SemanticQuery(metrics, as_of=T)` returns (for a key: restricted to the base model's rows of
that entity value), so the spine reuses the compiler's three levels with the spine's distinct
points as one more dimension (`ml_point`). Each group (one base model and window) takes one
of two forms:

- cumulative (`_SpineCompiler._cumulative`; counts and sums over a base model with a time and a
  primary key or a dedupe by its time, whose joined models join it directly): running sums of
  +/- changes at the start and end of each base row's window segments, read at every point;
  the rows are the base rows' segments, not points x window rows (see that method).
- range join (everything else), as follows.

- rows: each group's base model is joined to the points whose cut and trailing window hold the
  row (`time <= T`, and `(T - delay - window, T - delay]`), by range conditions, plus the key;
  every other model is joined cut at the same T. A deduplicated model keeps, per key, the row
  as_of would keep at T: for `latest` with the time being the dedupe column, each row is the
  latest for T in [its time, the next row's time) (a LEAD window); for `earliest`, the first row
  overall once its time is <= T; otherwise the model's rows are joined to every point at or
  after them and deduplicated per (key, point) — exact but larger.
- groups: aggregated per point (count distinct and ratios stay exact: one group per point).
- combine: the points LEFT JOIN each group's aggregates on the point id, so a point without
  rows reads 0 for counts and NULL for ratios, as a query as_of that time would.

The outer query joins the spine rows back to their point and keeps the spine's order.
Streaming engines are refused: a training set is a batch job.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from ..model.joins import JoinError, join_plan
from ..model.types import qualify
from ..model.types import Model, SemanticModel
from ..query import Filter, QueryError, SemanticQuery
from . import dialects
from .compiler import _aggregate, _Compiler, _condition, _Dimension, _is_count, _left_join, model_source

ROW, POINT, AT, KEY = "ml_row", "ml_point", "ml_at", "ml_key"  # the spine table's columns
_POINTS = "ml_points"  # CTE: the spine's distinct points
_SPINE = "ml_spine"  # alias of the points in each group's rows
_UNTIL = "ml_until"  # column: when a deduplicated row stops being the latest of its key
_CUT_AT = "ml_cut_at"  # column: the point a row was deduplicated for (the general form)
# The cumulative form's columns: a base row's id, a segment's start and end, the end of the
# row's window, the partition key, the event time and kind (0: a change of counts, 1: a point).
_ID, _START, _END, _HI, _K, _T, _KIND, _SIGN = "ml_id", "ml_s", "ml_e", "ml_hi", "ml_k", "ml_t", "ml_kind", "ml_sign"


@dataclass(frozen=True)
class SpineQuery:
    """Metrics evaluated at every row of a spine held in the engine as `table`.

    `entity`: the entity (`name` or `model.name`) the spine's key matches; every metric's
    base model must have it. None: global metrics, one value per time.
    """

    metrics: tuple[str, ...]
    table: str = "ml_spine_rows"
    entity: str | None = None
    filters: tuple[Filter, ...] = ()
    window: str | None = None

    def __post_init__(self) -> None:
        for name in ("metrics", "filters"):
            value = getattr(self, name)
            if isinstance(value, (str, Filter)):
                raise QueryError(f"{name} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not self.metrics:
            raise QueryError("a training set needs at least one metric")


def entity_name(model: SemanticModel, entity: str | None) -> str | None:
    """The entity a spine is keyed by: `name`, or `model.name` checked against that model."""
    if entity is None:
        return None
    model_name, dot, name = entity.rpartition(".")
    if dot:
        found = model.models.get(model_name)
        if found is None or name not in found.entities:
            known = [f"{m.name}.{e}" for m in model.models.values() for e in m.entities]
            raise QueryError(f"unknown entity '{entity}'; entities: {', '.join(known)}", "42703")
        return name
    known = sorted({e for m in model.models.values() for e in m.entities})
    if name not in known:
        raise QueryError(f"unknown entity '{entity}'; entities: {', '.join(known)}", "42703")
    return name


def compile_spine(model: SemanticModel, spine: SpineQuery, dialect: str = "duckdb") -> str:
    """SQL returning one row per spine row, in the spine's order (`ml_row`), one column per metric."""
    if dialects.get(dialect).streaming:
        raise QueryError(
            f"training sets are a batch job: {dialect} maintains views incrementally and has no exact "
            "point-in-time form for a spine; run them on DuckDB or PostgreSQL over the same YAML", "0A000")
    for flt in spine.filters:
        if flt.field in model.metrics:
            raise QueryError(f"filter on metric '{flt.field}': a training set keeps every spine row; "
                             "filter rows by dimensions only", "0A000")
    compiler = _SpineCompiler(model, spine, dialect)
    features = compiler.build()
    points = exp.select(POINT, AT, *([KEY] if compiler.keyed else []), copy=False).distinct().from_(
        exp.to_table(spine.table), copy=False)
    outer = exp.select(*[exp.column(name, table="f", quoted=True) for name in spine.metrics], copy=False)
    outer.from_(exp.to_table(spine.table, alias="s"), copy=False)
    _left_join(outer, features.subquery("f", copy=False),
               exp.EQ(this=exp.column(POINT, table="s"), expression=exp.column(POINT, table="f")))
    outer.order_by(exp.column(ROW, table="s"), copy=False)
    outer.with_(_POINTS, as_=points, copy=False)
    return outer.sql(dialect=dialect, copy=False)


class _SpineCompiler(_Compiler):
    """The compiler's levels with the spine's points as the dimension and each point's time as as_of."""

    def __init__(self, model: SemanticModel, spine: SpineQuery, dialect: str):
        super().__init__(model, SemanticQuery(spine.metrics, filters=spine.filters, window=spine.window), dialect)
        self.entity = entity_name(model, spine.entity)
        self.keyed = self.entity is not None
        self.at = exp.column(AT, table=_SPINE)
        # The point id is the one dimension (joined on, never NULL); its time and key ride along.
        self.dimensions = [_Dimension(POINT, "", exp.column(POINT, table=_SPINE), "number", None, False)]

    def build(self) -> exp.Select:
        select = super().build()
        select.set("order", None)  # the outer query orders by spine row
        return select

    def _window_end(self) -> exp.Expression:
        return self.at

    def aggregated(self, row_filters) -> exp.Select:
        """Every point LEFT JOIN each group's aggregates on the point id (counts read 0 where a group has no rows)."""
        points = exp.to_table(_POINTS, alias="p")
        combined = exp.select(exp.alias_(exp.column(POINT, table="p"), "d0", copy=False), copy=False).from_(points, copy=False)
        counts = set().union(*(g.counts for g in self.groups.values()))
        for i, group in enumerate(self.groups.values()):
            name = f"g{i}"
            select = self._group_select(group, row_filters)
            for alias in (a.alias for a in select.expressions if a.alias.startswith("m")):
                value = exp.column(alias, table=name)
                if int(alias[1:]) in counts:
                    value = exp.Coalesce(this=value, expressions=[exp.Literal.number(0)])
                combined.select(exp.alias_(value, alias, copy=False), copy=False)
            _left_join(combined, select.subquery(name, copy=False),
                       exp.EQ(this=exp.column(POINT, table="p"), expression=exp.column("d0", table=name)))
        return combined

    def _group_select(self, group, row_filters) -> exp.Select:
        cumulative = self._cumulative(group, row_filters)
        return cumulative if cumulative is not None else super()._group_select(group, row_filters)

    def _cumulative(self, group, row_filters) -> exp.Select | None:
        """The group's measures at every point as running sums over time, or None where that form
        does not apply (the range join of `_from_rows` is used then).

        A base row counts at T while T is in [time + delay, time + delay + window) (the trailing
        window, or [time, forever) without one: the cut; for a `latest` dedupe also only until
        the key's next row). Its conditions read the joined models as cut at T, which change
        only when a joined row of the same key appears; so the row's interval splits into
        segments at those times, and each segment's conditions are evaluated once, at its start,
        with the joined models cut there (`_cut`, as for a point). A segment adds its value to
        each measure whose condition holds at its start and subtracts it at its end; the running
        sum of these changes in time order, read at each point (the changes at a time before a
        point at that time), is the measure there. Exact for counts (count distinct of a unique
        key is a count) and for sums of integers and decimals (a float sum is exact to rounding);
        a sum over no rows reads NULL (a count of its rows rides along). The rows are the base
        model's rows times their segments (a few each), not points times the rows of their windows.

        Applies when every measure is a count or a sum, the base model has a time and either a
        primary key (no dedupe) or a dedupe by its time (a segment's row is then its dedupe key,
        and its time for `latest`), and every joined model is joined to the base model directly.
        """
        base = self.model.models[group.base]
        time = base.time_expr
        if time is None:
            return None
        dedupe = base.dedupe
        alias = exp.to_identifier(base.name, quoted=True)
        until = None
        if dedupe is None:
            primary = next((e for e in base.entities.values() if e.type == "primary"), None)
            if primary is None:
                return None
            ids = [qualify(primary.expr, base.name)]

            def source() -> exp.Expression:
                return model_source(base, self.sql_dialect)
        else:
            if exp.column(dedupe.by, table=alias.copy()) != time:
                return None
            ids = [exp.column(k, table=alias.copy()) for k in dedupe.key]
            if dedupe.keep == "earliest":  # the earliest row overall, once its time is <= T
                def source() -> exp.Expression:
                    return model_source(base, self.sql_dialect)
            else:  # each row is its key's latest from its time until the key's next row
                ids.append(time.copy())
                until = exp.column(_UNTIL, table=alias.copy())

                def source() -> exp.Expression:
                    return self._versions(base)
        needed = group.models | {d.model for d, _ in row_filters}
        try:
            steps = join_plan(self.model.models, base.name, needed)
        except JoinError:
            return None
        if any(step.left != base.name for step in steps):
            return None
        unique_keys = {qualify(e.expr, base.name) for e in base.entities.values() if e.type in ("primary", "unique")}
        measures = []  # (m index, value, condition, is a sum)
        for (measure_name, _), index in group.uses.items():
            measure = self.model.measure(measure_name)
            aggregate = _aggregate(measure, measure.expr, unique_keys)
            if not _is_count(aggregate) and not isinstance(aggregate, exp.Sum):
                return None
            measures.append((index, measure.expr, group.conditions.get(index), isinstance(aggregate, exp.Sum)))
        key = self._key_of(base) if self.keyed else None

        window = group.window
        lo = time.copy() if window is None else dialects.shift(time.copy(), window.delay, +1)
        hi = None
        if window is not None and window.length is not None:
            hi = dialects.shift(time.copy(), window.length + window.delay if window.delay else window.length, +1)
        if until is not None:  # the row stops counting at its window's end or when the key's next row comes
            hi = until.copy() if hi is None else exp.Case(
                ifs=[exp.If(this=exp.or_(exp.Is(this=until.copy(), expression=exp.Null()), exp.GT(this=until.copy(), expression=hi)),
                            true=hi.copy())], default=until.copy())
        # A row counts at all: it has a time, and (latest) it is still its key's latest at its window's start.
        # And only rows whose window can hold a point: time in (first point - delay - window,
        # last point - delay] (on the time column itself, so that zone maps and indexes apply).
        counts = [exp.Not(this=exp.Is(this=time.copy(), expression=exp.Null()))]
        if until is not None:
            counts.append(exp.Paren(this=exp.or_(exp.Is(this=until.copy(), expression=exp.Null()),
                                                 exp.GT(this=until.copy(), expression=lo.copy()))))

        def bound(agg) -> exp.Expression:
            return exp.select(agg(this=exp.column(AT)), copy=False).from_(_POINTS, copy=False).subquery(copy=False)

        delay = window.delay if window is not None else None
        counts.append(exp.LTE(this=time.copy(), expression=dialects.shift(bound(exp.Max), delay, -1)))
        if window is not None and window.length is not None:
            reach = window.length + window.delay if window.delay else window.length
            counts.append(exp.GT(this=time.copy(), expression=dialects.shift(bound(exp.Min), reach, -1)))
        id_names = [f"{_ID}{i}" for i in range(len(ids))]

        # Segment starts: the window's start, and each joined row's time inside the row's interval
        # (with the interval's end, ml_hi, where it has one: the last segment ends there).
        def ends() -> list[exp.Expression]:
            return [exp.alias_(hi.copy(), _HI, copy=False)] if hi is not None else []

        starts = exp.select(*[exp.alias_(i.copy(), n, copy=False) for i, n in zip(ids, id_names)],
                            exp.alias_(lo.copy(), _START, copy=False), *ends(), copy=False)
        starts.from_(source(), copy=False).where(exp.and_(*[c.copy() for c in counts]), copy=False)
        for step in steps:
            right = self.model.models[step.right]
            if right.time_expr is None:
                continue
            later = exp.select(*[i.copy() for i in ids], right.time_expr.copy(), *ends(), copy=False)
            later.from_(source(), copy=False)
            later.join(_raw_rows(right), on=self._join_on(step), copy=False)
            later.where(exp.and_(*[c.copy() for c in counts]), copy=False)
            later.where(exp.GT(this=right.time_expr.copy(), expression=lo.copy()), copy=False)
            if hi is not None:
                later.where(exp.LT(this=right.time_expr.copy(), expression=hi.copy()), copy=False)
            starts = exp.union(starts, later, distinct=True, copy=False)
        start = exp.column(_START, table="st")
        following = exp.Window(this=exp.Anonymous(this="LEAD", expressions=[start.copy()]),
                               partition_by=[exp.column(n, table="st") for n in id_names],
                               order=exp.Order(expressions=[exp.Ordered(this=start.copy())]))
        if hi is not None:
            following = exp.Coalesce(this=following, expressions=[exp.column(_HI, table="st")])
        segments = exp.select(*[exp.column(n, table="st") for n in id_names], exp.alias_(start.copy(), AT, copy=False),
                              exp.alias_(following, _END, copy=False), copy=False).from_(starts.subquery("st", copy=False), copy=False)

        # Each segment's values, with the joined models cut at its start (alias ml_spine, column ml_at).
        rows = exp.select(copy=False)
        if key is not None:
            rows.select(exp.alias_(key.copy(), _K, copy=False), copy=False)
        rows.select(exp.alias_(exp.column(AT, table=_SPINE), _START, copy=False),
                    exp.alias_(exp.column(_END, table=_SPINE), _END, copy=False), copy=False)
        for index, value, condition, is_sum in measures:
            holds = exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null()))
            if condition is not None:
                holds = exp.and_(holds, exp.Paren(this=condition.copy()))
            one = exp.Case(ifs=[exp.If(this=holds, true=exp.Literal.number(1))], default=exp.Literal.number(0))
            if is_sum:
                rows.select(exp.alias_(one, f"n{index}", copy=False), copy=False)
                one = exp.Case(ifs=[exp.If(this=holds.copy(), true=value.copy())], default=exp.Literal.number(0))
            rows.select(exp.alias_(one, f"m{index}", copy=False), copy=False)
        rows.from_(segments.subquery(_SPINE, copy=False), copy=False)
        rows.join(source(), on=exp.and_(*[exp.EQ(this=i.copy(), expression=exp.column(n, table=_SPINE)) for i, n in zip(ids, id_names)],
                                        *[c.copy() for c in counts]), copy=False)
        for step in steps:
            joined, conditions = self._cut(self.model.models[step.right])
            _left_join(rows, joined, exp.and_(self._join_on(step), *conditions))
        for dim, flt in row_filters:
            rows.where(_condition(dim.expr, flt, dim.type, self.dialect), copy=False)
        if key is not None:
            rows.where(exp.Not(this=exp.Is(this=key.copy(), expression=exp.Null())), copy=False)

        # + at each segment's start, - at its end; then the points, after the changes at their time.
        columns = [(f"m{index}", f"n{index}" if is_sum else None) for index, _, _, is_sum in measures]
        summed = [name for pair in columns for name in pair if name]
        sign = exp.column(_SIGN, table="k")
        signs = exp.Values(expressions=[exp.Tuple(expressions=[exp.Literal.number(1)]),
                                        exp.Tuple(expressions=[exp.Literal.number(-1)])],
                           alias=exp.TableAlias(this=exp.to_identifier("k"), columns=[exp.to_identifier(_SIGN)]))
        at = exp.Case(ifs=[exp.If(this=exp.EQ(this=sign.copy(), expression=exp.Literal.number(1)),
                                  true=exp.column(_START, table="r"))], default=exp.column(_END, table="r"))
        changes = exp.select(copy=False)
        points = exp.select(copy=False)
        if key is not None:
            changes.select(exp.column(_K, table="r"), copy=False)
            points.select(exp.alias_(exp.column(KEY), _K, copy=False), copy=False)
        changes.select(exp.alias_(at, _T, copy=False), exp.alias_(exp.Literal.number(0), _KIND, copy=False),
                       exp.alias_(exp.Cast(this=exp.Null(), to=exp.DataType.build("BIGINT")), POINT, copy=False), copy=False)
        points.select(exp.alias_(exp.column(AT), _T, copy=False), exp.alias_(exp.Literal.number(1), _KIND, copy=False),
                      exp.column(POINT), copy=False)
        for name in summed:
            changes.select(exp.alias_(exp.Mul(this=sign.copy(), expression=exp.column(name, table="r")), name, copy=False), copy=False)
            points.select(exp.alias_(exp.Literal.number(0), name, copy=False), copy=False)
        changes.from_(rows.subquery("r", copy=False), copy=False).join(signs, copy=False)
        changes.where(exp.or_(exp.EQ(this=sign.copy(), expression=exp.Literal.number(1)),
                              exp.Not(this=exp.Is(this=exp.column(_END, table="r"), expression=exp.Null()))), copy=False)
        points.from_(_POINTS, copy=False)
        events = exp.union(changes, points, distinct=False, copy=False)

        order = exp.Order(expressions=[exp.Ordered(this=exp.column(_T)), exp.Ordered(this=exp.column(_KIND))])
        frame = exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW")
        running = exp.select(exp.column(POINT), exp.column(_KIND), copy=False)
        for name in summed:
            total = exp.Window(this=exp.Sum(this=exp.column(name)), partition_by=[exp.column(_K)] if key is not None else None,
                               order=order.copy(), spec=frame.copy())
            running.select(exp.alias_(total, name, copy=False), copy=False)
        running.from_(events.subquery("e", copy=False), copy=False)
        select = exp.select(exp.alias_(exp.column(POINT, table="c"), "d0", copy=False), copy=False)
        for total, rows_counted in columns:
            value = exp.column(total, table="c")
            if rows_counted is None:  # a count: BIGINT, as COUNT is (the running SUM widens it)
                value = exp.Cast(this=value, to=exp.DataType.build("BIGINT"))
            else:  # a sum over no rows is NULL
                value = exp.Case(ifs=[exp.If(this=exp.EQ(this=exp.column(rows_counted, table="c"), expression=exp.Literal.number(0)),
                                             true=exp.Null())], default=value)
            select.select(exp.alias_(value, total, copy=False), copy=False)
        select.from_(running.subquery("c", copy=False), copy=False)
        return select.where(exp.EQ(this=exp.column(_KIND, table="c"), expression=exp.Literal.number(1)), copy=False)

    def _versions(self, model: Model) -> exp.Expression:
        """A `latest`-deduplicated model's rows, each with when it stops being its key's latest (ml_until)."""
        alias = exp.to_identifier(model.name, quoted=True)
        by = exp.column(model.dedupe.by, table=alias.copy())
        keys = [exp.column(k, table=alias.copy()) for k in model.dedupe.key]
        until = exp.Window(this=exp.Anonymous(this="LEAD", expressions=[by.copy()]),
                           partition_by=keys, order=exp.Order(expressions=[exp.Ordered(this=by.copy(), nulls_first=False)]))
        versions = exp.select(exp.Column(this=exp.Star(), table=alias.copy()), exp.alias_(until, _UNTIL, copy=False), copy=False)
        versions.from_(_raw_rows(model), copy=False)
        return versions.subquery(alias.copy(), copy=False)

    def _key_of(self, base: Model) -> exp.Expression:
        """The base model's value of the spine's entity (refused where the model has no such entity)."""
        entity = base.entities.get(self.entity)
        if entity is None:
            measures = ", ".join(sorted(self.groups_of(base)))
            raise QueryError(
                f"{measures} over model '{base.name}' cannot be keyed by entity '{self.entity}': '{base.name}' has "
                f"entities {', '.join(base.entities) or '(none)'}; ask for these metrics in a training set without "
                "that entity, or key the spine by one of those", "0A000")
        return qualify(entity.expr, base.name)

    def _from_rows(self, rows: exp.Select, base: Model, own_time: list[exp.Expression], steps) -> None:
        source, conditions = self._cut(base)
        if own_time and conditions and not base.dedupe:
            # A trailing window ends at or before T already; a third range condition makes the
            # join a nested loop instead of DuckDB's two-condition IEJoin.
            conditions = []
        conditions += own_time
        if self.keyed:
            conditions.append(exp.EQ(this=self._key_of(base), expression=exp.column(KEY, table=_SPINE)))
        rows.from_(exp.to_table(_POINTS, alias=_SPINE), copy=False)
        rows.join(source, on=exp.and_(*conditions) if conditions else exp.true(), copy=False)
        for step in steps:
            source, conditions = self._cut(self.model.models[step.right])
            _left_join(rows, source, exp.and_(self._join_on(step), *conditions))

    def groups_of(self, base: Model) -> set[str]:
        return {name for g in self.groups.values() if g.base == base.name for name, _ in g.uses}

    def _cut(self, model: Model) -> tuple[exp.Expression, list[exp.Expression]]:
        """The model's rows as of each point: a FROM item and the join conditions that select,
        for the point `ml_spine`, the rows as_of its time would keep (see the module's docstring)."""
        time = model.time_expr
        if time is None:  # no time: as_of keeps every row
            return model_source(model, self.sql_dialect), []
        at_or_before = exp.LTE(this=time.copy(), expression=self.at.copy())
        dedupe = model.dedupe
        if dedupe is None:
            return model_source(model, self.sql_dialect), [at_or_before]
        alias = exp.to_identifier(model.name, quoted=True)
        by = exp.column(dedupe.by, table=alias.copy())
        keys = [exp.column(k, table=alias.copy()) for k in dedupe.key]
        if time == by and dedupe.keep == "earliest":
            # The earliest row with time <= T is the earliest row overall, once its time is <= T.
            return model_source(model, self.sql_dialect), [at_or_before]
        if time == by:  # latest: a row is the key's latest from its time until the next row's
            until_col = exp.column(_UNTIL, table=alias.copy())
            still = exp.or_(exp.Is(this=until_col, expression=exp.Null()), exp.GT(this=until_col.copy(), expression=self.at.copy()))
            return self._versions(model), [at_or_before, exp.Paren(this=still)]
        table = _raw_rows(model)
        # General form: the rows joined to every point at or after them, deduplicated per (key, point).
        point = exp.column(AT, table="c")
        joined = exp.select(exp.Column(this=exp.Star(), table=alias.copy()), exp.alias_(point, _CUT_AT, copy=False), copy=False)
        joined.from_(table, copy=False).join(
            exp.select(AT, copy=False).distinct().from_(_POINTS, copy=False).subquery("c", copy=False),
            on=exp.LTE(this=time.copy(), expression=point.copy()), copy=False)
        cut_at = exp.column(_CUT_AT, table=alias.copy())
        deduped = self.sql_dialect.deduplicated(joined.subquery(alias.copy(), copy=False), keys + [cut_at],
                                                by.copy(), dedupe.keep == "latest", None)
        return deduped.subquery(alias.copy(), copy=False), [exp.EQ(this=cut_at.copy(), expression=self.at.copy())]


def _raw_rows(model: Model) -> exp.Expression:
    """The model's table (or SQL) as it is, before any dedupe, aliased by the model's name."""
    table = model.source.copy()
    table = table if isinstance(table, exp.Table) else table.subquery()
    table.set("alias", exp.TableAlias(this=exp.to_identifier(model.name, quoted=True)))
    return table
