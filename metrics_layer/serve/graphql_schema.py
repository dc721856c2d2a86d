"""The GraphQL schema, generated from a SemanticModel, and its resolvers.

One root field per public view; its selection set is the query. Leaf fields are the view's
metrics and dimensions; a time dimension is an object whose subfields are grains
(`created_at { hour day }`) plus `value` (the raw timestamp). Arguments: `where` (typed
operators per dimension; metric operators become metric filters), `orderBy`, `limit`,
`offset`, `window`, `asOf`. A root `catalog` field lists views, metrics and dimensions.

    {
      conversion_monitoring(where: {model_version: {equals: "v2"}}, orderBy: {created_at: asc}) {
        created_at { hour day }
        accuracy
      }
    }

Resolvers only translate the selection into a SemanticQuery and the Result back; the engine
work runs in a worker thread. A schema is built once per model object (see `SchemaCache`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from graphql import (
    GraphQLArgument, GraphQLBoolean, GraphQLFloat, GraphQLEnumType, GraphQLEnumValue, GraphQLError, GraphQLField,
    GraphQLInputField, GraphQLInputObjectType, GraphQLInt, GraphQLList, GraphQLNonNull, GraphQLObjectType,
    GraphQLResolveInfo, GraphQLScalarType, GraphQLSchema, GraphQLString, print_ast,
)
from graphql.execution import ExecutionContext
from graphql.execution.collect_fields import collect_sub_fields
from graphql.language import FloatValueNode, IntValueNode, StringValueNode, ValueNode

from ..model.types import SemanticModel
from ..query import GRAINS, DimensionRef, Filter, OrderBy, QueryError, SemanticQuery, parse_timestamp
from ..views import PublicView, ViewField, public_views
from ..json_values import decimal_value

log = logging.getLogger("metrics_layer.serve")

RAW_FIELD = "value"  # the subfield of a time dimension that returns the timestamp itself


# ---- scalars ---------------------------------------------------------------------------

def _serialize_number(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, decimal.Decimal):
        return decimal_value(value)
    raise GraphQLError(f"Number cannot represent {value!r}")


# Parse errors are ValueErrors: graphql-core then reports them with the argument's location.
def _parse_number_value(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Number cannot represent non-numeric value: {value!r}")
    return value


def _parse_number_literal(node: ValueNode, _variables=None) -> Any:
    if isinstance(node, IntValueNode):
        return int(node.value)
    if isinstance(node, FloatValueNode):
        return decimal.Decimal(node.value)  # exact: 0.1 stays 0.1 in the SQL literal
    raise ValueError(f"Number cannot represent non-numeric value: {print_ast(node)}")


NumberScalar = GraphQLScalarType(
    "Number",
    description="A JSON number. Integers stay integers; decimals keep their exact digits (never rounded through a float).",
    serialize=_serialize_number, parse_value=_parse_number_value, parse_literal=_parse_number_literal,
)


def _serialize_datetime(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, str):
        return value
    raise GraphQLError(f"DateTime cannot represent {value!r}")


def _parse_datetime_value(value: Any) -> dt.datetime | dt.date:
    if not isinstance(value, str):
        raise ValueError(f"DateTime cannot represent non-string value: {value!r}; write ISO 8601 such as 2026-03-01T12:00:00")
    text = value.strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)  # a day: `to` and `afterDate` then mean its end
        return parse_timestamp(text, "DateTime")
    except (QueryError, ValueError):
        raise ValueError(f"DateTime cannot represent {value!r}; write ISO 8601 such as 2026-03-01 or 2026-03-01T12:00:00Z") from None


def _parse_datetime_literal(node: ValueNode, _variables=None) -> dt.datetime | dt.date:
    if not isinstance(node, StringValueNode):
        raise ValueError(f"DateTime cannot represent non-string value: {print_ast(node)}")
    return _parse_datetime_value(node.value)


DateTimeScalar = GraphQLScalarType(
    "DateTime",
    description="A timestamp in ISO 8601 (UTC when no offset is given), e.g. 2026-03-01T12:00:00Z; a date such as 2026-03-01 is accepted as input.",
    serialize=_serialize_datetime, parse_value=_parse_datetime_value, parse_literal=_parse_datetime_literal,
)

OrderDirection = GraphQLEnumType(
    "OrderDirection", {"asc": GraphQLEnumValue("asc", description="Ascending, nulls last."),
                       "desc": GraphQLEnumValue("desc", description="Descending, nulls first.")},
    description="Sort direction.",
)


def _list_of(kind) -> GraphQLList:
    return GraphQLList(GraphQLNonNull(kind))


@functools.lru_cache(maxsize=None)
def _feature_types() -> GraphQLObjectType:
    """features(view, keys): the values per key, where they were read and how fresh."""
    text = GraphQLString
    value = GraphQLObjectType("FeatureValue", {
        "metric": GraphQLField(GraphQLNonNull(text), description="The metric as the view's YAML names it."),
        "value": GraphQLField(NumberScalar, description="Its current value; over no rows: 0 for counts, null for ratios."),
    })
    row = GraphQLObjectType("FeatureRow", {
        "key": GraphQLField(GraphQLNonNull(text)),
        "values": GraphQLField(GraphQLNonNull(_list_of(value)),
                               resolve=lambda r, _i: [{"metric": m, "value": v} for m, v in r["values"].items()]),
    })
    return GraphQLObjectType("FeatureValues", {
        "view": GraphQLField(GraphQLNonNull(text)),
        "entity": GraphQLField(GraphQLNonNull(text), description="model.entity the keys are values of."),
        "source": GraphQLField(GraphQLNonNull(text), description="'materialization <name>' or 'query' (the base tables)."),
        "freshness": GraphQLField(GraphQLNonNull(text), resolve=lambda d, _i: json.dumps(d["freshness"], sort_keys=True, default=str),
                                  description="How fresh, as a JSON object: the materialization's last refresh, or when the query ran."),
        "rows": GraphQLField(GraphQLNonNull(_list_of(row)), description="One per key, in the order asked (duplicates once)."),
    })


StringFilter = GraphQLInputObjectType("StringFilter", lambda: {
    "equals": GraphQLInputField(GraphQLString),
    "notEquals": GraphQLInputField(GraphQLString),
    "in": GraphQLInputField(_list_of(GraphQLString)),
    "notIn": GraphQLInputField(_list_of(GraphQLString)),
    "contains": GraphQLInputField(GraphQLString),
    "startsWith": GraphQLInputField(GraphQLString),
    "set": GraphQLInputField(GraphQLBoolean, description="true: is not null; false: is null."),
}, description="Operators on a text dimension; several operators are ANDed.")

NumberFilter = GraphQLInputObjectType("NumberFilter", lambda: {
    "equals": GraphQLInputField(NumberScalar),
    "notEquals": GraphQLInputField(NumberScalar),
    "in": GraphQLInputField(_list_of(NumberScalar)),
    "notIn": GraphQLInputField(_list_of(NumberScalar)),
    "gt": GraphQLInputField(NumberScalar),
    "gte": GraphQLInputField(NumberScalar),
    "lt": GraphQLInputField(NumberScalar),
    "lte": GraphQLInputField(NumberScalar),
    "set": GraphQLInputField(GraphQLBoolean, description="true: is not null; false: is null."),
}, description="Operators on a number dimension or a metric (a metric filter keeps the result rows whose metric value passes).")

TimeFilter = GraphQLInputObjectType("TimeFilter", lambda: {
    "equals": GraphQLInputField(DateTimeScalar),
    "gt": GraphQLInputField(DateTimeScalar),
    "gte": GraphQLInputField(DateTimeScalar),
    "lt": GraphQLInputField(DateTimeScalar),
    "lte": GraphQLInputField(DateTimeScalar),
    "inDateRange": GraphQLInputField(
        _list_of(DateTimeScalar),
        description="[from, to], both included; a date-only `to` includes that whole day."),
    "beforeDate": GraphQLInputField(DateTimeScalar, description="Strictly before this moment (or the start of this date)."),
    "afterDate": GraphQLInputField(DateTimeScalar, description="Strictly after this moment (or after the end of this date)."),
    "set": GraphQLInputField(GraphQLBoolean, description="true: is not null; false: is null."),
}, description="Operators on a time dimension (timestamps in ISO 8601); several operators are ANDed.")

BooleanFilter = GraphQLInputObjectType("BooleanFilter", lambda: {
    "equals": GraphQLInputField(GraphQLBoolean),
    "notEquals": GraphQLInputField(GraphQLBoolean),
    "set": GraphQLInputField(GraphQLBoolean, description="true: is not null; false: is null."),
}, description="Operators on a boolean dimension.")

_FILTER_TYPES = {"time": TimeFilter, "number": NumberFilter, "boolean": BooleanFilter, "categorical": StringFilter}
_SIMPLE_OPS = {
    "equals": "=", "notEquals": "!=", "in": "in", "notIn": "not in", "contains": "contains",
    "startsWith": "starts with", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
}
_RESERVED_TYPE_NAMES = {
    "Query", "String", "Int", "Float", "Boolean", "ID", "Number", "DateTime", "OrderDirection",
    "StringFilter", "NumberFilter", "TimeFilter", "BooleanFilter",
    "Catalog", "CatalogView", "CatalogField", "CatalogMetric", "CatalogDimension", "Monitor", "MonitorGroup",
    "FeatureValues", "FeatureRow", "FeatureValue",
}


# ---- catalog (shared with REST) ---------------------------------------------------------

def model_catalog(model: SemanticModel) -> dict[str, Any]:
    """Views, metrics (and measures usable as metrics) and dimensions, for discovery."""
    cached = model.compile_cache.get("__catalog__")
    if cached is not None:
        return cached
    views = [
        {
            "name": view.name, "description": view.description,
            "fields": [
                {"name": f.name, "kind": f.kind, "ref": f.ref, "type": f.type, "description": f.description, "format": f.format}
                for f in view.fields
            ],
        }
        for view in public_views(model).values()
    ]
    metrics = [
        {
            "name": m.name, "type": m.type, "description": m.description, "format": m.format,
            "window": m.window.text if m.window else None, "label_delay": m.label_delay.text if m.label_delay else None,
        }
        for m in model.metrics.values()
    ]
    for mdl in model.models.values():
        for measure in mdl.measures.values():
            metrics.append({
                "name": measure.qualified_name, "type": measure.agg, "description": measure.description,
                "format": None, "window": None, "label_delay": None,
            })
    dimensions = [
        {"name": d.qualified_name, "type": d.type, "description": d.description,
         "grains": list(GRAINS) if d.type == "time" else None}
        for mdl in model.models.values() for d in mdl.dimensions.values()
    ]
    cached = model.compile_cache["__catalog__"] = {"views": views, "metrics": metrics, "dimensions": dimensions}
    return cached


def _resolve_monitors(_root, info) -> list[dict]:
    """The server's monitor states (GET /api/monitors has the same document)."""
    from ..monitors import Monitors, status

    request = getattr(info.context, "request", None)
    monitors = getattr(request.app.state, "monitors", None) if request is not None else None
    return status(monitors or Monitors(info.context.service, record=False))


