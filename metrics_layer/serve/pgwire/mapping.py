"""Semantic SQL: a client's SELECT over a public view, mapped exactly onto one SemanticQuery.

The accepted shape (each part optional except SELECT and FROM):

    SELECT [DISTINCT] <dimensions and metrics> FROM [public.]<view> [AS alias]
    [WHERE <filters>] [GROUP BY <dimensions>] [HAVING <filters>]
    [ORDER BY <columns>] [LIMIT n] [OFFSET n]

* A dimension column is grouped by; `date_trunc('hour', created_at)` asks for it at a grain and
  `CAST(created_at AS DATE)` / `created_at::date` at day grain (values are dates).
* A metric column is written bare, as `MEASURE(m)`, or in the aggregate that matches its
  definition: SUM for sum measures, COUNT for count and count_distinct (COUNT(DISTINCT x) for
  count_distinct), MIN, MAX, AVG for those. Anything else (SUM(accuracy)) is refused.
* GROUP BY is optional; when present it must list exactly the dimension columns selected (by
  name, alias, position or expression). A query with dimensions only returns their distinct
  combinations.
* WHERE and HAVING: an AND of `col op value` with =, <>, !=, <, <=, >, >=, IN, NOT IN, BETWEEN,
  IS [NOT] NULL, LIKE 'abc%' (starts with), LIKE '%abc%' (contains); an OR of equalities on one
  column is an IN. A condition on a metric filters the aggregated rows.
* Wrappers tools put around a query: `SELECT * FROM (<query>) t [LIMIT n] [OFFSET n]` and
  `SELECT count(*) FROM (<query>) t`.
* A series limit (Superset's "top N series"): `<query> JOIN (SELECT d AS d__, ..., <metric>
  FROM <the same view> [WHERE ...] GROUP BY d, ... ORDER BY <metric> [DESC] LIMIT n) AS s
  ON d = d__ [AND ...]` keeps the groups whose d.. are among the subquery's top n: a
  `TopGroups` restriction (query.py), see `_series_limited`.

Anything else is refused with QueryError (SQLSTATE 0A000, or 42703 / 42P01 for unknown names):
never approximated. Parsing happens once per SQL text: the result is a `Template` whose
`$n` placeholders become values in `bind`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.tokens import TokenType

from ...model.errors import did_you_mean
from ...model.types import SemanticModel, dimension_aggregate, qualify
from ...query import GRAINS, DimensionRef, Filter, OrderBy, QueryError, SemanticQuery, TopGroups
from ...views import PublicView, ViewField
from . import folding
from .folding import Deferred

UNSUPPORTED = "0A000"

SHAPE_HINT = (
    "write SELECT <dimensions>, <metrics> FROM <view> [WHERE ...] [GROUP BY ...] [HAVING ...] "
    "[ORDER BY ...] [LIMIT n]"
)

# The aggregate a metric column may be wrapped in, by the measure's aggregation.
_MATCHING_AGG = {
    "sum": ("SUM",),
    "count": ("COUNT",),
    "count_distinct": ("COUNT", "COUNT DISTINCT"),
    "min": ("MIN",),
    "max": ("MAX",),
    "avg": ("AVG",),
}
_ADDITIVE = ("sum", "count", "count_distinct")
_AGG_NODES = {exp.Sum: "SUM", exp.Count: "COUNT", exp.Min: "MIN", exp.Max: "MAX", exp.Avg: "AVG"}


@dataclass(frozen=True)
class Param:
    """A `$n` placeholder (1-based), bound at execute time."""

    index: int


@dataclass(frozen=True)
class OutputColumn:
    name: str  # as the client sees it
    source: int  # index into the compiled query's columns (dimensions, then metrics)
    field: ViewField
    grain: str | None = None
    as_date: bool = False  # CAST(... AS DATE): the values are dates


@dataclass(frozen=True)
class FilterTemplate:
    field: ViewField
    op: str
    value: Any  # literal, Param, tuple of those, or None
    grain: str | None = None
    like: bool = False  # value is a LIKE pattern (bound at execute time when a parameter)
    negate_like: bool = False


@dataclass(frozen=True)
class TopTemplate:
    """A series limit: the top `limit` groups of `dimensions` by `metric` under `filters`."""

    dimensions: tuple[DimensionRef, ...]
    metric: str
    descending: bool
    filters: tuple[FilterTemplate, ...]
    limit: int | Param


@dataclass
class Template:
    """A mapped statement: everything but the parameter values."""

    view: PublicView
    columns: list[OutputColumn]
    metrics: tuple[str, ...]
    dimensions: tuple[DimensionRef, ...]
    filters: tuple[FilterTemplate, ...]
    order_by: tuple[OrderBy, ...]
    limit: int | Param | None
    offset: int | Param | None
    post_limit: int | Param | None = None  # an outer wrapper's LIMIT/OFFSET over the rows
    post_offset: int | Param | None = None
    count_rows: bool = False  # SELECT count(*) FROM (<query>) t
    count_name: str = "count"
    param_fields: dict[int, Any] = field(default_factory=dict)  # $n -> ViewField, or "int8"/"text"
    param_count: int = 0
    star: bool = False  # the select list has SELECT *
    top: TopTemplate | None = None  # a series limit (JOIN with a top-N subquery)

    @property
    def identity(self) -> bool:
        """True when output columns are the compiled columns in order (rows pass through)."""
        return [c.source for c in self.columns] == list(range(len(self.dimensions) + len(self.metrics)))

    def bind(self, params: list[Any] | tuple = (), window: str | None = None, as_of: Any = None,
             now: dt.datetime | None = None) -> SemanticQuery:
        """The SemanticQuery for these parameter values. Constant expressions that read "now"
        are evaluated with `now`, else `as_of`, else the current time (UTC)."""
        if len(params) < self.param_count:
            raise QueryError(
                f"bind message supplies {len(params)} parameters, but the statement requires {self.param_count}", "08P01"
            )
        clock = now or (as_of if isinstance(as_of, dt.datetime) else None) or folding.utc_now()
        limit = _bind_count(self.limit, params, "LIMIT")
        offset = _bind_count(self.offset, params, "OFFSET")
        top = None
        if self.top is not None:
            count = _bind_count(self.top.limit, params, "LIMIT")
            if count is None:
                raise QueryError("the series limit subquery's LIMIT must be a number of groups, not NULL or ALL", "22023")
            top = TopGroups(self.top.dimensions, self.top.metric, count, self.top.descending,
                            _bind_filters(self.top.filters, params, clock))
        return SemanticQuery(
            metrics=self.metrics, dimensions=self.dimensions, filters=_bind_filters(self.filters, params, clock),
            order_by=self.order_by, limit=limit, offset=offset or None, window=window, as_of=as_of, top=top,
        )

    def bind_post(self, params) -> tuple[int, int | None]:
        """(offset, limit) of an outer wrapper, applied to the rows as they stream."""
        return _bind_count(self.post_offset, params, "OFFSET") or 0, _bind_count(self.post_limit, params, "LIMIT")


def _bind_filters(templates: tuple[FilterTemplate, ...], params, clock: dt.datetime) -> tuple[Filter, ...]:
    filters = []
    for f in templates:
        value = _bind_value(f.value, params, clock)
        op = f.op
        if f.like:
            op, value = _like_filter(f.field.name, value, f.negate_like)
        filters.append(Filter(f.field.ref, op, value, f.grain))
    return tuple(filters)


def _bind_value(value: Any, params, now: dt.datetime) -> Any:
    if isinstance(value, Param):
        return params[value.index - 1]
    if isinstance(value, Deferred):
        return value.value(now)
    if isinstance(value, tuple):
        return tuple(_bind_value(v, params, now) for v in value)
    return value


def _bind_count(value, params, what: str) -> int | None:
    if isinstance(value, Param):
        value = params[value.index - 1]
        if value is None:
            return None  # LIMIT NULL is LIMIT ALL
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise QueryError(f"invalid input syntax for type bigint: \"{value}\"", "22P02") from None
        if isinstance(value, (float, decimal.Decimal)) and value == int(value):
            value = int(value)
    if value is not None and (not isinstance(value, int) or value < 0):
        raise QueryError(f"{what} must not be negative" if isinstance(value, int) else f"{what} must be an integer", "2201W")
    return value


def _like_filter(column: str, pattern: Any, negate: bool) -> tuple[str, str]:
    if not isinstance(pattern, str):
        raise QueryError(f"LIKE on '{column}' needs a text pattern, got {pattern!r}", "22P02")
    if negate:
        raise QueryError(f"NOT LIKE on '{column}' is not supported; use LIKE 'abc%' or '%abc%', or <> / NOT IN", UNSUPPORTED)
    body = pattern
    starts = body.endswith("%") and not body.endswith("\\%")
    contains = starts and body.startswith("%") and len(body) >= 2
    core = body[1:-1] if contains else body[:-1] if starts else body
    if "%" in core or "_" in core or "\\" in core or not core:
        raise QueryError(
            f"LIKE pattern {pattern!r} on '{column}' is not supported: write 'abc%' (starts with), "
            "'%abc%' (contains) or a pattern without wildcards (equals); '_' and inner '%' cannot be mapped",
            UNSUPPORTED,
        )
    if contains:
        return "contains", core
    if starts:
        return "starts with", core
    return "=", core


# ---------------------------------------------------------------------------------------
# Parsing


class _Cache:
    def __init__(self, size: int = 2048):
        self._items: OrderedDict = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            if len(self._items) > self._size:
                self._items.popitem(last=False)


_templates = _Cache()


def parse_sql(sql: str) -> exp.Expression:
    """The statement as a sqlglot tree (PostgreSQL syntax); 42601 on a syntax error (an
    unterminated comment or quote included), 54001 when it is nested too deeply to parse."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="postgres") if s is not None]
    except sqlglot.errors.TokenError as e:
        raise QueryError(f"syntax error: {_token_error(sql)}", "42601") from None
    except RecursionError:
        raise too_deep() from None
    except (TypeError, ValueError):
        # sqlglot's parser trips over a few malformed inputs (`SELECT 1 ?` builds an alias of
        # None); they are syntax errors, not the server's.
        raise QueryError("syntax error at or near the end of the statement", "42601") from None
    except sqlglot.errors.ParseError as e:
        quoted = _quote_keyword_labels(sql)
        try:
            statements = [s for s in sqlglot.parse(quoted, read="postgres") if s is not None] if quoted else None
        except (sqlglot.errors.ParseError, TypeError, ValueError):
            statements = None
        if statements is None:
            errors = getattr(e, "errors", None) or [{}]
            detail = errors[0].get("description") or str(e).splitlines()[0]
            raise QueryError(f"syntax error: {detail}", "42601") from None
    if len(statements) != 1:
        raise QueryError("expected exactly one statement", "42601")
    return statements[0]


