"""Load `metrics/*.yml` into a validated SemanticModel, reporting every error with file:line."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from . import classification
from .classification import CLASSIFICATION_KEYS
from .monitor_specs import load_monitor
from .errors import ModelError, ValidationFailed, did_you_mean
from .joins import JoinError, join_path
from .types import (
    AGGREGATIONS, DIMENSION_TYPES, ENTITY_TYPES, FORMATS, METRIC_TYPES,
    Dedupe, Dimension, Entity, Interval, Materialization, Measure, MeasureInput, Metric, Model, SemanticModel, View,
    WrittenSql, parse_interval, qualify,
)
from ..query import GRAINS
from .files import display_path as _display_path, yaml_files  # noqa: F401 (yaml_files: serve/reload.py)
from .yaml_source import Location, Node, Seq, YamlSyntaxError, load_yaml_file

TOP_LEVEL_KEYS = ("models", "metrics", "views", "materializations", "monitors")
MODEL_KEYS = ("name", "description", "table", "sql", "entities", "dimensions", "measures", "time", "dedupe")
ENTITY_KEYS = ("name", "type", "expr", "description")
DIMENSION_KEYS = ("name", "type", "expr", "description", "label")
MEASURE_KEYS = ("name", "agg", "expr", "filter", "percentile", "description", "label", "fill_nulls_with")
DEDUPE_KEYS = ("key", "keep", "by")
METRIC_KEYS = (
    "name", "type", "description", "label", "format", "measure", "filter",
    "numerator", "denominator", "expr", "window", "label_delay", "fill_nulls_with",
)
MEASURE_INPUT_KEYS = ("measure", "filter")
VIEW_KEYS = ("name", "description", "metrics", "dimensions", "count", "entity")
MATERIALIZATION_KEYS = ("name", "description", "metrics", "dimensions", "refresh", "retention")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _sql_problem(error: Exception) -> str:
    """What sqlglot found wrong, in one line."""
    if isinstance(error, RecursionError):
        return "it is nested too deeply"
    if isinstance(error, sqlglot.errors.ParseError) and error.errors:
        first = error.errors[0]
        description = first["description"]
        if description.startswith("Required keyword"):  # names a sqlglot class; say what it means
            description = "an operand is missing"
        near = first.get("highlight")
        return f"{description} near {near!r} (column {first['col']})" if near else description
    if isinstance(error, sqlglot.errors.TokenError):
        return "cannot split it into SQL tokens (an unclosed quote?)"
    return str(error)


def _kind(value: Any) -> str:
    """A YAML value's kind, as a user would call it."""
    if isinstance(value, Node):
        return "a mapping"
    if isinstance(value, Seq):
        return "a list"
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