def _monitor_type() -> GraphQLObjectType:
    text = GraphQLString
    group = GraphQLObjectType("MonitorGroup", lambda: {
        "group": GraphQLField(GraphQLNonNull(text), resolve=lambda g, _i: json.dumps(g["group"], sort_keys=True, default=str),
                              description="The group's dimension values, as a JSON object ({} without by)."),
        "value": GraphQLField(GraphQLFloat), "coverage": GraphQLField(GraphQLFloat),
        "state": GraphQLField(GraphQLNonNull(text)), "at": GraphQLField(text), "message": GraphQLField(text),
    }, description="One group's last evaluation.")
    return GraphQLObjectType("Monitor", lambda: {
        "name": GraphQLField(GraphQLNonNull(text)), "metric": GraphQLField(GraphQLNonNull(text)),
        "condition": GraphQLField(GraphQLNonNull(text)),
        "state": GraphQLField(text, description="alerting, error or ok; null before the first evaluation."),
        "lastEvaluation": GraphQLField(text, resolve=lambda m, _i: m["last_evaluation"]),
        "groups": GraphQLField(GraphQLNonNull(_list_of(group))),
    }, description="A monitor and its last evaluation.")


def _catalog_types() -> GraphQLObjectType:
    def key(name: str) -> Callable:
        return lambda source, _info: source.get(name)

    text = GraphQLString
    field = GraphQLObjectType("CatalogField", lambda: {
        "name": GraphQLField(GraphQLNonNull(text), description="The field's name in the view (GraphQL field, SQL column)."),
        "kind": GraphQLField(GraphQLNonNull(text), description="dimension or metric"),
        "ref": GraphQLField(GraphQLNonNull(text), description="The semantic name: model.dimension, metric or model.measure."),
        "type": GraphQLField(GraphQLNonNull(text)),
        "description": GraphQLField(text),
        "format": GraphQLField(text),
    }, description="A field of a view.")
    view = GraphQLObjectType("CatalogView", lambda: {
        "name": GraphQLField(GraphQLNonNull(text), description="The root field (GraphQL) and table (SQL) of the view."),
        "description": GraphQLField(text),
        "fields": GraphQLField(GraphQLNonNull(_list_of(field))),
    }, description="A view: metrics and dimensions shown as one GraphQL root field and one SQL table.")
    metric = GraphQLObjectType("CatalogMetric", lambda: {
        "name": GraphQLField(GraphQLNonNull(text)),
        "type": GraphQLField(GraphQLNonNull(text), description="simple, ratio, derived, or the aggregation of a measure."),
        "description": GraphQLField(text),
        "format": GraphQLField(text),
        "window": GraphQLField(text, description="Trailing window, e.g. '3 hours'."),
        "labelDelay": GraphQLField(text, resolve=key("label_delay"), description="Label delay the window is shifted back by."),
    }, description="A metric, or a measure usable as a metric (model.measure).")
    dimension = GraphQLObjectType("CatalogDimension", lambda: {
        "name": GraphQLField(GraphQLNonNull(text), description="model.dimension"),
        "type": GraphQLField(GraphQLNonNull(text), description="categorical, time, number or boolean"),
        "description": GraphQLField(text),
        "grains": GraphQLField(_list_of(text), description="Grains a time dimension can be truncated to."),
    }, description="A dimension of a model.")
    return GraphQLObjectType("Catalog", lambda: {
        "views": GraphQLField(GraphQLNonNull(_list_of(view))),
        "metrics": GraphQLField(GraphQLNonNull(_list_of(metric))),
        "dimensions": GraphQLField(GraphQLNonNull(_list_of(dimension))),
    }, description="What can be asked: views, metrics and dimensions.")