def too_deep() -> QueryError:
    """PostgreSQL's "stack depth limit exceeded", for a statement nested beyond what is parsed."""
    return QueryError(
        "statement is nested too deeply (parentheses, subqueries or expressions); "
        "write it with fewer levels", "54001")


def _token_error(sql: str) -> str:
    """What the tokenizer could not read, in PostgreSQL's words (see sql.split_statements)."""
    from .sql import Unterminated, split_statements

    try:
        split_statements(sql)
    except Unterminated as e:
        return str(e)
    return "the statement cannot be read (an unterminated string, identifier or comment?)"


_LABEL_ENDS = (TokenType.COMMA, TokenType.FROM, TokenType.R_PAREN, TokenType.SEMICOLON)


def _quote_keyword_labels(sql: str) -> str | None:
    """`sql` repaired where PostgreSQL's grammar takes what sqlglot's does not, or None when
    nothing is to repair: keywords used as column labels after AS are quoted (`... AS select,`:
    Metabase's privilege query writes it), and `::oid[]` (asyncpg's type introspection; sqlglot
    has no oid arrays) is written `::uinteger[]`, the shadow catalog's OID type (described as oid[])."""
    tokens = Postgres().tokenize(sql)
    spans = [(word, f'"{word.text.lower()}"') for as_, word, after in zip(tokens, tokens[1:], tokens[2:] + [None])
             if as_.token_type == TokenType.ALIAS and word.token_type not in (TokenType.VAR, TokenType.IDENTIFIER)
             and word.text.isidentifier() and (after is None or after.token_type in _LABEL_ENDS)]
    spans += [(word, "uinteger") for cast, word, open_, close in zip(tokens, tokens[1:], tokens[2:], tokens[3:])
              if cast.token_type == TokenType.DCOLON and word.text.lower() == "oid"
              and open_.token_type == TokenType.L_BRACKET and close.token_type == TokenType.R_BRACKET]
    for word, text in sorted(spans, key=lambda span: span[0].start, reverse=True):
        sql = f"{sql[:word.start]}{text}{sql[word.end + 1:]}"
    return sql if spans else None


def template_for(sql: str, model: SemanticModel, views: dict[str, PublicView], tree: exp.Expression | None = None) -> Template:
    """The (cached) template of `sql` over `views` (the views the user may query)."""
    key = (sql, id(model), id(views))
    cached = _templates.get(key)
    if cached is not None and cached[0] is model and cached[1] is views:
        return cached[2]
    if tree is None:
        tree = parse_sql(sql)
    template = _Mapper(model, views).statement(tree)
    _templates.put(key, (model, views, template))
    return template


def ident(node: exp.Expression | str | None) -> str | None:
    """An identifier as PostgreSQL resolves it: unquoted names fold to lower case."""
    if node is None:
        return None
    if isinstance(node, str):
        return node.lower()
    if isinstance(node, exp.Identifier):
        return node.this if node.quoted else node.this.lower()
    return node.name.lower()


@dataclass
class _Item:
    """One entry of the select list, resolved."""

    name: str
    field: ViewField
    kind: str  # dimension | metric
    grain: str | None = None
    as_date: bool = False
    expr_key: str = ""  # canonical SQL of the expression, to match GROUP BY / ORDER BY items