class _Loader:
    def __init__(self) -> None:
        self.errors: list[ModelError] = []
        self.models: dict[str, Model] = {}
        self.metrics: dict[str, Metric] = {}
        self.views: dict[str, View] = {}
        self.materializations: dict[str, Materialization] = {}
        # Declared but invalid (already reported): referring to them is not a second error.
        self.rejected: set[str] = set()  # model.dimension, model.measure
        self.unjoinable: set[str] = set()  # models with a broken entity or dedupe
        self.written: list[WrittenSql] = []  # SQL as written, for the schema check
        # Measures of a `measures:` block outside a model (reported once): a metric naming one
        # as model.measure is not a second error.
        self.misplaced: set[str] = set()

    def remember(self, what: str, kind: str, owner: str, expr: exp.Expression, home: str | None, location: Location) -> None:
        self.written.append(WrittenSql(what, kind, owner, expr.copy(), home, location))

    def error(self, location: Location, message: str) -> None:
        self.errors.append(ModelError(location, message))

    # ---- generic field checks -------------------------------------------------------

    def mapping(self, value: Any, location: Location, what: str, allowed: tuple[str, ...]) -> Node | None:
        if not isinstance(value, Node):
            self.error(location, f"{what} must be a mapping with keys: {', '.join(allowed)}")
            return None
        if what in ("model", "metric", "view") and isinstance(value.get("name"), str):
            what = f"{what} '{value['name']}'"
        for key in value:
            if key == "measures" and key not in allowed:
                self.misplaced_measures(value, what)
            elif key not in allowed:
                self.error(value.at(key), f"unknown key '{key}' in {what}{did_you_mean(key, allowed, 'valid keys')}")
        return value

    def misplaced_measures(self, node: Node, what: str) -> None:
        """A `measures:` block anywhere but in a model: one error for the cause, none for its effects."""
        block = node["measures"]
        for item in block if isinstance(block, Seq) else []:
            if isinstance(item, Node) and isinstance(item.get("name"), str):
                self.misplaced.add(item["name"])
        hint = "; a metric names one measure with measure: model.measure" if what.startswith("metric") else ""
        where = "at the top level of the file" if what.startswith("file ") else f"in {what}"
        self.error(node.at("measures"), f"'measures' {where}: measures belong to a model; move this block under "
                                        f"the model whose rows they count (as its measures:, beside its dimensions:){hint}")

    def is_misplaced(self, ref: str) -> bool:
        """True for model.measure naming a measure of a misplaced `measures:` block (already reported)."""
        return ref.partition(".")[2] in self.misplaced and ref not in self.all_measures()

    def name_of(self, node: Node, what: str) -> str | None:
        name = node.get("name")
        if name is None:
            self.error(node.location, f"{what} has no 'name'")
            return None
        if not isinstance(name, str) or not _NAME.match(name):
            self.error(node.at("name"), f"{what} name {name!r} is not valid: use letters, digits and _, not starting with a digit")
            return None
        return name

    def text(self, node: Node, key: str, what: str) -> str | None:
        value = node.get(key)
        if value is None:
            return None
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.error(node.at(key), f"{what} '{key}' must be text, got {_kind(value)}")
            return None
        return str(value)

    def choice(self, node: Node, key: str, what: str, allowed: tuple[str, ...], default: str | None) -> str | None:
        value = node.get(key, default)
        if value is None:
            return None
        if value not in allowed:
            self.error(node.at(key), f"{what} has {key} '{value}'{did_you_mean(str(value), allowed, 'valid values')}")
            return None
        return value

    def sql(self, text: Any, location: Location, what: str) -> exp.Expression | None:
        if text is None:
            return None
        if not isinstance(text, (str, int, float)) or isinstance(text, bool):
            self.error(location, f"{what} must be a SQL expression written as text")
            return None
        try:
            parsed = _without_positions(sqlglot.parse_one(str(text)))
        except (sqlglot.errors.SqlglotError, RecursionError) as e:
            self.error(location, f"{what} is not valid SQL: {_sql_problem(e)} in {str(text).strip()!r}")
            return None
        if isinstance(parsed, (exp.Select, exp.Union, exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop)):
            self.error(location, f"{what} must be an expression, not a statement: {str(text).strip()!r}")
            return None
        if isinstance(parsed, exp.Alias):  # `a b` parses as `a AS b`: almost always a missing operator
            self.error(location, f"{what} is not valid SQL: an operator is missing between {parsed.this.sql()!r} and {parsed.alias!r} in {str(text).strip()!r}")
            return None
        return parsed

    def items(self, value: Any, location: Location, what: str) -> list[tuple[Any, Location]]:
        if value is None:
            return []
        if not isinstance(value, Seq):
            self.error(location, f"{what} must be a list")
            return []
        return list(zip(value, value.item_locations))

    def fill_value(self, node: Node, what: str) -> int | float | None:
        """`fill_nulls_with`: a finite number, or None when absent."""
        value = node.get("fill_nulls_with")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
            self.error(node.at("fill_nulls_with"), f"{what}: fill_nulls_with needs a number (e.g. 0), got {value!r}")
            return None
        return value

    def interval(self, node: Node, key: str, what: str) -> Interval | None:
        if key not in node:
            return None
        value = parse_interval(node[key])
        if value is None:
            self.error(node.at(key), f"{what} {key} {node[key]!r} is not a duration; write e.g. '3 hours', '30 minutes', '1 day' (units: second, minute, hour, day, week)")
        return value

    # ---- models ---------------------------------------------------------------------

    def load_model(self, raw: Any, location: Location) -> None:
        node = self.mapping(raw, location, "model", MODEL_KEYS)
        if node is None:
            return
        name = self.name_of(node, "model")
        if name is None:
            return
        if name in self.models:
            self.error(node.at("name"), f"duplicate model '{name}' (first defined at {self.models[name].location})")
            return
        source = self.model_source(node, name)
        errors_before = len(self.errors)
        entities = self.entities(node, name)
        dedupe = self.dedupe(node, name)
        if len(self.errors) > errors_before:
            self.unjoinable.add(name)
        dimensions = self.dimensions(node, name)
        time_name = self.text(node, "time", f"model '{name}'")
        time_expr = None
        if time_name is not None:
            dim = dimensions.get(time_name)
            if dim is not None and dim.type != "time":
                self.error(node.at("time"), f"model '{name}' time '{time_name}' names a {dim.type} dimension; declare it with type: time")
            time_expr = qualify(dim.expr if dim else exp.column(time_name), name)
        elif dedupe is not None:
            time_name, time_expr = dedupe.by, qualify(exp.column(dedupe.by), name)
        key_locations = {key: node.at(key) for key in ("table", "sql", "time") if key in node}
        if isinstance(node.get("dedupe"), Node):
            key_locations.update({f"dedupe.{key}": node["dedupe"].at(key) for key in ("key", "by")})
        self.models[name] = Model(
            name=name, source=source, entities=entities, dimensions=dimensions, measures={},
            time=time_name, time_expr=time_expr, dedupe=dedupe,
            description=self.text(node, "description", f"model '{name}'"), location=node.location,
            key_locations=key_locations,
        )
        self.pending_measures.append((name, node))

    def model_source(self, node: Node, name: str) -> exp.Expression:
        table, sql = node.get("table"), node.get("sql")
        if table is None and sql is None:
            self.error(node.location, f"model '{name}' needs its rows: table (a table or view name) or sql (a SELECT)")
            return exp.to_table(name)
        if table is not None and sql is not None:
            self.error(node.at("sql"), f"model '{name}' has both table and sql; keep one: table (a table or view name) or sql (a SELECT)")
            return exp.to_table(name)
        if table is not None:
            if isinstance(table, str) and table.strip():
                try:
                    return _without_positions(exp.to_table(table))
                except sqlglot.errors.SqlglotError:
                    pass
            self.error(node.at("table"), f"model '{name}' table must be a table name such as orders or schema.orders, got {_kind(table)}")
            return exp.to_table(name)
        try:
            parsed = _without_positions(sqlglot.parse_one(str(sql)))
        except (sqlglot.errors.SqlglotError, RecursionError) as e:
            self.error(node.at("sql"), f"model '{name}' sql is not valid SQL: {_sql_problem(e)}")
            return exp.to_table(name)
        if not isinstance(parsed, (exp.Select, exp.Union)):
            self.error(node.at("sql"), f"model '{name}' sql must be a SELECT query")
            return exp.to_table(name)
        return parsed

    def entities(self, node: Node, model: str) -> dict[str, Entity]:
        result: dict[str, Entity] = {}
        for raw, location in self.items(node.get("entities"), node.at("entities"), f"model '{model}' entities"):
            ent = self.mapping(raw, location, f"entity of model '{model}'", ENTITY_KEYS)
            name = ent is not None and self.name_of(ent, f"entity of model '{model}'")
            if not name:
                continue
            if name in result:
                self.error(ent.at("name"), f"duplicate entity '{name}' in model '{model}' (first at {result[name].location})")
                continue
            if "type" not in ent:
                self.error(ent.location, f"entity '{name}' of model '{model}' needs a type: {', '.join(ENTITY_TYPES)}")
                continue
            kind = self.choice(ent, "type", f"entity '{name}' of model '{model}'", ENTITY_TYPES, None)
            expr = self.sql(ent.get("expr", name), ent.at("expr"), f"entity '{name}' expr")
            if kind and expr is not None:
                result[name] = Entity(name, kind, expr, ent.location)
                self.remember(f"entity '{name}' of model '{model}' expr", "entity", f"{model}.{name}", expr, model, ent.at("expr"))
        return result

    def dimensions(self, node: Node, model: str) -> dict[str, Dimension]:
        result: dict[str, Dimension] = {}
        for raw, location in self.items(node.get("dimensions"), node.at("dimensions"), f"model '{model}' dimensions"):
            dim = self.mapping(raw, location, f"dimension of model '{model}'", DIMENSION_KEYS)
            name = dim is not None and self.name_of(dim, f"dimension of model '{model}'")
            if not name:
                continue
            if name in result:
                self.error(dim.at("name"), f"duplicate dimension '{name}' in model '{model}' (first at {result[name].location})")
                continue
            kind = self.choice(dim, "type", f"dimension '{model}.{name}'", DIMENSION_TYPES, "categorical")
            expr = self.sql(dim.get("expr", name), dim.at("expr"), f"dimension '{model}.{name}' expr")
            if kind and expr is not None:
                result[name] = Dimension(
                    name, model, kind, expr, self.text(dim, "description", "dimension"), dim.location
                )
                self.remember(f"dimension '{model}.{name}' expr", "dimension", f"{model}.{name}", expr, model, dim.at("expr"))
            else:
                self.rejected.add(f"{model}.{name}")
        return result

    def dedupe(self, node: Node, model: str) -> Dedupe | None:
        if "dedupe" not in node:
            return None
        raw = self.mapping(node["dedupe"], node.at("dedupe"), f"dedupe of model '{model}'", DEDUPE_KEYS)
        if raw is None:
            return None
        key = raw.get("key")
        keys = [key] if isinstance(key, str) else list(key) if isinstance(key, Seq) else None
        if not keys or not all(isinstance(k, str) and k for k in keys):
            self.error(raw.at("key"), f"dedupe of model '{model}' needs key: a column or a list of columns")
            return None
        keep = self.choice(raw, "keep", f"dedupe of model '{model}'", ("latest", "earliest"), "latest")
        by = raw.get("by")
        if not isinstance(by, str) or not by:
            self.error(raw.location, f"dedupe of model '{model}' needs by: the column that orders duplicates (e.g. a timestamp)")
            return None
        return Dedupe(tuple(keys), keep, by) if keep else None

    def load_measures(self, model_name: str, node: Node) -> None:
        model = self.models[model_name]
        for raw, location in self.items(node.get("measures"), node.at("measures"), f"model '{model_name}' measures"):
            mea = self.mapping(raw, location, f"measure of model '{model_name}'", MEASURE_KEYS)
            name = mea is not None and self.name_of(mea, f"measure of model '{model_name}'")
            if not name:
                continue
            if name in model.measures:
                self.error(mea.at("name"), f"duplicate measure '{name}' in model '{model_name}' (first at {model.measures[name].location})")
                continue
            what = f"measure '{model_name}.{name}'"
            self.rejected.add(f"{model_name}.{name}")  # until it is known to be valid
            if "agg" not in mea:
                self.error(mea.location, f"{what} needs agg: {', '.join(AGGREGATIONS)}")
                continue
            agg = self.choice(mea, "agg", what, AGGREGATIONS, None)
            default_expr = None if agg == "count" else name
            expr = self.sql(mea.get("expr", default_expr), mea.at("expr"), f"{what} expr")
            percentile = mea.get("percentile")
            if agg == "percentile":
                if not isinstance(percentile, (int, float)) or isinstance(percentile, bool) or not 0 < percentile < 1:
                    self.error(mea.at("percentile") if "percentile" in mea else mea.location,
                               f"{what} with agg percentile needs percentile: a number between 0 and 1 (e.g. 0.95)")
                    continue
            elif percentile is not None and agg is not None:
                self.error(mea.at("percentile"), f"{what}: percentile is only valid with agg: percentile")
            if agg is None:
                continue
            value = qualify(expr, model_name) if expr is not None else exp.Literal.number(1)
            condition, models = self.row_filter(mea.get("filter"), mea.at("filter"), f"{what} filter", model_name)
            self.rejected.discard(f"{model_name}.{name}")
            if expr is not None:
                self.remember(f"{what} expr", "measure", f"{model_name}.{name}", expr, model_name, mea.at("expr"))
            model.measures[name] = Measure(
                name=name, model=model_name, agg=agg, expr=value, filter=condition,
                filter_models=models, percentile=float(percentile) if agg == "percentile" else None,
                description=self.text(mea, "description", what), location=mea.location,
                fill_nulls_with=self.fill_value(mea, what),
            )

    # ---- references inside SQL ------------------------------------------------------

    def row_filter(self, text: Any, location: Location, what: str, home: str | None) -> tuple[exp.Expression | None, frozenset[str]]:
        """Parse a filter over model.column references; resolve dimensions and check reach.

        `home` is the model whose rows are filtered (a measure's model); unqualified columns
        belong to it. Metric filters have no home and must qualify every column.
        """
        parsed = self.sql(text, location, what)
        if parsed is None:
            return None, frozenset()
        self.remember(what, "filter", "", parsed, home, location)
        models: set[str] = set()
        for column in list(parsed.find_all(exp.Column)):
            table = column.table
            if not table:
                if home is None:
                    self.error(location, f"{what}: column '{column.name}' needs its model, as model.column")
                    continue
                table = home
            model = self.models.get(table)
            if model is None:
                self.error(location, f"{what}: unknown model '{table}'{did_you_mean(table, self.models, 'models')}")
                continue
            models.add(table)
            resolved = self.resolve_column(model, column.name)
            if column is parsed:  # the whole filter is one boolean column: replace() has no parent to edit
                parsed = resolved
            else:
                column.replace(resolved)
        return parsed, frozenset(models - {home})

    @staticmethod
    def resolve_column(model: Model, name: str) -> exp.Expression:
        if name in model.dimensions:
            return qualify(model.dimensions[name].expr, model.name)
        if name in model.entities:
            return qualify(model.entities[name].expr, model.name)
        return exp.column(name, table=exp.to_identifier(model.name, quoted=True))

    def check_reach(self, base: str, models, location: Location, what: str) -> None:
        for target in sorted(models):
            if target == base or target not in self.models or {base, target} & self.unjoinable:
                continue  # an unknown model or a broken entity/dedupe is reported where it is written
            try:
                join_path(self.models, base, target)
            except JoinError as e:
                self.error(location, f"{what} uses model '{target}': {e}")

    # ---- metrics --------------------------------------------------------------------

    def measure_ref(self, text: Any, location: Location, what: str) -> str | None:
        if text is None:
            self.error(location, f"{what} is missing: name a measure as model.measure{did_you_mean('', self.all_measures(), 'measures')}")
            return None
        if not isinstance(text, str) or "." not in text:
            self.error(location, f"{what} must name a measure as model.measure, got {text!r}{did_you_mean(str(text), self.all_measures(), 'measures')}")
            return None
        if text in self.rejected or self.is_misplaced(text):
            return None
        if text not in self.all_measures():
            self.error(location, f"{what}: unknown measure '{text}'{did_you_mean(text, self.all_measures(), 'measures')}")
            return None
        return text

    def all_measures(self) -> list[str]:
        return [m.qualified_name for model in self.models.values() for m in model.measures.values()]

    def measure_input(self, raw: Any, location: Location, what: str, extra_filter: Any, filter_location: Location) -> MeasureInput | None:
        if isinstance(raw, Node):
            node = self.mapping(raw, location, what, MEASURE_INPUT_KEYS)
            ref = self.measure_ref(node.get("measure"), node.at("measure"), f"{what} measure")
            filters = [(node.get("filter"), node.at("filter")), (extra_filter, filter_location)]
        else:
            ref = self.measure_ref(raw, location, what)
            filters = [(extra_filter, filter_location)]
        if ref is None:
            return None
        home = ref.split(".")[0]
        conditions, models = [], set()
        for text, loc in filters:
            if text is None:
                continue
            condition, used = self.row_filter(text, loc, f"{what} filter", home)
            if condition is None:
                continue
            self.check_reach(home, used, loc, f"{what} filter")
            conditions.append(condition)
            models |= used
        condition = exp.and_(*conditions) if len(conditions) > 1 else (conditions[0] if conditions else None)
        return MeasureInput(ref, condition, frozenset(models))

    def load_metric(self, raw: Any, location: Location) -> None:
        if isinstance(raw, Node) and raw.get("type") == "classification":
            node = self.mapping(raw, location, "metric", CLASSIFICATION_KEYS)
            name = self.name_of(node, "metric")
            if name and any(m == name or m.startswith(f"{name}.") for m in self.metrics):
                self.error(node.at("name"), f"duplicate metric '{name}'")
            elif name:
                classification.expand(self, node, name)
            return
        node = self.mapping(raw, location, "metric", METRIC_KEYS)
        name = node is not None and self.name_of(node, "metric")
        if not name:
            return
        if name in self.metrics:
            self.error(node.at("name"), f"duplicate metric '{name}' (first defined at {self.metrics[name].location})")
            return
        what = f"metric '{name}'"
        inferred = "derived" if "expr" in node else "ratio" if "numerator" in node else "simple"
        kind = self.choice(node, "type", what, METRIC_TYPES + ("classification",), inferred)
        inputs: dict[str, MeasureInput] = {}
        expr = None
        depends: tuple[str, ...] = ()
        if kind == "simple":
            if "measure" not in node:
                self.error(node.location, f"{what} of type simple needs measure: model.measure")
            else:
                inp = self.measure_input(node["measure"], node.at("measure"), what, node.get("filter"), node.at("filter"))
                if inp:
                    inputs["measure"] = inp
        elif kind == "ratio":
            for part in ("numerator", "denominator"):
                if part not in node:
                    self.error(node.location, f"{what} of type ratio needs {part}: model.measure or {{measure, filter}}")
                    continue
                inp = self.measure_input(node[part], node.at(part), f"{what} {part}", node.get("filter"), node.at("filter"))
                if inp:
                    inputs[part] = inp
        elif kind == "derived":
            expr = self.sql(node.get("expr"), node.at("expr"), f"{what} expr")
            if expr is None and "expr" not in node:
                self.error(node.location, f"{what} of type derived needs expr over other metrics and model.measure names")
        fmt = self.choice(node, "format", what, FORMATS, None)
        window = self.interval(node, "window", what)
        delay = self.interval(node, "label_delay", what)
        if delay and not window:
            self.error(node.at("label_delay"), f"{what}: label_delay needs a window (it shifts the trailing window back)")
        if window:
            for inp in inputs.values():
                model = self.models.get(inp.measure.split(".")[0])
                if model and model.time_expr is None:
                    self.error(node.at("window"), f"{what} has a window but model '{model.name}' has no time; add `time: <timestamp column>` to model '{model.name}'")
        self.metrics[name] = Metric(
            name=name, type=kind or inferred, description=self.text(node, "description", what),
            label=self.text(node, "label", what), format=fmt, inputs=inputs, expr=expr,
            window=window, label_delay=delay, location=node.location, depends_on=depends,
            fill_nulls_with=self.fill_value(node, what),
            expr_location=node.at("expr"),
        )

    def resolve_derived(self) -> None:
        for name, metric in list(self.metrics.items()):
            if metric.type != "derived" or metric.expr is None:
                continue
            depends = []
            for column in metric.expr.find_all(exp.Column):
                if column.table:
                    ref = f"{column.table}.{column.name}"
                    if ref not in self.all_measures() and ref not in self.rejected and not self.is_misplaced(ref):
                        self.error(metric.expr_location, f"metric '{name}' expr: unknown measure '{ref}'{did_you_mean(ref, self.all_measures(), 'measures')}")
                elif column.name in self.metrics:
                    depends.append(column.name)
                else:
                    self.error(metric.expr_location, f"metric '{name}' expr: unknown metric '{column.name}'{did_you_mean(column.name, self.metrics, 'metrics')} (measures are written model.measure)")
            self.metrics[name] = replace(metric, depends_on=tuple(dict.fromkeys(depends)))
        self.check_cycles()
        self.check_derived_windows()

    def check_derived_windows(self) -> None:
        """A derived metric's window applies to every measure under it: their models need time."""
        for name, metric in self.metrics.items():
            if metric.type != "derived" or metric.window is None:
                continue
            for model_name in sorted(self.measure_models(name, set())):
                model = self.models.get(model_name)
                if model is not None and model.time_expr is None:
                    self.error(metric.location, f"metric '{name}' has a window but model '{model_name}' (used in its expr) has no time; add `time: <timestamp column>` to model '{model_name}'")

    def measure_models(self, name: str, seen: set[str]) -> set[str]:
        """Models of every measure a metric reads, through derived metrics too."""
        if name in seen or name not in self.metrics:
            return set()
        seen.add(name)
        metric = self.metrics[name]
        models = {inp.measure.split(".")[0] for inp in metric.inputs.values()}
        if metric.expr is not None:
            models |= {c.table for c in metric.expr.find_all(exp.Column) if c.table}
        for dep in metric.depends_on:
            models |= self.measure_models(dep, seen)
        return models

    def check_cycles(self) -> None:
        state: dict[str, int] = {}  # 1 visiting, 2 done

        def visit(name: str, trail: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = trail[trail.index(name):] + [name]
                self.error(self.metrics[name].location, f"metric '{name}' depends on itself: {' -> '.join(cycle)}")
                return
            state[name] = 1
            for dep in self.metrics[name].depends_on:
                visit(dep, trail + [name])
            state[name] = 2

        for name in self.metrics:
            visit(name, [])

    # ---- views ----------------------------------------------------------------------

    def load_view(self, raw: Any, location: Location) -> None:
        node = self.mapping(raw, location, "view", VIEW_KEYS)
        name = node is not None and self.name_of(node, "view")
        if not name:
            return
        if name in self.views or name in self.models:
            self.error(node.at("name"), f"duplicate view '{name}' (views and models share one namespace)")
            return
        metric_names = [m for model in self.models.values() for m in (x.qualified_name for x in model.measures.values())] + list(self.metrics)
        dimension_names = [d.qualified_name for model in self.models.values() for d in model.dimensions.values()]
        metrics = self.names_from(node, "metrics", metric_names, f"view '{name}'", "metric")
        dimensions = self.names_from(node, "dimensions", dimension_names, f"view '{name}'", "dimension")
        if not metrics and not dimensions:
            self.error(node.location, f"view '{name}' needs metrics and/or dimensions")
        count = self.view_count(node, name, metrics)
        entity = self.view_entity(node, name, metrics)
        self.views[name] = View(name, self.text(node, "description", f"view '{name}'"), tuple(metrics), tuple(dimensions),
                                node.location, count, entity)

    def view_entity(self, node: Node, view: str, metrics: list[str]) -> str | None:
        """`entity: model.entity`: what an online lookup of the view's metrics is keyed by
        (GET /api/features/{view}?key=...); the model must have that entity, and so must the base
        model of every measure the view's metrics aggregate."""
        value = node.get("entity")
        if value is None:
            return None
        model_name, dot, entity = value.partition(".") if isinstance(value, str) else ("", "", "")
        found = self.models.get(model_name)
        if not dot or found is None or entity not in found.entities:
            known = [f"{m.name}.{e}" for m in self.models.values() for e in m.entities]
            self.error(node.at("entity"), f"view '{view}' entity: {value!r} is not an entity; write model.entity, one of "
                                          f"{', '.join(known) or '(none: declare entities on a model)'}")
            return None
        for metric in metrics:
            for base in sorted(self.base_models(metric)):
                if entity not in self.models[base].entities:
                    self.error(node.at("entity"), f"view '{view}' entity: metric '{metric}' aggregates model '{base}', "
                                                  f"which has no entity '{entity}' (its entities: "
                                                  f"{', '.join(self.models[base].entities) or '(none)'}); "
                                                  "keep in a keyed view only metrics of models with that entity")
        return f"{model_name}.{entity}"

    def base_models(self, name: str, trail: tuple = ()) -> set[str]:
        """The models whose rows a metric (or model.measure) aggregates."""
        if name in trail:
            return set()
        metric = self.metrics.get(name)
        if metric is None:
            model_name = name.partition(".")[0]
            return {model_name} if model_name in self.models else set()
        found = {i.measure.partition(".")[0] for i in metric.inputs.values()} if metric.inputs else set()
        if metric.expr is not None:  # derived: model.measure references and other metrics
            for column in metric.expr.find_all(exp.Column):
                found |= {column.table} if column.table else self.base_models(column.name, trail + (name,))
        return {m for m in found if m in self.models}

    def view_count(self, node: Node, view: str, metrics: list[str]) -> str | None:
        """`count: model.measure`: the count measure COUNT(*) over the view means (SQL door)."""
        value = node.get("count")
        if value is None:
            return None
        measure = self.models[value.partition(".")[0]].measures.get(value.partition(".")[2]) \
            if isinstance(value, str) and value.partition(".")[0] in self.models else None
        if measure is None or measure.agg not in ("count", "count_distinct"):
            counts = [m.qualified_name for model in self.models.values() for m in model.measures.values()
                      if m.agg in ("count", "count_distinct") and m.filter is None]
            self.error(node.at("count"), f"view '{view}' count: {value!r} is not a count measure; name one of "
                                         f"{', '.join(counts) or '(none: add a measure with agg: count)'}")
            return None
        if measure.filter is not None:
            self.error(node.at("count"), f"view '{view}' count: '{value}' has a filter, so it does not count every row; "
                                         "name a count measure without a filter")
            return None
        return value

    def load_materialization(self, raw: Any, location: Location) -> None:
        node = self.mapping(raw, location, "materialization", MATERIALIZATION_KEYS)
        name = node is not None and self.name_of(node, "materialization")
        if not name:
            return
        what = f"materialization '{name}'"
        if name in self.materializations:
            self.error(node.at("name"), f"duplicate {what} (first at {self.materializations[name].location})")
            return
        metric_names = [m for model in self.models.values() for m in (x.qualified_name for x in model.measures.values())] + list(self.metrics)
        metrics = self.names_from(node, "metrics", metric_names, what, "metric")
        if not metrics:
            self.error(node.location, f"{what} needs metrics: the metrics (or model.measure names) it stores")
        dimensions = []
        dimension_names = [d.qualified_name for model in self.models.values() for d in model.dimensions.values()]
        for value, at in self.items(node.get("dimensions"), node.at("dimensions"), f"{what} dimensions"):
            dim_name, _, grain = str(value).partition(":")
            if dim_name not in dimension_names:
                self.error(at, f"{what}: unknown dimension '{dim_name}'{did_you_mean(dim_name, dimension_names, 'dimensions')}")
                continue
            dimension = self.models[dim_name.split(".")[0]].dimensions[dim_name.split(".")[1]]
            if grain and (grain not in GRAINS or dimension.type != "time"):
                valid = f"one of {', '.join(GRAINS)}" if dimension.type == "time" else f"none: '{dim_name}' is {dimension.type}"
                self.error(at, f"{what}: grain '{grain}' of '{dim_name}' is not valid; grains: {valid}")
                continue
            dimensions.append((dim_name, grain or None))
        retention = self.interval(node, "retention", what)
        if retention is not None:
            timed = [(d, g) for d, g in dimensions if g and self.models[d.split(".")[0]].dimensions[d.split(".")[1]].type == "time"]
            if not timed:
                self.error(node.at("retention"), f"{what}: retention keeps the newest buckets of a time dimension, so it "
                                                 "needs one with a grain among its dimensions (e.g. leads.created_at:hour)")
                return
            retention = (timed[0], retention)
        self.materializations[name] = Materialization(
            name, self.text(node, "description", what), tuple(metrics), tuple(dimensions),
            self.interval(node, "refresh", what), node.location, retention)

    def names_from(self, node: Node, key: str, valid: list[str], what: str, kind: str) -> list[str]:
        names = []
        for value, location in self.items(node.get(key), node.at(key), f"{what} {key}"):
            if isinstance(value, str) and (value in self.rejected or (kind == "metric" and self.is_misplaced(value))):
                continue
            if value not in valid:
                self.error(location, f"{what}: unknown {kind} '{value}'{did_you_mean(str(value), valid, kind + 's')}")
            else:
                names.append(value)
        return names

    # ---- whole project --------------------------------------------------------------

    def load(self, files: list[tuple[Path, str]]) -> SemanticModel:
        documents = []
        for path, display in files:
            try:
                root = load_yaml_file(path, display)
            except YamlSyntaxError as e:
                self.error(e.location, e.message)
                continue
            if root is None:
                continue
            doc = self.mapping(root, Location(display, 1), f"file {display}", TOP_LEVEL_KEYS)
            if doc is not None:
                documents.append(doc)
        self.pending_measures: list[tuple[str, Node]] = []
        for doc in documents:
            for raw, location in self.items(doc.get("models"), doc.at("models"), "models"):
                self.load_model(raw, location)
        for model_name, node in self.pending_measures:
            self.load_measures(model_name, node)
        for name, model in self.models.items():
            for measure in model.measures.values():
                self.check_reach(name, measure.filter_models, measure.location, f"measure '{measure.qualified_name}' filter")
        for doc in documents:
            for raw, location in self.items(doc.get("metrics"), doc.at("metrics"), "metrics"):
                self.load_metric(raw, location)
        self.resolve_derived()
        for doc in documents:
            for raw, location in self.items(doc.get("views"), doc.at("views"), "views"):
                self.load_view(raw, location)
        for doc in documents:
            for raw, location in self.items(doc.get("materializations"), doc.at("materializations"), "materializations"):
                self.load_materialization(raw, location)
        monitors: dict = {}
        for doc in documents:
            for raw, location in self.items(doc.get("monitors"), doc.at("monitors"), "monitors"):
                load_monitor(self, raw, location, monitors)
        if self.errors:
            raise ValidationFailed(self.errors)
        return SemanticModel(self.models, self.metrics, self.views, tuple(display for _, display in files),
                             self.materializations, tuple(self.written), monitors=monitors)


def load_model(directory: str | Path) -> SemanticModel:
    """Load and validate every YAML file under `directory`. Raises ValidationFailed."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValidationFailed([ModelError(Location(str(directory), 1), "no such folder of YAML files")])
    files = yaml_files(directory)
    if not files:
        raise ValidationFailed([ModelError(Location(str(directory), 1), "no .yml or .yaml files here")])
    shown = [(p, _display_path(p)) for p in files]
    return _Loader().load(shown)


def _without_positions(parsed: exp.Expression) -> exp.Expression:
    """Drop the parser's token positions (`meta`: line, col) from every node.

    Nothing reads them once parsed (errors point at YAML locations), and every copy of a model
    expression the compiler makes would deep-copy each node's position dict through Python's
    copy module: a third of a cold compile."""
    for node in parsed.walk():
        node._meta = None
    return parsed