# ---- schema -----------------------------------------------------------------------------

def _type_name(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in text.split("_") if part) or "View"


@dataclass
class _ViewPlan:
    view: PublicView
    fields: dict[str, ViewField]  # GraphQL field name -> view field


class _SchemaBuilder:
    def __init__(self, model: SemanticModel, run: Callable):
        self.model = model
        self.run = run
        self.type_names: set[str] = set(_RESERVED_TYPE_NAMES)

    def unique_type(self, name: str) -> str:
        candidate, n = name, 2
        while candidate in self.type_names:
            candidate, n = f"{name}{n}", n + 1
        self.type_names.add(candidate)
        return candidate

    def build(self) -> GraphQLSchema:
        root: dict[str, GraphQLField] = {}
        for view in public_views(self.model).values():
            if view.name.startswith("__"):
                log.warning("view %r is not shown in GraphQL: names starting with __ are reserved", view.name)
                continue
            fields = {f.name: f for f in view.fields if not f.name.startswith("__")}
            if fields:
                root[view.name] = self.view_field(_ViewPlan(view, fields))
        catalog_name = "catalog" if "catalog" not in root else "metrics_catalog"
        root[catalog_name] = GraphQLField(
            GraphQLNonNull(_catalog_types()), resolve=lambda _root, _info: model_catalog(self.model),
            description="What can be asked: views, metrics (with descriptions and formats) and dimensions.",
        )
        if self.model.monitors and "monitors" not in root:
            root["monitors"] = GraphQLField(
                GraphQLNonNull(_list_of(_monitor_type())), resolve=_resolve_monitors,
                description="Monitors (docs/monitoring.md): state, condition, last evaluation, value per group.")
        if any(v.entity for v in self.model.views.values()) and "features" not in root:
            model = self.model

            async def resolve_features(_root, info: GraphQLResolveInfo, view: str, keys: list[str]) -> dict:
                from ..features import online_values

                try:
                    document = await info.context.workers.run(lambda: online_values(info.context.service, view, keys, model=model))
                except QueryError as e:
                    raise GraphQLError(e.message, extensions={"code": e.code}) from None
                noted = getattr(info.context, "freshness", None)
                if noted is not None and "materialization" in document["freshness"] and document["freshness"] not in noted:
                    noted.append(document["freshness"])  # extensions.freshness, as for view fields
                return document

            root["features"] = GraphQLField(
                GraphQLNonNull(_feature_types()), resolve=resolve_features,
                args={"view": GraphQLArgument(GraphQLNonNull(GraphQLString), description="A view with an entity (YAML entity:)."),
                      "keys": GraphQLArgument(GraphQLNonNull(_list_of(GraphQLString)), description="Values of the view's entity.")},
                description="Current values of a keyed view's metrics per key (GET /api/features/{view} has the same document).")
        return GraphQLSchema(query=GraphQLObjectType("Query", root, description="One field per view; its selection set is the query."))

    def view_field(self, plan: _ViewPlan) -> GraphQLField:
        base = _type_name(plan.view.name)
        row_fields: dict[str, GraphQLField] = {}
        where_fields: dict[str, GraphQLInputField] = {}
        order_fields: dict[str, GraphQLInputField] = {}
        for name, f in plan.fields.items():
            where_fields[name] = GraphQLInputField(
                NumberFilter if f.kind == "metric" else _FILTER_TYPES.get(f.type, StringFilter), description=f.description)
            order_fields[name] = GraphQLInputField(OrderDirection, description=f.description)
            if f.kind == "metric":
                row_fields[name] = GraphQLField(NumberScalar, description=_metric_description(f))
            elif f.type == "time":
                row_fields[name] = GraphQLField(self.time_type(base, name, f), description=f.description)
            elif f.type == "number":
                row_fields[name] = GraphQLField(NumberScalar, description=f.description)
            elif f.type == "boolean":
                row_fields[name] = GraphQLField(GraphQLBoolean, description=f.description)
            else:
                row_fields[name] = GraphQLField(GraphQLString, description=f.description)
        row = GraphQLObjectType(self.unique_type(base), row_fields, description=plan.view.description)
        where = GraphQLInputObjectType(self.unique_type(f"{base}Where"), where_fields,
                                       description=f"Filters on {plan.view.name}; all conditions are ANDed.")
        order = GraphQLInputObjectType(self.unique_type(f"{base}OrderBy"), order_fields,
                                       description="One field per item; give a list to sort by several fields.")
        args = {
            "where": GraphQLArgument(where, description="Filters: on dimensions (rows) and on metrics (result rows)."),
            "orderBy": GraphQLArgument(_list_of(order), description="Sort, e.g. [{accuracy: desc}, {created_at: asc}]; fields must be selected."),
            "limit": GraphQLArgument(GraphQLInt, description="At most this many rows."),
            "offset": GraphQLArgument(GraphQLInt, description="Skip this many rows first."),
            "window": GraphQLArgument(GraphQLString, description="Override every metric's trailing window, e.g. \"3 hours\"."),
            "asOf": GraphQLArgument(DateTimeScalar, description="Evaluate using only rows at or before this moment (ISO 8601)."),
        }
        resolver = _ViewResolver(self.model, plan, row, self.run)
        return GraphQLField(GraphQLNonNull(_list_of(row)), args=args, resolve=resolver, description=plan.view.description)

    def time_type(self, base: str, name: str, f: ViewField) -> GraphQLObjectType:
        fields = {RAW_FIELD: GraphQLField(DateTimeScalar, description="The timestamp itself, not truncated.")}
        for grain in GRAINS:
            fields[grain] = GraphQLField(DateTimeScalar, description=f"Start of the {grain}.")
        return GraphQLObjectType(self.unique_type(f"{base}{_type_name(name)}"), fields,
                                 description=(f.description or name) + " Ask for one or more grains.")