class _Mapper:
    def __init__(self, model: SemanticModel, views: dict[str, PublicView]):
        self.model = model
        self.views = views
        self.view: PublicView | None = None
        self.qualifiers: set[str] = set()
        self.params: dict[int, Any] = {}
        self.star = False

    # ---- statement level ------------------------------------------------------------

    def statement(self, tree: exp.Expression) -> Template:
        if not isinstance(tree, exp.Select):
            if isinstance(tree, (exp.Union, exp.Intersect, exp.Except)):
                raise QueryError(f"UNION / INTERSECT / EXCEPT cannot be mapped onto one metrics query; {SHAPE_HINT}", UNSUPPORTED)
            raise QueryError(f"only SELECT over a view is supported here; {SHAPE_HINT}", UNSUPPORTED)
        if tree.args.get("with_"):
            tree = self._with(tree)
        if tree.args.get("joins") and _top_n_join(tree):
            return self._series_limited(tree)  # over the view, or over a virtual dataset's subquery
        source = tree.args.get("from_")
        if source is not None and isinstance(source.this, exp.Subquery) and isinstance(source.this.this, exp.Select):
            return self._wrapper(tree, source.this)
        return self._select(tree)

    def _wrapper(self, outer: exp.Select, sub: exp.Subquery) -> Template:
        for part, what in (("joins", "JOIN"), ("laterals", "LATERAL"), ("qualify", "QUALIFY"), ("windows", "WINDOW")):
            if outer.args.get(part):
                raise QueryError(f"{what} over a subquery cannot be mapped onto a metrics query", UNSUPPORTED)
        projections = outer.expressions
        simple = not any(outer.args.get(p) for p in ("where", "group", "having", "distinct", "order"))
        if simple and len(projections) == 1 and isinstance(projections[0], exp.Star):
            inner = self._select(sub.this)
            limit, offset = self._limits(outer)
            if inner.limit is None and inner.offset is None and not isinstance(limit, Param) and not isinstance(offset, Param):
                inner.limit, inner.offset = limit, offset
            else:
                inner.post_limit, inner.post_offset = limit, offset
            inner.param_fields.update(self.params)
            inner.param_count = max(self.params, default=0)
            return inner
        if simple and len(projections) == 1:
            node = projections[0]
            name = ident(node.args.get("alias")) if isinstance(node, exp.Alias) else "count"
            target = node.this if isinstance(node, exp.Alias) else node
            if isinstance(target, exp.Count) and isinstance(target.this, exp.Star):
                inner = self._select(sub.this)
                limit, offset = self._limits(outer)
                if limit is not None or offset:
                    raise QueryError("LIMIT / OFFSET on SELECT count(*) FROM (<query>) t cannot be mapped", UNSUPPORTED)
                inner.count_rows = True
                inner.count_name = name
                return inner
        return self._merged(outer, sub)

    def _merged(self, outer: exp.Select, sub: exp.Subquery) -> Template:
        """An outer query that renames, filters, orders, limits or re-aggregates the columns of
        its subquery (Tableau's `SELECT ... FROM (SELECT ...) t GROUP BY 1`, Power BI's
        `SELECT ... FROM (...) "_" LIMIT 1000`), folded into one statement over the view.

        The outer query's references to the subquery's columns are replaced by the columns'
        expressions and the clauses are combined. Re-aggregation (the outer query groups by
        fewer dimensions) is exact only for SUM of sum and count measures, with no metric filter
        or LIMIT inside (they would pick groups before they are added up)."""
        inner_sql = sub.this
        inner = self._select(inner_sql.copy())
        if inner.top is not None:
            raise QueryError("a query with a series limit (JOIN ... series_limit) can only be wrapped as "
                             "SELECT * FROM (<query>) t [LIMIT n] or SELECT count(*) FROM (<query>) t", UNSUPPORTED)
        alias = ident(sub.args["alias"].this) if sub.alias else None  # "Quoted" keeps its case
        names: dict[str, tuple[exp.Expression, OutputColumn]] = {}
        for column, node in zip(inner.columns, self._projections(inner_sql, inner)):
            names.setdefault(column.name, (node, column))
        if (inner.limit is not None or inner.offset) and any(
                outer.args.get(p) for p in ("where", "group", "having", "order")):
            raise QueryError("a subquery with LIMIT / OFFSET can only be wrapped as SELECT ... FROM (<query>) t [LIMIT n]: "
                             "filtering, ordering or grouping after its LIMIT cannot be mapped", UNSUPPORTED)

        def inner_column(node: exp.Expression) -> tuple[exp.Expression, OutputColumn] | None:
            node = _strip_parens(node)
            if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
                return None
            table = ident(node.args.get("table"))
            if table is not None and table != alias:
                raise QueryError(f"missing FROM-clause entry for table \"{table}\"", "42P01")
            found = names.get(ident(node.this))
            if found is None:
                raise QueryError(
                    f"column \"{ident(node.this)}\" does not exist in the subquery{did_you_mean(ident(node.this), list(names), 'columns')}",
                    "42703")
            return found

        def substitute(node: exp.Expression) -> exp.Expression:
            def swap(n):
                found = inner_column(n) if isinstance(n, exp.Column) else None
                return found[0].copy() if found else n
            return node.copy().transform(swap)

        merged = exp.Select()
        wrapped: list[tuple[str, ViewField]] = []  # outer aggregates over inner metric columns
        outer_aggregates = False
        for node in outer.expressions:
            if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star)):
                for name, (expr, _) in names.items():
                    merged.select(exp.alias_(expr.copy(), exp.to_identifier(name, quoted=True)), copy=False)
                continue
            label = ident(node.args.get("alias")) if isinstance(node, exp.Alias) else None  # "SUM(x)" keeps its case
            body = _strip_parens(node.this if isinstance(node, exp.Alias) else node)
            agg = self._aggregate_name(body)
            if agg is not None:
                outer_aggregates = True
                arg = body.this.expressions[0] if isinstance(body.this, exp.Distinct) and body.this.expressions else body.this
                found = inner_column(arg)
                if found is None or found[1].field.kind != "metric":
                    raise QueryError(
                        f"{body.sql('postgres')[:60]!r} over a subquery cannot be mapped: an outer aggregate takes one "
                        "metric column of the subquery, e.g. SUM(t.lead_count)", UNSUPPORTED)
                wrapped.append((agg, found[1].field))
                expr = found[0].copy()
                merged.select(exp.alias_(expr, exp.to_identifier(label or agg.split()[0].lower(), quoted=True)), copy=False)
                continue
            found = inner_column(body)
            if found is None:
                expr = substitute(body)
                merged.select(exp.alias_(expr, exp.to_identifier(label, quoted=True)) if label else expr, copy=False)
            else:
                merged.select(exp.alias_(found[0].copy(), exp.to_identifier(label or found[1].name, quoted=True)), copy=False)
        merged.from_(inner_sql.args["from_"].copy(), copy=False)
        wheres = [w.this for w in (inner_sql.args.get("where"), outer.args.get("where")) if w is not None]
        if len(wheres) == 2:
            wheres = [exp.and_(exp.paren(inner_sql.args["where"].this.copy()), exp.paren(substitute(outer.args["where"].this)))]
        elif outer.args.get("where") is not None:
            wheres = [substitute(outer.args["where"].this)]
        if wheres:
            merged.where(wheres[0].copy() if wheres[0] is not None else None, copy=False)
        havings = [h for h in (inner_sql.args.get("having"), outer.args.get("having")) if h is not None]
        if havings:
            condition = exp.and_(*[exp.paren(substitute(h.this) if h is outer.args.get("having") else h.this.copy()) for h in havings])
            merged.set("having", exp.Having(this=condition))
        if outer.args.get("order") is not None:
            merged.set("order", outer.args["order"].copy().transform(
                lambda n: exp.column(exp.to_identifier(_outer_name(n, names, alias), quoted=True)) if _refers_to_inner(n, names, alias, outer) else n))
        elif not outer_aggregates and not outer.args.get("group") and inner_sql.args.get("order") is not None:
            merged.set("order", inner_sql.args["order"].copy())
        for part in ("limit", "offset"):
            node = outer.args.get(part) or (inner_sql.args.get(part) if not outer.args.get(part) else None)
            if node is not None:
                merged.set(part, node.copy())
        if outer.args.get("limit") and inner_sql.args.get("limit") or outer.args.get("offset") and inner_sql.args.get("offset"):
            raise QueryError("LIMIT / OFFSET both inside and outside a subquery cannot be mapped; keep one", UNSUPPORTED)
        if outer.args.get("distinct"):
            merged.set("distinct", outer.args["distinct"].copy())

        # Group by the outer GROUP BY's columns; without one, the outer query keeps the inner
        # grouping unless it aggregates (then it is one row over everything).
        if outer.args.get("group") is not None:
            merged.set("group", exp.Group(expressions=[
                n.copy() if isinstance(n, exp.Literal) else substitute(n) for n in outer.args["group"].expressions]))
        result = self._select(merged)
        inner_dims = {(d.name, d.grain) for d in inner.dimensions}
        outer_dims = {(d.name, d.grain) for d in result.dimensions}
        # A grain of a time the subquery groups by raw (Superset's DATE_TRUNC over a virtual
        # dataset) groups the subquery's groups into buckets: a re-aggregation like fewer dimensions.
        if not all(d in inner_dims or (d[0], None) in inner_dims for d in outer_dims):
            raise QueryError("the outer query groups by a column the subquery does not group by; group inside the subquery",
                             UNSUPPORTED)
        regrouped = outer_dims != inner_dims
        if regrouped:
            if inner.limit is not None or inner.offset:
                raise QueryError("re-aggregating a subquery with LIMIT / OFFSET cannot be mapped", UNSUPPORTED)
            metric_names = {f.ref for f in self.view.metrics}
            if any(f.field.ref in metric_names or f.field.kind == "metric" for f in inner.filters):
                raise QueryError(
                    "re-aggregating a subquery that filters on a metric (HAVING) cannot be mapped: the filter picks "
                    "groups before they are added up", UNSUPPORTED)
            where = outer.args.get("where")
            if where is not None and any(inner_column(c) and inner_column(c)[1].field.kind == "metric"
                                         for c in where.find_all(exp.Column)):
                raise QueryError(
                    "re-aggregating a subquery with a WHERE on its metric columns cannot be mapped: the filter picks "
                    "groups before they are added up; filter in HAVING after the re-aggregation", UNSUPPORTED)
            selected = {c.field.ref for c in inner.columns if c.field.kind == "metric"}
            summed = {f.ref for a, f in wrapped if a == "SUM" and self._sums_exactly(f)}
            for a, f in wrapped:
                if f.ref not in summed:
                    raise QueryError(
                        f"{a}({f.name}) over a subquery grouped by more dimensions cannot be mapped: only SUM of a sum or "
                        f"count measure (or a count distinct of its model's key) re-aggregates exactly ('{f.name}' is "
                        f"{self._definition(f)}); group the subquery "
                        "by the outer query's dimensions instead", UNSUPPORTED)
            bare = [c.name for c in result.columns if c.field.kind == "metric" and c.field.ref in selected - summed]
            if bare:
                raise QueryError(f"'{bare[0]}' over a subquery grouped by more dimensions must be re-aggregated with SUM "
                                 "(and only sum and count measures can be)", UNSUPPORTED)
        else:
            for a, f in wrapped:
                if a not in self._accepted_aggregates(f):
                    raise QueryError(
                        f"{a}({f.name}) over a subquery cannot be mapped: '{f.name}' is {self._definition(f)}"
                        + (", which is not additive" if not self._additive(f) else "")
                        + f"; accepted: {', '.join(x for x in self._accepted_aggregates(f) if ' ' not in x)}", UNSUPPORTED)
        return result

    def _sums_exactly(self, f: ViewField) -> bool:
        """SUM over groups of finer dimensions is the measure of the coarser group: sums, counts,
        and counts of distinct keys of the measure's model (a row falls in one group: joins
        never fan out)."""
        agg = self._measure_agg(f)
        if agg in ("sum", "count"):
            return True
        if agg != "count_distinct":
            return False
        metric = self.model.metrics.get(f.ref)
        measure = self.model.measure(metric.inputs["measure"].measure if metric is not None else f.ref)
        if metric is not None and metric.inputs["measure"].filter is not None:
            return False
        model = self.model.models[measure.model]
        keys = {qualify(e.expr, model.name) for e in model.entities.values() if e.type in ("primary", "unique")}
        return measure.expr in keys

    def _projections(self, select: exp.Select, template: Template) -> list[exp.Expression]:
        """The expression behind each output column of a mapped select (SELECT * expanded)."""
        nodes = []
        for node in select.expressions:
            if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star)):
                nodes += [exp.column(exp.to_identifier(f.name, quoted=True)) for f in self.view.dimensions + self.view.metrics]
            else:
                nodes.append(node.this if isinstance(node, exp.Alias) else node)
        return nodes

    def _with(self, tree: exp.Select) -> exp.Select:
        """`WITH t AS (<query>) SELECT ... FROM t`: the same as a subquery in FROM."""
        ctes = tree.args["with_"].expressions
        if tree.args["with_"].args.get("recursive") or len(ctes) != 1:
            raise QueryError(f"WITH is supported with one common table expression: WITH t AS (<query>) SELECT ... FROM t; {SHAPE_HINT}",
                             UNSUPPORTED)
        cte = ctes[0]
        name = ident(cte.args["alias"].this)
        source = tree.args.get("from_")
        table = source.this if source is not None else None
        if not (isinstance(table, exp.Table) and ident(table.this) == name and table.args.get("db") is None) or tree.args.get("joins"):
            raise QueryError(f"WITH {name} AS (...) must be the FROM of the query: SELECT ... FROM {name}", UNSUPPORTED)
        if not isinstance(cte.this, exp.Select):
            raise QueryError("WITH ... AS (<query>) must hold a SELECT over a view", UNSUPPORTED)
        outer = tree.copy()
        outer.set("with_", None)
        table_alias = ident(table.args["alias"].this) if table.args.get("alias") is not None else name
        outer.set("from_", exp.From(this=exp.Subquery(this=cte.this.copy(), alias=exp.TableAlias(this=exp.to_identifier(table_alias)))))
        return outer

    def _select(self, select: exp.Select) -> Template:
        if select.args.get("joins") and _top_n_join(select):
            return self._series_limited(select)
        for part, what in (("joins", "JOIN"), ("laterals", "LATERAL"), ("qualify", "QUALIFY"), ("windows", "WINDOW"),
                           ("with_", "WITH"), ("into", "SELECT INTO"), ("locks", "FOR UPDATE / FOR SHARE")):
            if select.args.get(part):
                raise QueryError(f"{what} cannot be mapped onto a metrics query; {SHAPE_HINT}", UNSUPPORTED)
        distinct = select.args.get("distinct")
        if distinct is not None and distinct.args.get("on") is not None:
            raise QueryError("DISTINCT ON cannot be mapped onto a metrics query", UNSUPPORTED)
        self._from(select)
        items = self._items(select)
        dims = [i for i in items if i.kind == "dimension"]
        mets = [i for i in items if i.kind == "metric"]

        # The compiled query has one column per distinct dimension (with grain) and metric.
        dim_keys: list[tuple[str, str | None]] = []
        for item in dims:
            key = (item.field.ref, item.grain)
            if key not in dim_keys:
                if any(k[0] == key[0] for k in dim_keys):
                    raise QueryError(
                        f"'{item.field.name}' is asked for at two grains; ask for each dimension at one grain per query",
                        UNSUPPORTED,
                    )
                dim_keys.append(key)
        met_keys: list[str] = []
        for item in mets:
            if item.field.ref not in met_keys:
                met_keys.append(item.field.ref)
        columns = []
        for item in items:
            if item.kind == "dimension":
                source = dim_keys.index((item.field.ref, item.grain))
            else:
                source = len(dim_keys) + met_keys.index(item.field.ref)
            columns.append(OutputColumn(item.name, source, item.field, item.grain, item.as_date))

        self._group_by(select, items, dims)
        filters = []
        for clause in ("where", "having"):
            node = select.args.get(clause)
            if node is not None:
                filters += self._conditions(node.this, items)
        order = self._order(select, items)
        limit, offset = self._limits(select)
        dimension_refs = tuple(DimensionRef(ref, grain) for ref, grain in dim_keys)
        return Template(
            view=self.view, columns=columns, metrics=tuple(met_keys), dimensions=dimension_refs,
            filters=tuple(filters), order_by=tuple(order), limit=limit, offset=offset,
            param_fields=dict(self.params), param_count=max(self.params, default=0), star=self.star,
        )

    def _series_limited(self, select: exp.Select) -> Template:
        """`<query> JOIN (<top-N subquery>) AS s ON d = d__ [AND ...]`: a chart's series limit.

        Superset (superset/models/helpers.py, `get_sqla_query`) writes this when the engine
        spec allows joins and subqueries, as PostgreSQL's does: the subquery selects each
        series column as `<col> AS <col>__` and the main metric `AS mme_inner__`, has the
        chart's filters (its own time range, which may differ) as WHERE, groups by the series
        columns, orders by the series-limit metric (`mme_inner__` or its expression), ASC or
        DESC, and LIMITs to the series limit; the ON clause is an AND of `<col> = <col>__`.
        Without joins it runs that query first and adds `WHERE (d = v AND ...) OR ...`
        (`_get_top_groups`), which is a plain filter here (an OR of equalities on one column is
        an IN). "Group others" (a LEFT JOIN and CASE ... 'Others') is not this shape: refused.

        The subquery is mapped like any statement over the view (the same select-list,
        aggregate-wrapper and WHERE rules); its ORDER BY must be one metric, its LIMIT a count.
        """
        joins = select.args["joins"]
        if len(joins) != 1:
            raise QueryError("a series limit is one JOIN with a top-N subquery; several JOINs cannot be mapped", UNSUPPORTED)
        join = joins[0]
        kind = (join.args.get("kind") or "").upper()
        if join.args.get("side") or kind not in ("", "INNER") or join.args.get("using") or join.args.get("method"):
            written = " ".join(p for p in (join.args.get("method"), join.args.get("side"), join.args.get("kind")) if p)
            raise QueryError(
                f"{written.upper() or 'this'} JOIN with a top-N subquery cannot be mapped: a series limit is an inner "
                "JOIN ... ON <column> = <subquery column>, which keeps the top groups only (Superset's \"group "
                "others\" series limit is not supported: turn it off)", UNSUPPORTED)
        sub = join.this
        alias = ident(sub.args["alias"].this) if sub.args.get("alias") is not None and sub.args["alias"].this else None
        ranking_sql = sub.this
        for part, what in (("offset", "OFFSET"), ("distinct", "DISTINCT"), ("with_", "WITH")):
            if ranking_sql.args.get(part):
                raise QueryError(f"{what} in a series limit subquery cannot be mapped; it picks the top groups "
                                 "with ORDER BY <metric> LIMIT n only", UNSUPPORTED)
        order = ranking_sql.args.get("order")
        if order is None or len(order.expressions) != 1:
            raise QueryError("a series limit subquery must be ordered by one metric (ORDER BY SUM(x) DESC LIMIT n): "
                             "that order picks the top groups", UNSUPPORTED)

        # The subquery, mapped like any statement (over the view, or over a virtual dataset's
        # subquery). Its ORDER BY is resolved here, since the series may be ranked by a metric
        # the subquery does not select: an output column, or the expression as an extra column.
        unordered = ranking_sql.copy()
        unordered.set("order", None)
        ranked = self._mapped(unordered)
        if ranked.top is not None or ranked.count_rows or ranked.post_limit is not None or ranked.post_offset is not None:
            raise QueryError("a series limit subquery is one SELECT ... GROUP BY ... ORDER BY <metric> LIMIT n", UNSUPPORTED)
        if not ranked.dimensions:
            raise QueryError("a series limit subquery must group by the series columns (GROUP BY d)", UNSUPPORTED)
        if ranked.limit is None or ranked.offset:
            raise QueryError("a series limit subquery needs LIMIT n (and no OFFSET): the number of series to keep", UNSUPPORTED)
        ordered = order.expressions[0]
        rank = self._output_column(ordered.this, ranked)
        if rank is None:
            rank = self._extra_columns(unordered, [ordered.this])[0]
        if rank.field.kind != "metric":
            raise QueryError(f"a series limit subquery must be ordered by a metric; '{rank.field.name}' is a dimension",
                             UNSUPPORTED)
        descending = bool(ordered.args.get("desc"))
        if "NULLS" in ordered.sql("postgres").upper() and bool(ordered.args.get("nulls_first")) != descending:
            raise QueryError(
                f"ORDER BY {rank.field.name} {'DESC NULLS LAST' if descending else 'ASC NULLS FIRST'} in a series limit "
                "cannot be mapped; NULLs sort last ascending and first descending (the PostgreSQL default)", UNSUPPORTED)

        outer_sql = select.copy()
        outer_sql.set("joins", None)
        template = self.statement(outer_sql)
        if template.count_rows:
            raise QueryError("SELECT count(*) with a series limit JOIN cannot be mapped; wrap the query instead", UNSUPPORTED)
        if ranked.view is not template.view:
            raise QueryError(f"a series limit subquery must read the same view as the query ({template.view.name}), "
                             f"not {ranked.view.name}", UNSUPPORTED)

        # ON: each series column of the subquery equals the same dimension of the outer query.
        series = {c.name: (c.field, c.grain) for c in ranked.columns if c.field.kind == "dimension"}
        fields = {f.name for f in template.view.fields}
        on = join.args.get("on")
        if on is None:
            raise QueryError("a series limit JOIN needs ON <column> = <subquery column>", UNSUPPORTED)
        pairs = []  # (subquery column name, the outer side, the condition)
        for condition in _conjuncts(on):
            if not isinstance(condition, exp.EQ):
                raise QueryError(
                    f"the series limit JOIN's ON {condition.sql('postgres')[:60]!r} cannot be mapped: write an AND of "
                    "<column> = <subquery column>", UNSUPPORTED)
            sides = [_strip_parens(condition.this), _strip_parens(condition.expression)]
            inner = [i for i, side in enumerate(sides) if self._series_column(side, alias, series, fields)]
            if len(inner) != 1:
                raise QueryError(
                    f"the series limit JOIN's ON {condition.sql('postgres')[:60]!r} must compare a column of the query "
                    f"with a series column of the subquery ({', '.join(series)})", UNSUPPORTED)
            pairs.append((ident(sides[inner[0]].this), sides[1 - inner[0]], condition))
        # The outer sides, resolved in the outer query's scope (the view, or a virtual dataset):
        # selected and grouped by as extra columns of the same statement.
        outer_sides = self._extra_columns(outer_sql, [side for _, side, _ in pairs], group=True)
        selected = {(d.name, d.grain) for d in template.dimensions}
        matched = set()
        for (name, _, condition), column in zip(pairs, outer_sides):
            field_, grain = series[name]
            if column.field.kind != "dimension" or (column.field.ref, column.grain) != (field_.ref, grain):
                raise QueryError(
                    f"the series limit JOIN's ON {condition.sql('postgres')[:60]!r} compares different columns; "
                    f"'{name}' is {field_.name}" + (f" at grain {grain}" if grain else ""), UNSUPPORTED)
            if name in matched:
                raise QueryError(f"the series limit JOIN's ON compares '{name}' twice", UNSUPPORTED)
            matched.add(name)
            if (field_.ref, grain) not in selected:
                raise QueryError(
                    f"series column '{field_.name}' must be selected and grouped by in the query it limits: "
                    "the series limit keeps whole groups of the query", UNSUPPORTED)
        missing = [n for n in series if n not in matched]
        if missing:
            raise QueryError(f"the series limit JOIN's ON must compare every series column of the subquery; "
                             f"'{missing[0]}' is not compared", UNSUPPORTED)
        template.top = TopTemplate(ranked.dimensions, rank.field.ref, descending, ranked.filters, ranked.limit)
        template.param_fields.update(self.params)
        template.param_count = max(self.params, default=0)
        return template

    def _mapped(self, select: exp.Select) -> Template:
        """`select` mapped by a mapper of its own (its own view and scope), sharing the parameters."""
        mapper = _Mapper(self.model, self.views)
        mapper.params = self.params
        return mapper.statement(select)

    def _extra_columns(self, select: exp.Select, nodes: list[exp.Expression], group: bool = False) -> list[OutputColumn]:
        """What `nodes` are in the scope of `select`: each added as a last select item (and
        GROUP BY item) of a copy of it, mapped like the statement."""
        extended = select.copy()
        for i, node in enumerate(nodes):
            extended.select(exp.alias_(node.copy(), exp.to_identifier(f"series limit {i}", quoted=True)), copy=False)
            if group and extended.args.get("group") is not None:
                extended.args["group"].append("expressions", node.copy())
        return self._mapped(extended).columns[-len(nodes):]

    @staticmethod
    def _output_column(node: exp.Expression, template: Template) -> OutputColumn | None:
        """The output column `node` names (an alias or a position), if it names one."""
        node = _strip_parens(node)
        if isinstance(node, exp.Literal) and not node.is_string:
            try:
                position = int(node.this)
            except ValueError:
                return None
            if not 1 <= position <= len(template.columns):
                raise QueryError(f"ORDER BY position {node.this} is not in select list", "42P10")
            return template.columns[position - 1]
        if isinstance(node, exp.Column) and node.args.get("table") is None:
            named = [c for c in template.columns if c.name == ident(node.this)]
            if named and all(c.field == named[0].field for c in named):
                return named[0]
        return None

    def _series_column(self, node: exp.Expression, alias: str | None, series: dict, fields: set[str]) -> bool:
        """True when `node` names a series column of the subquery (`d__` or `s.d__`)."""
        if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
            return False
        table, name = ident(node.args.get("table")), ident(node.this)
        if table is not None:
            if table == alias:
                if name not in series:
                    raise QueryError(f"column {alias}.{name} does not exist{did_you_mean(name, list(series), 'columns')}",
                                     "42703")
                return True
            return False
        if name in series and name in fields:
            raise QueryError(f"column reference \"{name}\" is ambiguous: both the view and the series limit subquery "
                             f"have it; alias the subquery's column (AS {name}__)", "42702")
        return name in series

    def _from(self, select: exp.Select) -> None:
        source = select.args.get("from_")
        if source is None:
            raise QueryError(f"a query needs FROM <view>; {SHAPE_HINT}", UNSUPPORTED)
        table = source.this
        if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
            raise QueryError(f"FROM must name one view; {SHAPE_HINT}", UNSUPPORTED)
        name = ident(table.this)
        schema = ident(table.args.get("db"))
        if schema not in (None, "public"):
            raise QueryError(f"relation \"{schema}.{name}\" does not exist; views are in schema public: {self._view_list()}", "42P01")
        view = self.views.get(name)
        if view is None:
            raise QueryError(self._unknown_view(name), "42P01")
        self.view = view
        alias = table.args.get("alias")
        self.qualifiers = {name, f"public.{name}"}
        if alias is not None and alias.this is not None:
            if alias.columns:
                raise QueryError("column aliases on the view (AS t(a, b)) are not supported", UNSUPPORTED)
            self.qualifiers = {ident(alias.this)}

    def _view_list(self) -> str:
        return ", ".join(sorted(self.views)) or "(none)"

    def _unknown_view(self, name: str) -> str:
        tables = {m.name for m in self.model.models.values()}
        for m in self.model.models.values():
            if isinstance(m.source, exp.Table):
                tables.add(m.source.name.lower())
        if name in tables:
            return (
                f"relation \"{name}\" does not exist: '{name}' is a table of the semantic model, not a view; "
                f"query one of the views: {self._view_list()}"
            )
        hint = did_you_mean(name, self.views, "views")
        return f"relation \"{name}\" does not exist{hint if hint else '; no views are available'}"

    # ---- select list ----------------------------------------------------------------

    def _items(self, select: exp.Select) -> list[_Item]:
        items: list[_Item] = []
        for node in select.expressions:
            if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star)):
                if isinstance(node, exp.Column):
                    self._check_qualifier(node)
                self.star = True
                for f in self.view.dimensions + self.view.metrics:
                    items.append(_Item(f.name, f, f.kind, expr_key=f"col:{f.name}"))
                continue
            alias = None
            if isinstance(node, exp.Alias):
                alias = ident(node.args.get("alias"))
                node = node.this
            item = self._expression(node)
            if alias:
                item.name = alias
            items.append(item)
        if not items:
            raise QueryError(f"select at least one column; {SHAPE_HINT}", UNSUPPORTED)
        return items

    def _check_qualifier(self, column: exp.Column) -> None:
        table = ident(column.args.get("table"))
        if table is None:
            return
        db = ident(column.args.get("db"))
        qualified = f"{db}.{table}" if db else table
        if qualified not in self.qualifiers and table not in self.qualifiers:
            raise QueryError(f"missing FROM-clause entry for table \"{table}\"", "42P01")

    def _column(self, column: exp.Column) -> ViewField:
        self._check_qualifier(column)
        name = ident(column.this)
        f = self.view.field(name)
        if f is None:
            names = [x.name for x in self.view.fields]
            raise QueryError(
                f"column \"{name}\" does not exist in view {self.view.name}{did_you_mean(name, names, 'columns')}", "42703"
            )
        return f

    def _expression(self, node: exp.Expression) -> _Item:
        """A select-list expression: a dimension (maybe at a grain) or a metric."""
        node = _strip_parens(node)
        if isinstance(node, exp.Column):
            f = self._column(node)
            return _Item(f.name, f, f.kind, expr_key=f"col:{f.name}")
        if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)) or (
            isinstance(node, exp.Anonymous) and node.name.lower() == "date_trunc"
        ):
            f, grain = self._truncation(node)
            return _Item("date_trunc", f, "dimension", grain=grain, expr_key=f"trunc:{f.name}:{grain}")
        if isinstance(node, exp.Cast):
            target = node.to.this
            inner = _strip_parens(node.this)
            if isinstance(inner, exp.Column):
                f = self._column(inner)
                if f.kind == "dimension" and f.type == "time" and target == exp.DataType.Type.DATE:
                    return _Item(f.name, f, "dimension", grain="day", as_date=True, expr_key=f"date:{f.name}")
                raise QueryError(
                    f"CAST of '{f.name}' to {node.to.sql('postgres')} cannot be mapped; the only cast supported is "
                    "CAST(<time column> AS DATE) (day grain); cast in your tool instead", UNSUPPORTED,
                )
        if isinstance(node, exp.Anonymous) and node.name.lower() == "measure":
            if len(node.expressions) != 1 or not isinstance(_strip_parens(node.expressions[0]), exp.Column):
                raise QueryError("MEASURE() takes one metric column: MEASURE(accuracy)", UNSUPPORTED)
            f = self._column(_strip_parens(node.expressions[0]))
            if f.kind != "metric":
                raise QueryError(f"MEASURE() takes a metric; '{f.name}' is a dimension", UNSUPPORTED)
            return _Item("measure", f, "metric", expr_key=f"met:{f.name}")
        agg = self._aggregate_name(node)
        if agg is not None:
            f = self._aggregated_metric(node, agg)
            return _Item(agg.split()[0].lower(), f, "metric", expr_key=f"met:{f.name}")
        if isinstance(node, exp.Extract):
            raise QueryError(
                "EXTRACT cannot be mapped onto a metrics query (it would merge different periods); "
                "use date_trunc('hour' | 'day' | 'week' | 'month' | 'quarter' | 'year', <time column>)", UNSUPPORTED,
            )
        raise QueryError(
            f"expression {node.sql('postgres')[:80]!r} cannot be mapped onto a metrics query; select view columns, "
            "MEASURE(metric), the aggregate matching a metric (SUM(x), COUNT(x) ...), date_trunc('<grain>', <time column>) "
            "or CAST(<time column> AS DATE)", UNSUPPORTED,
        )

    def _aggregate_name(self, node: exp.Expression) -> str | None:
        for cls, name in _AGG_NODES.items():
            if type(node) is cls:
                if cls is exp.Count and isinstance(node.this, exp.Distinct):
                    return "COUNT DISTINCT"
                return name
        return None

    def _aggregated_metric(self, node: exp.Expression, agg: str) -> ViewField:
        arg = node.this
        if isinstance(arg, exp.Distinct):
            if len(arg.expressions) != 1:
                raise QueryError("COUNT(DISTINCT ...) takes one metric column", UNSUPPORTED)
            arg = arg.expressions[0]
        arg = _strip_parens(arg)
        if isinstance(arg, exp.Star):
            return self._count_star(agg)
        if not isinstance(arg, exp.Column):
            raise QueryError(f"{agg.split()[0]}() takes one metric column here, e.g. {agg.split()[0]}(lead_count)", UNSUPPORTED)
        f = self._column(arg)
        if f.kind != "metric":
            return self._dimension_aggregate(f, agg)
        allowed = self._accepted_aggregates(f)
        if agg not in allowed:
            forms = [f.name, f"MEASURE({f.name})"] + [
                f"COUNT(DISTINCT {f.name})" if a == "COUNT DISTINCT" else f"{a}({f.name})" for a in allowed
            ]
            written = f"COUNT(DISTINCT {f.name})" if agg == "COUNT DISTINCT" else f"{agg}({f.name})"
            why = (f"'{f.name}' is {self._definition(f)}, which is not additive: {agg.split()[0]} over it is not "
                   "the metric of the group" if not self._additive(f) else
                   f"it does not match how '{f.name}' is defined ({self._definition(f)})")
            raise QueryError(f"{written} cannot be mapped: {why}; write {' or '.join(dict.fromkeys(forms))}", UNSUPPORTED)
        return f

    def _count_star(self, agg: str) -> ViewField:
        """COUNT(*) over a view: the count measure the view names (`count:` in its YAML)."""
        if agg != "COUNT":
            raise QueryError(f"{agg}(*) is not an aggregate; write COUNT(*)", "42809")
        ref = self.view.count
        if ref is None:
            counts = [m.name for m in self.view.metrics if m.type in ("count", "count_distinct")]
            raise QueryError(
                f"COUNT(*) over view {self.view.name} cannot be mapped: the view names no count measure; add "
                f"`count: <model>.<count measure>` to view '{self.view.name}' in the YAML"
                + (f", or select a count metric instead ({', '.join(counts)})" if counts else "")
                + "; SELECT count(*) FROM (<query>) t counts the rows of a query", UNSUPPORTED,
            )
        for f in self.view.metrics:
            if f.ref == ref:
                return f
        measure = self.model.measure(ref)
        return ViewField("count", "metric", ref, measure.agg, measure.description)

    def _dimension_aggregate(self, f: ViewField, agg: str) -> ViewField:
        """MIN / MAX / COUNT(DISTINCT) of a dimension: an aggregate over the dimension's model
        rows, compiled like any measure (as_of and dedupe applied)."""
        forms = {"MIN": "min", "MAX": "max", "COUNT DISTINCT": "count_distinct"}
        if agg not in forms:
            raise QueryError(
                f"{agg}({f.name}) aggregates dimension '{f.name}', which cannot be mapped; over a dimension write "
                f"MIN({f.name}), MAX({f.name}) or COUNT(DISTINCT {f.name}), or COUNT(*) for the view's count", UNSUPPORTED,
            )
        ref = dimension_aggregate(forms[agg], f.ref)
        if self.model.measure(ref) is None:
            raise QueryError(f"{agg}({f.name}) cannot be mapped: '{f.name}' is not a dimension of a model", UNSUPPORTED)
        if agg == "COUNT DISTINCT":
            return ViewField("count", "metric", ref, "count_distinct", None)
        return ViewField(f.name, "metric", ref, f.type, f.description)  # typed as the dimension

    def _measure_agg(self, f: ViewField) -> str | None:
        metric = self.model.metrics.get(f.ref)
        if metric is None:
            measure = self.model.measure(f.ref)
            return measure.agg if measure is not None else None
        if metric.type == "simple" and "measure" in metric.inputs and metric.window is None:
            measure = self.model.measure(metric.inputs["measure"].measure)
            return measure.agg if measure is not None else None
        return None

    def _additive(self, f: ViewField) -> bool:
        """A sum, count or count distinct without a window: SUM / MIN / MAX of it over one group
        (each output row of a metrics query is one group) is the measure itself."""
        return self._measure_agg(f) in _ADDITIVE

    def _accepted_aggregates(self, f: ViewField) -> tuple[str, ...]:
        """The aggregates a metric column may be wrapped in (BI tools wrap every measure).

        Each output row of a metrics query is one group, so an aggregate over the group's one
        value is that value: SUM / MIN / MAX of an additive measure, MIN / MAX / AVG of any
        other metric (a ratio, an average, a derived or windowed metric), besides the
        aggregate the measure is defined with (COUNT(x) of a count, AVG(x) of an avg ...)."""
        agg = self._measure_agg(f)
        matching = _MATCHING_AGG.get(agg, ()) if agg else ()
        wrappers = ("SUM", "MIN", "MAX") if agg in _ADDITIVE else ("MIN", "MAX", "AVG")
        return tuple(dict.fromkeys(matching + wrappers))

    def _definition(self, f: ViewField) -> str:
        agg = self._measure_agg(f)
        if agg:
            return f"a {agg} measure"
        metric = self.model.metrics.get(f.ref)
        if metric is not None and metric.window is not None:
            return f"a {metric.type} metric over a trailing window"
        return f"a {metric.type} metric" if metric else f"a {f.type} measure"

    def _truncation(self, node: exp.Expression) -> tuple[ViewField, str]:
        if isinstance(node, exp.Anonymous):
            args = node.expressions
            if len(args) != 2 or not (isinstance(args[0], exp.Literal) and args[0].is_string):
                raise QueryError("date_trunc takes a grain and a time column: date_trunc('hour', created_at)", UNSUPPORTED)
            unit, target = args[0].this, args[1]
        else:
            unit_node = node.args.get("unit")
            unit = unit_node.name if unit_node is not None else ""
            target = node.this
            if node.args.get("zone") is not None:
                raise QueryError("date_trunc with a time zone cannot be mapped; times are UTC", UNSUPPORTED)
        grain = str(unit).strip("'").lower()
        target = _strip_parens(target)
        if isinstance(target, exp.Cast) and isinstance(_strip_parens(target.this), exp.Column):
            target = _strip_parens(target.this)  # date_trunc('day', created_at::timestamp)
        if not isinstance(target, exp.Column):
            raise QueryError("date_trunc takes a time column of the view: date_trunc('hour', created_at)", UNSUPPORTED)
        f = self._column(target)
        if f.kind != "dimension" or f.type != "time":
            raise QueryError(f"date_trunc applies to time dimensions; '{f.name}' is not one", UNSUPPORTED)
        if grain not in GRAINS:
            raise QueryError(
                f"date_trunc grain '{grain}' is not supported{did_you_mean(grain, GRAINS, 'grains')}", UNSUPPORTED
            )
        return f, grain

    # ---- GROUP BY -------------------------------------------------------------------

    def _resolve_reference(self, node: exp.Expression, items: list[_Item], clause: str) -> _Item:
        """A GROUP BY / ORDER BY item: a position, an output name or an expression of the list."""
        node = _strip_parens(node)
        if isinstance(node, exp.Literal) and not node.is_string:
            try:
                position = int(node.this)
            except ValueError:
                position = 0
            if not 1 <= position <= len(items):
                raise QueryError(f"{clause} position {node.this} is not in select list", "42P10")
            return items[position - 1]
        if isinstance(node, exp.Column) and node.args.get("table") is None:
            name = ident(node.this)
            named = [i for i in items if i.name == name]
            if len(named) == 1 or (named and all(i.expr_key == named[0].expr_key for i in named)):
                return named[0]
            if len(named) > 1:
                raise QueryError(f"{clause} \"{name}\" is ambiguous", "42702")
        item = self._expression(node)
        for candidate in items:
            if candidate.expr_key == item.expr_key:
                return candidate
        return item  # not selected: the caller decides

    def _group_by(self, select: exp.Select, items: list[_Item], dims: list[_Item]) -> None:
        group = select.args.get("group")
        if group is None:
            return
        if group.args.get("rollup") or group.args.get("cube") or group.args.get("grouping_sets"):
            raise QueryError("ROLLUP / CUBE / GROUPING SETS cannot be mapped; run one query per grouping", UNSUPPORTED)
        grouped = set()
        for node in group.expressions:
            item = self._resolve_reference(node, items, "GROUP BY")
            if item.kind != "dimension":
                raise QueryError(f"GROUP BY {item.field.name}: metrics are aggregates and cannot be grouped by", UNSUPPORTED)
            if item not in items:
                raise QueryError(
                    f"GROUP BY {node.sql('postgres')} groups by a dimension that is not selected; a metrics query "
                    "groups by exactly the dimensions it selects: add it to the select list", UNSUPPORTED,
                )
            grouped.add(item.expr_key)
        missing = [d.name for d in dims if d.expr_key not in grouped]
        if missing:
            raise QueryError(
                f"column \"{missing[0]}\" must appear in the GROUP BY clause (metrics queries group by every selected "
                "dimension; GROUP BY may also be left out)", "42803",
            )

    # ---- WHERE / HAVING -------------------------------------------------------------

    def _conditions(self, node: exp.Expression, items: list[_Item]) -> list[FilterTemplate]:
        node = _strip_parens(node)
        if isinstance(node, exp.And):
            return self._conditions(node.this, items) + self._conditions(node.expression, items)
        if isinstance(node, exp.Boolean) and node.this is True:
            return []  # WHERE true / 1=1 style
        return [self._condition(node, items)]

    def _target(self, node: exp.Expression, items: list[_Item]) -> tuple[ViewField, str | None] | None:
        """The filtered field (and grain) when `node` is a column-like expression, else None."""
        node = _strip_parens(node)
        if folding.is_constant(node):
            return None
        if isinstance(node, exp.Column) and node.args.get("table") is None:
            name = ident(node.this)
            if self.view.field(name) is None:
                for item in items:  # an output alias (accepted in HAVING by some tools)
                    if item.name == name:
                        return item.field, item.grain
        if isinstance(node, (exp.Column, exp.TimestampTrunc, exp.DateTrunc, exp.Cast, exp.Anonymous, *_AGG_NODES)):
            if isinstance(node, exp.Anonymous) and node.name.lower() not in ("measure", "date_trunc"):
                return None
            if isinstance(node, exp.Cast):
                inner = _strip_parens(node.this)
                if not isinstance(inner, exp.Column):
                    return None
                f = self._column(inner)
                if f.type == "time" and f.kind == "dimension" and node.to.this == exp.DataType.Type.DATE:
                    return f, "day"
                if f.type == "time" and f.kind == "dimension" and node.to.this in (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ):
                    return f, None
                if f.kind == "dimension" and f.type == "categorical" and node.to.is_type("text", "varchar"):
                    return f, None
                raise QueryError(f"a filter on CAST({f.name} AS {node.to.sql('postgres')}) cannot be mapped", UNSUPPORTED)
            item = self._expression(node)
            return item.field, item.grain
        return None

    def _condition(self, node: exp.Expression, items: list[_Item]) -> FilterTemplate:
        return self._plain_condition(self._rewrite_time_predicate(node), items)

    def _rewrite_time_predicate(self, node: exp.Expression) -> exp.Expression:
        """Time predicates BI tools write, rewritten into the exact equivalent the mapping takes.

        * `EXTRACT(YEAR FROM t) op n` is `date_trunc('year', t) op 'n-01-01'` (the year is a
          one-to-one, order-keeping function of the truncation); `EXTRACT(EPOCH FROM t) op n`
          is `t op TO_TIMESTAMP(n)`. Other fields (MONTH, DOW ...) merge periods: refused.
        * `CAST(t AS DATE) op 'text'` compares dates: the text is read as a date, as PostgreSQL
          does ('2026-02-07 12:00' is the day 2026-02-07), not as a timestamp.
        """
        inner = _strip_parens(node.this) if isinstance(node, exp.Not) else node
        if not isinstance(inner, (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE, exp.In, exp.Between)):
            return node
        sides = [inner.this] if isinstance(inner, (exp.In, exp.Between)) else [inner.this, inner.expression]
        for side in sides:
            side = _strip_parens(side)
            if isinstance(side, exp.Extract) and isinstance(_strip_parens(side.expression), exp.Column):
                return self._rewrite_extract(node, inner, side)
            if (isinstance(side, exp.Cast) and side.to.this == exp.DataType.Type.DATE
                    and isinstance(_strip_parens(side.this), exp.Column)):
                return _map_values(node, inner, side, lambda v: exp.Cast(this=v, to=exp.DataType.build("date"))
                                   if isinstance(v, exp.Literal) and v.is_string else v)
        return node

    def _rewrite_extract(self, node: exp.Expression, inner: exp.Expression, extract: exp.Extract) -> exp.Expression:
        part = extract.this.name.lower()
        column = _strip_parens(extract.expression)
        f = self._column(column)
        if f.kind != "dimension" or f.type != "time":
            raise QueryError(f"EXTRACT applies to time dimensions; '{f.name}' is not one", UNSUPPORTED)

        def value(v: exp.Expression) -> Any:
            if not folding.is_constant(v):
                raise QueryError(
                    f"EXTRACT({part.upper()} FROM {f.name}) is compared with {_strip_parens(v).sql('postgres')[:40]!r}; "
                    "it can be mapped only when compared with a constant (not a parameter)", UNSUPPORTED)
            folded = folding.fold(v)
            if isinstance(folded, str):
                folded = folding.cast_value(folded, exp.DataType.build("decimal"))
            if not isinstance(folded, (int, decimal.Decimal, float)) or isinstance(folded, bool):
                raise QueryError(f"EXTRACT({part.upper()} FROM {f.name}) is compared with a number, got {folded!r}", "42883")
            return folded

        if part in ("year", "years", "y", "yr", "yrs"):
            def year(v: exp.Expression) -> exp.Expression:
                n = value(v)
                if n != int(n) or not 1 <= int(n) <= 9999:
                    raise QueryError(
                        f"EXTRACT(YEAR FROM {f.name}) is compared with {n}, which is not a year: write a whole year such as 2026",
                        UNSUPPORTED)
                return exp.Cast(this=exp.Literal.string(f"{int(n):04d}-01-01"), to=exp.DataType.build("timestamp"))
            trunc = exp.TimestampTrunc(this=column.copy(), unit=exp.Var(this="YEAR"))
            return _map_values(node, inner, extract, year, replace=trunc)
        if part == "epoch":
            return _map_values(node, inner, extract, lambda v: exp.UnixToTime(this=exp.Literal.number(str(value(v)))),
                               replace=column.copy())
        raise QueryError(
            f"EXTRACT({part.upper()} FROM {f.name}) cannot be mapped onto a metrics query: it merges periods (every "
            f"year's {part}); filter on a range instead ({f.name} >= '...' AND {f.name} < '...'), or use "
            "EXTRACT(YEAR ...) / EXTRACT(EPOCH ...)", UNSUPPORTED,
        )

    def _plain_condition(self, node: exp.Expression, items: list[_Item]) -> FilterTemplate:
        negate = False
        if isinstance(node, exp.Not):
            negate = True
            node = _strip_parens(node.this)
        if isinstance(node, exp.Or):
            if negate:
                raise QueryError("NOT (... OR ...) cannot be mapped; write <> / NOT IN conditions joined by AND", UNSUPPORTED)
            return self._or(node, items)
        if isinstance(node, exp.Is):
            target = self._require_target(node.this, items)
            if not isinstance(node.expression, exp.Null):
                raise QueryError("IS supports NULL only (IS NULL / IS NOT NULL)", UNSUPPORTED)
            is_not = bool(node.args.get("negate")) != negate
            return FilterTemplate(target[0], "is not null" if is_not else "is null", None, target[1])
        if isinstance(node, (exp.In, exp.Between)) and node.args.get("negate"):
            negate = not negate
        if isinstance(node, exp.In):
            if node.args.get("query") is not None or node.args.get("unnest") is not None:
                raise QueryError("IN (subquery) cannot be mapped; list the values: IN ('a', 'b')", UNSUPPORTED)
            target = self._require_target(node.this, items)
            values = tuple(self._value(v, target[0]) for v in node.expressions)
            return FilterTemplate(target[0], "not in" if negate else "in", values, target[1])
        if isinstance(node, exp.Between):
            if negate:
                raise QueryError("NOT BETWEEN cannot be mapped (it is an OR); write < low and > high as separate queries", UNSUPPORTED)
            target = self._require_target(node.this, items)
            values = (self._value(node.args["low"], target[0]), self._value(node.args["high"], target[0]))
            return FilterTemplate(target[0], "between", values, target[1])
        if isinstance(node, (exp.Like, exp.ILike)):
            if isinstance(node, exp.ILike):
                raise QueryError("ILIKE cannot be mapped (case-insensitive matching); use LIKE 'abc%' or '%abc%'", UNSUPPORTED)
            if node.args.get("escape") is not None:
                raise QueryError("LIKE ... ESCAPE cannot be mapped", UNSUPPORTED)
            if node.args.get("negate"):
                negate = not negate
            target = self._require_target(node.this, items)
            pattern = self._value(node.expression, target[0], text=True)
            if isinstance(pattern, Param):
                return FilterTemplate(target[0], "=", pattern, target[1], like=True, negate_like=negate)
            op, value = _like_filter(target[0].name, pattern, negate)
            return FilterTemplate(target[0], op, value, target[1])
        if isinstance(node, exp.Escape):
            raise QueryError("LIKE ... ESCAPE cannot be mapped", UNSUPPORTED)
        comparisons = {exp.EQ: "=", exp.NEQ: "!=", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}
        flipped = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
        negated = {"=": "!=", "!=": "="}
        op = comparisons.get(type(node))
        if op is not None:
            left, right = node.this, node.expression
            target = self._target(left, items)
            if target is None:
                target = self._target(right, items)
                if target is None:
                    raise self._unmappable_condition(node)
                left, right, op = right, left, flipped[op]
            elif self._target(right, items) is not None:
                raise QueryError(
                    f"a condition comparing two columns ({node.sql('postgres')[:60]}) cannot be mapped; compare a column with a value",
                    UNSUPPORTED,
                )
            if negate:
                if op not in negated:
                    raise QueryError(f"NOT ({node.sql('postgres')[:60]}) cannot be mapped; write the opposite comparison", UNSUPPORTED)
                op = negated[op]
            value = self._value(right, target[0])
            if value is None:
                raise QueryError(f"comparing with NULL is never true; write {target[0].name} IS NULL / IS NOT NULL", UNSUPPORTED)
            return FilterTemplate(target[0], op, value, target[1])
        raise self._unmappable_condition(node)

    def _unmappable_condition(self, node: exp.Expression) -> QueryError:
        return QueryError(
            f"condition {node.sql('postgres')[:80]!r} cannot be mapped; WHERE / HAVING accept an AND of "
            "<column> =, <>, <, <=, >, >= <value>, IN (...), NOT IN (...), BETWEEN a AND b, IS [NOT] NULL, "
            "LIKE 'abc%' or '%abc%', and OR of equalities on one column", UNSUPPORTED,
        )

    def _require_target(self, node: exp.Expression, items: list[_Item]) -> tuple[ViewField, str | None]:
        target = self._target(node, items)
        if target is None:
            raise QueryError(f"{_strip_parens(node).sql('postgres')[:60]!r} is not a column of view {self.view.name}", UNSUPPORTED)
        return target

    def _or(self, node: exp.Or, items: list[_Item]) -> FilterTemplate:
        parts: list[exp.Expression] = []

        def flatten(n):
            n = _strip_parens(n)
            if isinstance(n, exp.Or):
                flatten(n.this)
                flatten(n.expression)
            else:
                parts.append(n)

        flatten(node)
        conditions = []
        for part in parts:
            condition = self._condition(part, items) if isinstance(part, (exp.EQ, exp.In)) else None
            if condition is None or condition.op not in ("=", "in"):
                raise QueryError(
                    "OR is supported only between equalities on the same column (it becomes IN); "
                    f"{_strip_parens(part).sql('postgres')[:60]!r} cannot be combined with OR", UNSUPPORTED,
                )
            conditions.append(condition)
        first = conditions[0]
        if any((c.field.ref, c.grain) != (first.field.ref, first.grain) for c in conditions):
            raise QueryError(
                "OR across different columns cannot be mapped onto a metrics query (filters are ANDed); "
                "OR is supported only between equalities on the same column, e.g. utm_source = 'a' OR utm_source = 'b'",
                UNSUPPORTED,
            )
        values: list[Any] = []
        for c in conditions:
            values.extend(c.value if c.op == "in" else (c.value,))
        return FilterTemplate(first.field, "in", tuple(values), first.grain)

    def _value(self, node: exp.Expression, target: ViewField, text: bool = False) -> Any:
        """A literal or parameter compared with `target`."""
        node = _strip_parens(node)
        if isinstance(node, exp.Parameter) or isinstance(node, exp.Placeholder):
            raw = node.this.this if isinstance(node.this, exp.Literal) else node.name
            try:
                index = int(str(raw).lstrip("$"))
            except ValueError:
                raise QueryError(f"parameter {node.sql()} is not supported; use $1, $2 ...", UNSUPPORTED) from None
            self.params[index] = "text" if text else target
            return Param(index)
        if isinstance(node, exp.Cast) and isinstance(_strip_parens(node.this), (exp.Parameter, exp.Placeholder)):
            return self._value(node.this, target, text)  # $1::timestamp: the parameter, typed at bind
        if isinstance(node, exp.Anonymous) and node.name.upper() in ("TIMESTAMP", "DATE") and len(node.expressions) == 1:
            node = exp.Cast(this=node.expressions[0], to=exp.DataType.build(node.name.upper()))
        if not folding.is_constant(node):
            columns = [c for c in node.find_all(exp.Column)]
            if columns:
                raise QueryError(
                    f"{node.sql('postgres')[:60]!r} is not a value: it reads column {columns[0].sql('postgres')}; "
                    "compare a column with a constant (a literal, a $n parameter or an expression of constants)", UNSUPPORTED,
                )
            raise QueryError(
                f"{node.sql('postgres')[:60]!r} is not a value; a $n parameter inside an expression cannot be folded: "
                "pass the whole value as the parameter", UNSUPPORTED,
            )
        return folding.fold(node)

    # ---- ORDER BY / LIMIT -----------------------------------------------------------

    def _order(self, select: exp.Select, items: list[_Item]) -> list[OrderBy]:
        order = select.args.get("order")
        if order is None:
            return []
        result = []
        for ordered in order.expressions:
            item = self._resolve_reference(ordered.this, items, "ORDER BY")
            if item not in items:
                raise QueryError(
                    f"ORDER BY {ordered.this.sql('postgres')[:40]}: it is not in the select list; a metrics query can "
                    "order only by the columns it returns", UNSUPPORTED,
                )
            desc = bool(ordered.args.get("desc"))
            nulls_first = ordered.args.get("nulls_first")
            explicit = "NULLS" in ordered.sql("postgres").upper()
            if explicit and bool(nulls_first) != desc:
                raise QueryError(
                    f"ORDER BY {item.name} {'DESC NULLS LAST' if desc else 'ASC NULLS FIRST'} cannot be mapped; "
                    "NULLs sort last ascending and first descending (the PostgreSQL default)", UNSUPPORTED,
                )
            label = item.field.ref
            if any(o.field == label for o in result):
                continue
            result.append(OrderBy(label, desc))
        return result

    def _limits(self, select: exp.Select) -> tuple[Any, Any]:
        limit = offset = None
        node = select.args.get("limit")
        if isinstance(node, exp.Limit):
            limit = self._count(node.expression, "LIMIT")
        elif isinstance(node, exp.Fetch):
            if node.args.get("limit_options") is not None and (
                node.args["limit_options"].args.get("percent") or node.args["limit_options"].args.get("with_ties")
            ):
                raise QueryError("FETCH ... PERCENT / WITH TIES cannot be mapped", UNSUPPORTED)
            count = node.args.get("count")
            limit = 1 if count is None else self._count(count, "FETCH FIRST")
        node = select.args.get("offset")
        if node is not None:
            offset = self._count(node.expression, "OFFSET")
        return limit, offset

    def _count(self, node: exp.Expression, what: str) -> int | Param | None:
        node = _strip_parens(node)
        if isinstance(node, (exp.Parameter, exp.Placeholder)):
            raw = node.this.this if isinstance(node.this, exp.Literal) else node.name
            index = int(str(raw).lstrip("$"))
            self.params[index] = "int8"
            return Param(index)
        if isinstance(node, exp.Null) or (isinstance(node, exp.Var) and node.name.upper() == "ALL"):
            return None
        if folding.is_constant(node):
            value = folding.fold(node)
            if isinstance(value, (decimal.Decimal, float)) and value == int(value) and not isinstance(node, exp.Literal):
                value = int(value)
            if isinstance(value, int) and not isinstance(value, bool):
                if value < 0:
                    raise QueryError(f"{what} must not be negative", "2201W")
                return value
        raise QueryError(f"{what} takes a non-negative integer or a $n parameter", UNSUPPORTED)


