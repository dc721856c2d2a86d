"""Which deployed materialization answers a query exactly, and why each other one does not.

A materialization stores the groups level of its own query: dimension values d0.. and the
measures m0.. its metrics aggregate (numerators and denominators apart, never a ratio), plus
p<i> marking which of its groups has rows in a combined row. A query reads it instead of the
base tables when every measure it aggregates (with the same filter, window and rolling time)
is stored, every dimension and filter it asks for is stored at a grain that answers it, and,
when the query's dimensions are coarser, every measure re-aggregates exactly (sums and counts
of rows; never a distinct count, an average or a percentile).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlglot import exp

from ..model.types import qualify
from . import dialects

# Buckets of a grain lie inside one bucket of each of these grains.
_NESTS = {
    "minute": ("minute", "hour", "day", "week", "month", "quarter", "year"),
    "hour": ("hour", "day", "week", "month", "quarter", "year"),
    "day": ("day", "week", "month", "quarter", "year"),
    "week": ("week",),
    "month": ("month", "quarter", "year"),
    "quarter": ("quarter", "year"),
    "year": ("year",),
}


@dataclass(frozen=True)
class Route:
    """A materialization deployed in the engine and fresh enough to read, and its table."""

    name: str
    schema: str
    table: str
    # With a retention: every bucket newer than this moment is stored (older ones may be gone).
    kept_after: dt.datetime | None = None
    catalog: str | None = None  # an attached database holding a fresher copy (DuckDB under serve)


@dataclass
class Routing:
    chosen: str | None = None
    source: exp.Select | None = None
    reasons: dict[str, str] = field(default_factory=dict)  # materialization -> why it was not used


class _NoRoute(Exception):
    pass


def route(compiler, routes: tuple[Route, ...], row_filters) -> Routing:
    """The route that answers the compiler's query exactly with the least work (no
    re-aggregation first, then the fewest stored dimensions), with its groups-level SELECT."""
    from .compiler import materialization_compiler  # compiler imports this module

    routing = Routing()
    feasible = []
    for candidate in routes:
        mat = compiler.model.materializations.get(candidate.name)
        if mat is None:
            routing.reasons[candidate.name] = "it is deployed but no longer in the model; deploy again"
            continue
        if compiler.query.as_of is not None:
            routing.reasons[candidate.name] = "the query asks as_of a past moment; a materialization holds the current state"
            continue
        if not any(group.uses for group in compiler.groups.values()):
            routing.reasons[candidate.name] = "the query asks for no measures"
            continue
        try:
            stored = _stored(compiler.model, mat, compiler.dialect, materialization_compiler)
            source = _read(compiler, stored, candidate, row_filters)
        except _NoRoute as e:
            routing.reasons[candidate.name] = str(e)
            continue
        # Least work: no re-aggregation, fewer stored dimensions, then fewer rows (a retention).
        cost = (source.args.get("group") is not None, len(stored.dimensions), mat.retention is None)
        feasible.append((cost, candidate.name, source))
    if feasible:
        feasible.sort(key=lambda f: f[0])
        _, routing.chosen, routing.source = feasible[0]
        for _, name, _ in feasible[1:]:
            routing.reasons[name] = f"it answers exactly too, with more work than {routing.chosen}"
    return routing


def _stored(model, mat, dialect: str, build):
    """The materialization's compiler (its groups and uses), built once per model and dialect:
    routing only reads it, and every query that could read the materialization asks for it."""
    key = ("__stored__", mat.name, dialect)
    stored = model.compile_cache.get(key)
    if stored is None:
        stored = model.compile_cache[key] = build(model, mat, dialect)
    return stored


def _read(compiler, stored, candidate: Route, row_filters) -> exp.Select:
    dims = [_map_dimension(dim, stored.dimensions) for dim in compiler.dimensions]
    same_dims = sorted(i for i, trunc in dims if trunc is None) == list(range(len(stored.dimensions))) and len(dims) == len(stored.dimensions)
    stored_uses = _uses(stored)
    parts, used_groups = [], set()
    for group in compiler.groups.values():
        rolling = _rolling_key(compiler, group)
        for (measure_name, condition), index in group.uses.items():
            found = stored_uses.get((measure_name, condition, group.window, rolling))
            if found is None:
                raise _NoRoute(f"it does not store {_describe_use(measure_name, condition, group.window, rolling)}")
            parts.append((index, found[0], compiler.model.measure(measure_name)))
            used_groups.add(found[1])
    if not same_dims:
        for _, _, measure in parts:
            if not _re_aggregates(compiler.model, measure):
                raise _NoRoute(
                    f"the query's dimensions are coarser than its own, and {measure.qualified_name} ({measure.agg}) "
                    "cannot be re-aggregated exactly")

    table = exp.Table(this=exp.to_identifier(candidate.table, quoted=True), db=exp.to_identifier(candidate.schema, quoted=True),
                      catalog=exp.to_identifier(candidate.catalog, quoted=True) if candidate.catalog else None,
                      alias=exp.TableAlias(this=exp.to_identifier("mat")))
    outputs = []
    for i, (stored_index, trunc) in enumerate(dims):
        value = exp.column(f"d{stored_index}", table="mat")
        outputs.append(dialects.truncate(value, trunc) if trunc else value)
    measures = []
    for index, column, measure in parts:
        value = exp.column(column, table="mat")
        if not same_dims:
            value = exp.Sum(this=value)
            if measure.agg in ("count", "count_distinct"):  # a count over no stored rows is 0
                value = exp.Coalesce(this=value, expressions=[exp.Literal.number(0)])
        measures.append(exp.alias_(value, f"m{index}", copy=False))
    select = exp.select(*[exp.alias_(o, f"d{i}", copy=False) for i, o in enumerate(outputs)], *measures, copy=False).from_(table, copy=False)
    for dim, flt in row_filters:
        select.where(_stored_filter(compiler, dim, flt, stored.dimensions), copy=False)
    _check_retention(compiler.model.materializations[candidate.name], candidate, row_filters)
    if len(stored.groups) > 1 and stored.dimensions and len(used_groups) < len(stored.groups):
        # a stored row exists where any of its groups has rows; the query's rows where its own do
        present = [exp.Not(this=exp.Is(this=exp.column(f"p{g}", table="mat"), expression=exp.Null())) for g in sorted(used_groups)]
        select.where(exp.or_(*present) if len(present) > 1 else present[0], copy=False)
    if not same_dims and outputs:
        select.group_by(*[o.copy() for o in outputs], copy=False)
    return select


def _check_retention(mat, candidate: Route, row_filters) -> None:
    """A materialization with a retention answers only queries whose filter on its time dimension
    starts after `kept_after`: every bucket they ask for is then still stored."""
    if mat.retention is None:
        return
    from .compiler import _moment

    (name, grain), age = mat.retention
    starts = []
    for dim, flt in row_filters:
        # Any grain: trunc(b, g) >= L, = L or in (L, ..) all give b >= L.
        if dim.name == name and flt.op in (">=", ">", "=", "in", "between"):
            values = flt.value if isinstance(flt.value, tuple) else (flt.value,)
            starts.append(min(_moment(v, flt.field) for v in values))
    kept = f"it keeps only the {grain} buckets of {name} of the last {age.text}"
    if candidate.kept_after is None:
        raise _NoRoute(f"{kept}, and when it was last computed is unknown; run metrics-layer refresh")
    if not starts:
        raise _NoRoute(f"{kept} (after {candidate.kept_after:%Y-%m-%d %H:%M:%S}), and the query has no filter on {name} "
                       "that starts after that")
    if max(starts) <= candidate.kept_after:
        raise _NoRoute(f"{kept} (after {candidate.kept_after:%Y-%m-%d %H:%M:%S}), and the query's filter on {name} "
                       f"starts at {max(starts):%Y-%m-%d %H:%M:%S}, before that")


def _map_dimension(dim, stored_dims) -> tuple[int, str | None]:
    """(stored index, grain to truncate the stored value to, or None when it is the same)."""
    coarser = None
    for i, have in enumerate(stored_dims):
        if have.name != dim.name:
            continue
        if have.grain == dim.grain:
            return i, None
        if dim.grain and (have.grain is None or dim.grain in _NESTS[have.grain]):
            coarser = (i, dim.grain)
    if coarser is None:
        raise _NoRoute(f"it does not store {dim.name}{':' + dim.grain if dim.grain else ''}")
    return coarser


def _uses(stored) -> dict[tuple, tuple[str, int]]:
    """(measure, filter, window, rolling time) -> (stored column, group index)."""
    found = {}
    for group_index, group in enumerate(stored.groups.values()):
        rolling = _rolling_key(stored, group)
        for (measure_name, condition), index in group.uses.items():
            found[(measure_name, condition, group.window, rolling)] = (f"m{index}", group_index)
    return found


def _rolling_key(compiler, group) -> tuple[str, str] | None:
    rolling = compiler._rolling_dimension(group)
    return (rolling.name, rolling.grain) if rolling is not None else None


def _describe_use(measure: str, condition, window, rolling) -> str:
    text = measure
    if condition is not None:
        text += f" filtered by {condition.sql()}"
    if window is not None:
        text += f" over {window.text}"
        text += f" rolling by {rolling[0]}:{rolling[1]}" if rolling else " ending now"
    return text


def _re_aggregates(model, measure) -> bool:
    """A sum, or a count of rows: parts of it add up to it (a count distinct of other values does not)."""
    if measure.agg in ("sum", "count"):
        return True
    if measure.agg != "count_distinct":
        return False
    base = model.models[measure.model]
    keys = {qualify(e.expr, base.name) for e in base.entities.values() if e.type in ("primary", "unique")}
    return measure.expr in keys


def _stored_filter(compiler, dim, flt, stored_dims) -> exp.Expression:
    """The query's filter on a stored dimension column, when it selects exactly the same rows."""
    from .compiler import _condition, _moment

    for i, have in enumerate(stored_dims):
        if have.name != dim.name:
            continue
        column = exp.column(f"d{i}", table="mat")
        if have.grain == dim.grain or have.grain is None:
            target = dialects.truncate(column, dim.grain) if dim.grain and have.grain is None else column
            return _condition(target, flt, dim.type, compiler.dialect)
        if dim.grain and dim.grain in _NESTS[have.grain]:  # truncating a stored bucket to a coarser grain
            return _condition(dialects.truncate(column, dim.grain), flt, dim.type, compiler.dialect)
        if dim.grain is None and flt.op in (">=", "<"):
            # t >= X over rows is b >= X over buckets when X starts a bucket
            moment = _moment(flt.value, flt.field)
            if _starts_bucket(moment, have.grain):
                return _condition(column, flt, dim.type, compiler.dialect)
    raise _NoRoute(f"it cannot apply the filter on {flt.field} exactly (it stores {dim.name} "
                   f"{'at ' + ', '.join(d.grain or 'full time' for d in stored_dims if d.name == dim.name) if any(d.name == dim.name for d in stored_dims) else 'not at all'})")


def _starts_bucket(moment, grain: str) -> bool:
    if moment.second or moment.microsecond or (grain != "minute" and moment.minute):
        return False
    if grain in ("minute", "hour"):
        return True
    if moment.hour:
        return False
    if grain == "day":
        return True
    if grain == "week":
        return moment.weekday() == 0
    if moment.day != 1:
        return False
    return grain == "month" or (grain == "quarter" and moment.month % 3 == 1) or (grain == "year" and moment.month == 1)
