"""Check a loaded model against the engine's catalog: every table, model SQL, column and type.

The YAML can be valid while the model cannot run: a column typo in a measure, a table that
does not exist, a `time:` column that is text, a filter comparing a text column with a
number. The engine would say so only at query time, in its own words and without file:line.
Here each problem is a ModelError at the YAML line that causes it, with the nearest real
names.

The checker (`schema_errors`) is pure logic over a `Catalog` (relation -> {column: kind});
`read_catalog` asks an engine for one, describing each model's source without reading rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from sqlglot import exp

from .errors import ModelError, did_you_mean, first_line  # noqa: F401 (first_line: for callers)
from .types import Model, SemanticModel, WrittenSql
from .errors import Location

if TYPE_CHECKING:
    from ..engines import Engine

# Aggregations that add or average their values: a text or time value cannot be summed.
_NUMERIC_AGGS = ("sum", "avg", "median", "percentile")
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


@dataclass
class Catalog:
    """What the engine holds, as far as the model reads it."""

    columns: dict[str, dict[str, str]] = field(default_factory=dict)  # relation -> column -> kind
    failures: dict[str, str] = field(default_factory=dict)  # relation -> why the engine cannot describe it
    relations: tuple[str, ...] = ()  # tables and views of the current schema, for did-you-mean
    quoted_case_matters: bool = True  # PostgreSQL: "Amount" is not amount; DuckDB: any case matches


def relation_key(source: exp.Expression) -> str:
    """The catalog key of a model's source: the table name, or the SELECT's SQL."""
    return source.sql()


def read_catalog(model: SemanticModel, engine: Engine) -> Catalog:
    """Describe every model source through `engine`. Raises EngineError when it cannot be reached."""
    from ..engines import EngineError

    catalog = Catalog(relations=tuple(engine.relation_names()),  # the first query: fails when unreachable
                      quoted_case_matters=engine.dialect != "duckdb")
    for m in model.models.values():
        key = relation_key(m.source)
        if key in catalog.columns or key in catalog.failures:
            continue
        try:
            catalog.columns[key] = engine.describe(m.source)
        except EngineError as e:
            catalog.failures[key] = first_line(e.message)
    return catalog


def check_schema(model: SemanticModel, engine: Engine) -> list[ModelError]:
    """Every schema problem of `model` on `engine`. Raises EngineError when it cannot be reached."""
    return schema_errors(model, read_catalog(model, engine))


def schema_errors(model: SemanticModel, catalog: Catalog) -> list[ModelError]:
    return _Checker(model, catalog).run()


class _Checker:
    def __init__(self, model: SemanticModel, catalog: Catalog):
        self.model = model
        self.catalog = catalog
        self.errors: list[ModelError] = []

    def error(self, location: Location, message: str) -> None:
        self.errors.append(ModelError(location, message))

    def run(self) -> list[ModelError]:
        for m in self.model.models.values():
            if self.source_ok(m):
                self.check_model_columns(m)
        for written in self.model.written:
            self.check_columns(written)
            self.check_comparisons(written)
        self.check_types()
        return self.errors

    # ---- sources and the columns of models -------------------------------------------

    def columns(self, m: Model) -> dict[str, str] | None:
        """The columns of a model's source; None when its source is already reported."""
        return self.catalog.columns.get(relation_key(m.source))

    def source_ok(self, m: Model) -> bool:
        key = relation_key(m.source)
        if key in self.catalog.columns:
            return True
        failure = self.catalog.failures.get(key, "the engine did not describe it")
        if isinstance(m.source, exp.Table):
            name = m.source.name
            if not any(r.casefold() == name.casefold() for r in self.catalog.relations):
                self.error(m.at("table"), f"model '{m.name}' table '{key}' does not exist on the engine{did_you_mean(name, self.catalog.relations, 'tables')}")
            else:
                self.error(m.at("table"), f"model '{m.name}' table '{key}' cannot be read: {failure}")
        else:
            self.error(m.at("sql"), f"model '{m.name}' sql fails on the engine: {failure}")
        return False

    def find(self, m: Model, name: str, quoted: bool = False) -> tuple[str | None, dict[str, str] | None]:
        """(the real column name or None, the model's columns or None when unknown)."""
        columns = self.columns(m)
        if columns is None:
            return None, None
        if name in columns:
            return name, columns
        if not quoted or not self.catalog.quoted_case_matters:  # unquoted names match any case
            return next((c for c in columns if c.casefold() == name.casefold()), None), columns
        return None, columns

    def require(self, m: Model, name: str, location: Location, what: str, quoted: bool = False) -> str | None:
        """The column's real name; reports it (with the nearest names) when the source lacks it."""
        real, columns = self.find(m, name, quoted)
        if real is None and columns is not None:
            self.error(location, f"{what}: no column '{name}' in {_relation(m)}{did_you_mean(name, columns, 'columns')}")
        return real

    def check_model_columns(self, m: Model) -> None:
        if m.dedupe is not None:
            for key in m.dedupe.key:
                self.require(m, key, m.at("dedupe.key"), f"dedupe of model '{m.name}' key")
            self.require(m, m.dedupe.by, m.at("dedupe.by"), f"dedupe of model '{m.name}' by")
        if m.time is not None and m.time not in m.dimensions and "time" in m.key_locations:  # not dedupe.by's stand-in
            real = self.require(m, m.time, m.at("time"), f"model '{m.name}' time '{m.time}'")
            kind = self.columns(m).get(real) if real else None
            if kind not in (None, "time", "other"):
                self.error(m.at("time"), f"model '{m.name}' time '{m.time}' is a {kind} column; name a timestamp or date column, or a time dimension that casts it")

    def check_columns(self, written: WrittenSql) -> None:
        for column, m in self.columns_of(written):
            if written.kind == "filter" and (column.name in m.dimensions or column.name in m.entities):
                continue  # a dimension or entity: checked where it is defined
            self.require(m, column.name, written.location, written.what, column.this.quoted)

    def columns_of(self, written: WrittenSql) -> Iterator[tuple[exp.Column, Model]]:
        """The columns the SQL reads, with the model each belongs to (others are the loader's to report)."""
        for column in written.expr.find_all(exp.Column):
            m = self.model.models.get(column.table or written.home or "")
            if m is not None and column.name:
                yield column, m

    # ---- types -------------------------------------------------------------------------

    def kind_of(self, expression: exp.Expression, home: str | None, resolve: bool) -> tuple[str | None, str]:
        """(kind or None when unknown, the column shown in messages) of a simple expression.

        `resolve`: the expression is a filter, whose dimension and entity names stand for
        their expressions.
        """
        while isinstance(expression, exp.Paren):
            expression = expression.this
        if isinstance(expression, (exp.Cast, exp.TryCast)):
            return _data_type_kind(expression.to), expression.sql()
        if not isinstance(expression, exp.Column):
            return None, expression.sql()
        m = self.model.models.get(expression.table or home or "")
        if m is None:
            return None, expression.sql()
        if resolve:
            element = m.dimensions.get(expression.name) or m.entities.get(expression.name)
            if element is not None:
                return self.kind_of(element.expr, m.name, False)[0], expression.sql()
        real, columns = self.find(m, expression.name, expression.this.quoted)
        return (columns.get(real) if real else None), expression.sql()

    def check_types(self) -> None:
        for written in self.model.written:
            if written.kind == "dimension":
                dimension = self.model.dimension(written.owner)
                kind, shown = self.kind_of(written.expr, written.home, False)
                if dimension is not None and dimension.type == "time" and kind not in (None, "time", "other"):
                    self.error(written.location, f"dimension '{written.owner}' has type time but '{shown}' is a {kind} column; "
                                                 f"use a timestamp or date column, or cast it in expr (e.g. CAST({shown} AS TIMESTAMP))")
            elif written.kind == "measure":
                measure = self.model.measure(written.owner)
                kind, shown = self.kind_of(written.expr, written.home, False)
                if measure is not None and measure.agg in _NUMERIC_AGGS and kind not in (None, "numeric", "other"):
                    self.error(written.location, f"measure '{written.owner}' agg {measure.agg} needs numbers but '{shown}' is a {kind} column; "
                                                 "use a numeric column, or agg count / count_distinct / min / max")

    def check_comparisons(self, written: WrittenSql) -> None:
        """`column op literal` (or IN a list of literals) where the types cannot be compared."""
        resolve = written.kind == "filter"
        for node in written.expr.find_all(*_COMPARISONS, exp.In):
            if isinstance(node, exp.In):
                pairs = [(node.this, value) for value in node.expressions]
            else:
                pairs = [(node.this, node.expression), (node.expression, node.this)]
            for side, literal in pairs:
                if not _is_literal(literal):
                    continue
                kind, shown = self.kind_of(side, written.home, resolve)
                problem = _mismatch(kind, literal)
                if problem:
                    self.error(written.location, f"{written.what} compares {kind} column '{shown}' with {problem}")
                    break