def _top_n_join(select: exp.Select) -> bool:
    """A join with a subquery that orders and limits its groups: the top-N series of a chart
    (Superset's `JOIN (SELECT d AS d__, ... GROUP BY d ORDER BY ... LIMIT n) AS series_limit`)."""
    return any(isinstance(j.this, exp.Subquery) and isinstance(j.this.this, exp.Select)
               and j.this.this.args.get("limit") is not None and j.this.this.args.get("group") is not None
               for j in select.args.get("joins") or [])


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    node = _strip_parens(node)
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def _refers_to_inner(node: exp.Expression, names: dict, alias: str | None, outer: exp.Select) -> bool:
    """An ORDER BY column of the outer query naming a subquery column that the outer select
    list does not rename (so the merged select can order by the output name)."""
    return isinstance(node, exp.Column) and not isinstance(node.this, exp.Star) and ident(node.this) in names \
        and ident(node.args.get("table")) in (None, alias)


def _outer_name(node: exp.Column, names: dict, alias: str | None) -> str:
    return ident(node.this)


def _map_values(node: exp.Expression, inner: exp.Expression, target: exp.Expression, change,
                replace: exp.Expression | None = None) -> exp.Expression:
    """`node` (a comparison, IN or BETWEEN, maybe under NOT) with each value `v` compared with
    `target` replaced by change(v), and `target` by `replace` when given."""
    inner = inner.copy()
    def swap(side: exp.Expression) -> exp.Expression:
        return (replace.copy() if replace is not None else side) if _strip_parens(side) == target else change(side)
    if isinstance(inner, exp.In):
        inner.set("this", swap(inner.this))
        inner.set("expressions", [change(v) for v in inner.expressions])
    elif isinstance(inner, exp.Between):
        inner.set("this", swap(inner.this))
        inner.set("low", change(inner.args["low"]))
        inner.set("high", change(inner.args["high"]))
    else:
        inner.set("this", swap(inner.this))
        inner.set("expression", swap(inner.expression))
    return exp.Not(this=inner) if isinstance(node, exp.Not) else inner


def _strip_parens(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node