def _metric_description(f: ViewField) -> str | None:
    parts = [" ".join(f.description.split())] if f.description else []
    if f.format:
        parts.append(f"Format: {f.format}.")
    return " ".join(parts) or None


# ---- resolving a view field into a SemanticQuery -----------------------------------------

_TRUNCATE_NESTS = {  # finest grain -> coarser grains a value of it determines
    None: set(GRAINS), "minute": set(GRAINS), "hour": set(GRAINS), "day": set(GRAINS),
    "week": {"week"}, "month": {"month", "quarter", "year"}, "quarter": {"quarter", "year"}, "year": {"year"},
}
_GRAIN_ORDER = {None: 0, **{g: i + 1 for i, g in enumerate(GRAINS)}}


def truncate(value: Any, grain: str) -> Any:
    """A timestamp (or date) truncated to a grain, as date_trunc does (weeks start on Monday)."""
    if value is None or not isinstance(value, (dt.datetime, dt.date)):
        return value
    is_datetime = isinstance(value, dt.datetime)
    if not is_datetime:
        value = dt.datetime(value.year, value.month, value.day)
    if grain == "minute":
        value = value.replace(second=0, microsecond=0)
    elif grain == "hour":
        value = value.replace(minute=0, second=0, microsecond=0)
    else:
        value = value.replace(hour=0, minute=0, second=0, microsecond=0)
        if grain == "week":
            value -= dt.timedelta(days=value.weekday())
        elif grain == "month":
            value = value.replace(day=1)
        elif grain == "quarter":
            value = value.replace(month=(value.month - 1) // 3 * 3 + 1, day=1)
        elif grain == "year":
            value = value.replace(month=1, day=1)
    return value


@dataclass
class _Selected:
    field: ViewField
    name: str  # GraphQL field name
    grains: list[str | None] | None  # time dimensions: the grains asked (None = raw value)
    finest: str | None = None


class Completed(list):
    """Response rows a view resolver shaped itself (see CompletingExecutionContext).

    A list, so that plain graphql-core execution still completes them the usual way.
    """


class CompletingExecutionContext(ExecutionContext):
    """Lets a view resolver shape its rows itself.

    graphql-core completes every leaf of every row through several Python calls; for a time
    series of a few thousand rows that costs more than the query. A view resolver already
    knows the exact selection (aliases, fragments, directives, __typename: collected with
    graphql-core's own collect_sub_fields), so it returns the response rows directly.
    """

    def complete_value(self, return_type, field_nodes, info, path, result):
        if type(result) is Completed:
            return result
        return super().complete_value(return_type, field_nodes, info, path, result)


class _ViewResolver:
    def __init__(self, model: SemanticModel, plan: _ViewPlan, row_type: GraphQLObjectType, run: Callable):
        self.model = model
        self.plan = plan
        self.row_type = row_type
        self.run = run

    async def __call__(self, _root, info: GraphQLResolveInfo, **args) -> Completed:
        try:
            fields = collect_sub_fields(info.schema, info.fragments, info.variable_values, self.row_type, info.field_nodes)
            selected = self.selection(info, fields)
            query = self.query(selected, args)
            shape = self.shape(info, fields, selected)
        except QueryError as e:
            raise GraphQLError(e.message, extensions={"code": e.code}) from None
        try:
            # Shaping runs in the worker thread too: a big result does not hold up the loop.
            return await self.run(info.context, self.model, query, lambda result: Completed(map(shape, result.rows)))
        except QueryError as e:
            raise GraphQLError(e.message, extensions={"code": e.code}) from None

    # -- selection -> query

    def selection(self, info: GraphQLResolveInfo, fields: dict[str, list]) -> list[_Selected]:
        by_name: dict[str, list] = {}  # aliases of one field share its column: merge their nodes
        for nodes in fields.values():
            name = nodes[0].name.value
            if name != "__typename":
                by_name.setdefault(name, []).extend(nodes)
        chosen = []
        for name, nodes in by_name.items():
            vf = self.plan.fields[name]
            if vf.kind != "dimension" or vf.type != "time":
                chosen.append(_Selected(vf, name, None))
                continue
            time_type = self.row_type.fields[name].type
            grains: set[str | None] = set()
            for subnodes in collect_sub_fields(info.schema, info.fragments, info.variable_values, time_type, nodes).values():
                sub = subnodes[0].name.value
                if sub != "__typename":
                    grains.add(None if sub == RAW_FIELD else sub)
            if not grains:
                raise QueryError(f"select at least one grain of '{name}' (e.g. {name} {{ day }})", "42703")
            ordered = sorted(grains, key=_GRAIN_ORDER.__getitem__)
            finest = ordered[0]
            awkward = [g for g in ordered[1:] if g not in _TRUNCATE_NESTS[finest]]
            if awkward:
                raise QueryError(
                    f"'{name}': a {finest} can span two {awkward[0]}s, so {finest} and {awkward[0]} cannot be "
                    f"asked together; add a finer grain (e.g. day) or ask for one of them", "0A000")
            chosen.append(_Selected(vf, name, ordered, finest))
        # The query asks for the dimensions, then the metrics: the result's columns follow.
        return [c for c in chosen if c.field.kind == "dimension"] + [c for c in chosen if c.field.kind == "metric"]

    def query(self, selected: list[_Selected], args: dict[str, Any]) -> SemanticQuery:
        dimensions = [DimensionRef(s.field.ref, s.finest) for s in selected if s.field.kind == "dimension"]
        metrics = [s.field.ref for s in selected if s.field.kind == "metric"]
        filters: list[Filter] = []
        for name, operators in (args.get("where") or {}).items():
            if operators:
                filters.extend(self.filters(self.plan.fields[name], name, operators))
        order = []
        selected_names = {s.name for s in selected}
        for item in args.get("orderBy") or []:
            if len(item) != 1:
                raise QueryError(
                    "each orderBy item takes exactly one field, e.g. orderBy: [{accuracy: desc}, {created_at: asc}]", "22023")
            (name, direction), = item.items()
            if name not in selected_names:
                raise QueryError(f"cannot order by '{name}': select it in the query to order by it", "42703")
            order.append(OrderBy(self.plan.fields[name].ref, direction == "desc"))
        as_of = args.get("asOf")
        if isinstance(as_of, dt.date) and not isinstance(as_of, dt.datetime):
            as_of = dt.datetime(as_of.year, as_of.month, as_of.day)
        return SemanticQuery(
            metrics=tuple(metrics), dimensions=tuple(dimensions), filters=tuple(filters), order_by=tuple(order),
            limit=args.get("limit"), offset=args.get("offset"), window=args.get("window"), as_of=as_of,
        )

    def filters(self, vf: ViewField, name: str, operators: dict[str, Any]) -> list[Filter]:
        result = []
        for op, value in operators.items():
            if value is None:
                continue
            if op == "set":
                result.append(Filter(vf.ref, "is not null" if value else "is null"))
            elif op == "inDateRange":
                if len(value) != 2:
                    raise QueryError(f"'{name}' inDateRange needs [from, to], got {len(value)} values", "22023")
                low, high = value
                result.append(Filter(vf.ref, ">=", _moment(low)))
                if _is_date(high):
                    result.append(Filter(vf.ref, "<", _moment(high) + dt.timedelta(days=1)))
                else:
                    result.append(Filter(vf.ref, "<=", high))
            elif op == "beforeDate":
                result.append(Filter(vf.ref, "<", _moment(value)))
            elif op == "afterDate":
                if _is_date(value):
                    result.append(Filter(vf.ref, ">=", _moment(value) + dt.timedelta(days=1)))
                else:
                    result.append(Filter(vf.ref, ">", value))
            else:
                if isinstance(value, list):
                    value = tuple(_moment(v) if vf.type == "time" else v for v in value)
                    if not value:
                        raise QueryError(f"'{name}' {op} needs at least one value", "22023")
                elif vf.type == "time":
                    value = _moment(value)
                result.append(Filter(vf.ref, _SIMPLE_OPS[op], value))
        return result

    # -- result rows -> response rows

    def shape(self, info: GraphQLResolveInfo, fields: dict[str, list], selected: list[_Selected]) -> Callable[[tuple], dict]:
        """A function from a result row to its response object, for exactly this selection."""
        column = {s.name: i for i, s in enumerate(selected)}
        finest = {s.name: s.finest for s in selected}
        items = []  # Python expressions, one per response key, in selection order
        for key, nodes in fields.items():
            name = nodes[0].name.value
            if name == "__typename":
                items.append(f"{key!r}: {self.row_type.name!r}")
                continue
            cell = f"row[{column[name]}]"
            field_type = self.row_type.fields[name].type
            if isinstance(field_type, GraphQLObjectType):  # a time dimension: its grains
                subfields = collect_sub_fields(info.schema, info.fragments, info.variable_values, field_type, nodes)
                parts = []
                for subkey, subnodes in subfields.items():
                    sub = subnodes[0].name.value
                    if sub == "__typename":
                        parts.append(f"{subkey!r}: {field_type.name!r}")
                    else:
                        grain = None if sub == RAW_FIELD else sub
                        value = cell if grain == finest[name] else f"_truncate({cell}, {grain!r})"
                        parts.append(f"{subkey!r}: _datetime({value})")
                items.append(f"{key!r}: {{{', '.join(parts)}}}")
            else:
                items.append(f"{key!r}: {_LEAF_HELPER.get(field_type, '_text')}({cell})")
        return _shape_function(f"lambda row: {{{', '.join(items)}}}")


@functools.lru_cache(maxsize=512)
def _shape_function(source: str) -> Callable[[tuple], dict]:
    # One call per row instead of several per cell. The keys are GraphQL names (letters,
    # digits, _) written with repr, the rest is ours: no user text is evaluated.
    return eval(source, dict(_SHAPE_HELPERS))  # noqa: S307


def _shape_number(v: Any) -> Any:
    t = type(v)
    if t is float:
        return v if v - v == 0 else None  # NaN and infinities have no JSON form
    if t is int or v is None:
        return v
    return _serialize_number(v)


def _shape_text(v: Any) -> Any:
    return v if v is None or type(v) is str else GraphQLString.serialize(v)


def _shape_boolean(v: Any) -> Any:
    return v if v is None or type(v) is bool else GraphQLBoolean.serialize(v)


def _shape_datetime(v: Any) -> Any:
    if type(v) is dt.datetime:
        return v.isoformat()
    return None if v is None else _serialize_datetime(v)


_LEAF_HELPER = {NumberScalar: "_number", GraphQLBoolean: "_boolean", DateTimeScalar: "_datetime", GraphQLString: "_text"}
_SHAPE_HELPERS = {
    "__builtins__": {}, "_number": _shape_number, "_text": _shape_text, "_boolean": _shape_boolean,
    "_datetime": _shape_datetime, "_truncate": lambda v, grain: truncate(v, grain),
}


def _is_date(value: Any) -> bool:
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


def _moment(value: Any) -> Any:
    if _is_date(value):
        return dt.datetime(value.year, value.month, value.day)
    return value


# ---- building once per model -------------------------------------------------------------

# async (context, model, query, transform) -> transform(Result): runs the query and the
# transform off the event loop.
RunQuery = Callable[[Any, SemanticModel, SemanticQuery, Callable], Any]


def build_schema(model: SemanticModel, run: RunQuery) -> GraphQLSchema:
    """The GraphQL schema of `model`; resolvers await `run` to execute a query (see RunQuery)."""
    return _SchemaBuilder(model, run).build()


class SchemaCache:
    """The schema of the current model, built once per model object (models are immutable)."""

    def __init__(self, run: RunQuery, keep: int = 2):
        self._run = run
        self._keep = keep
        self._lock = threading.Lock()
        self._entries: list[tuple[SemanticModel, GraphQLSchema]] = []

    def get(self, model: SemanticModel) -> GraphQLSchema:
        for cached_model, schema in self._entries:
            if cached_model is model:
                return schema
        with self._lock:
            for cached_model, schema in self._entries:
                if cached_model is model:
                    return schema
            schema = build_schema(model, self._run)
            self._entries = [(model, schema)] + self._entries[: self._keep - 1]
            return schema