def _is_literal(node: exp.Expression) -> bool:
    if isinstance(node, exp.Neg):
        node = node.this
    return isinstance(node, exp.Literal)


def _mismatch(kind: str | None, literal: exp.Expression) -> str | None:
    """What is wrong with comparing a column of `kind` with `literal`, and the fix; None when fine."""
    text = literal.sql()
    value = literal.this if isinstance(literal, exp.Literal) else literal.this.this
    if isinstance(literal, exp.Literal) and literal.is_string:
        if kind == "numeric" and not _NUMBER.match(value):
            return f"the text {text}; compare it with a number"
        return None
    if kind == "text":
        return f"the number {text}; quote it ('{value}') to compare text"
    if kind == "time":
        return f"the number {text}; compare it with a timestamp such as '2026-01-01 00:00:00'"
    if kind == "boolean":
        return f"the number {text}; compare it with true or false"
    return None


_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


def _data_type_kind(data_type: exp.DataType) -> str | None:
    if data_type.is_type(*exp.DataType.NUMERIC_TYPES):
        return "numeric"
    if data_type.is_type(*exp.DataType.TEXT_TYPES):
        return "text"
    if data_type.is_type(*exp.DataType.TEMPORAL_TYPES):
        return "time"
    if data_type.is_type(exp.DataType.Type.BOOLEAN):
        return "boolean"
    return None


def _relation(m: Model) -> str:
    if isinstance(m.source, exp.Table):
        return f"table {m.source.sql()}"
    return f"the rows of model '{m.name}' sql"


# ---- engine errors at query time -> the YAML that caused them ---------------------------

_MISSING_COLUMN = (
    re.compile(r'column named "([^"]+)"'),  # DuckDB: Values list "x" does not have a column named "y"
    re.compile(r'Referenced column "([^"]+)" not found'),  # DuckDB
    re.compile(r'column (?:"?\w+"?\.)?"?([^"\s.]+)"? does not exist'),  # PostgreSQL
)
_MISSING_TABLE = (
    re.compile(r'Table with name "?([^"\s!]+)"? does not exist'),  # DuckDB
    re.compile(r'relation "([^"]+)" does not exist'),  # PostgreSQL
)


def engine_error_origin(model: SemanticModel, message: str) -> list[tuple[Location, str]]:
    """Where in the YAML a missing column or table of an engine error is written: (location, what)."""
    found: list[tuple[Location, str]] = []
    for pattern in _MISSING_COLUMN:
        match = pattern.search(message)
        if match:
            name = match.group(1).casefold()
            for written in model.written:
                if any(c.name.casefold() == name for c in written.expr.find_all(exp.Column)):
                    found.append((written.location, f"{written.what} reads column '{match.group(1)}'"))
            for m in model.models.values():
                if not isinstance(m.source, exp.Table) and any(c.name.casefold() == name for c in m.source.find_all(exp.Column)):
                    found.append((m.at("sql"), f"model '{m.name}' sql reads column '{match.group(1)}'"))
            break
    for pattern in _MISSING_TABLE:
        match = pattern.search(message)
        if match:
            name = match.group(1).split(".")[-1].casefold()
            for m in model.models.values():
                tables = [m.source] if isinstance(m.source, exp.Table) else list(m.source.find_all(exp.Table))
                if any(t.name.casefold() == name for t in tables):
                    key = "table" if isinstance(m.source, exp.Table) else "sql"
                    found.append((m.at(key), f"model '{m.name}' {key} reads table '{match.group(1)}'"))
            break
    return sorted(set(found), key=lambda item: (item[0].file, item[0].line))[:3]
