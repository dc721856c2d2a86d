"""A rule checker for the SQL the compiler emits for Materialize and RisingWave.

Neither engine runs on this machine, so each documented restriction that the compiled SQL
must respect (temporal filters, joins, functions) is a small rule over the sqlglot AST,
citing the engine's documentation. `check(sql, dialect)` returns the violations;
`violated_rules(sql, dialect)` just their rule ids. Rules can be chosen with `only=` or
turned off with `skip=` (ids from RULES).

Each rule reports an offending node once, under the most specific rule: e.g.
`CURRENT_TIMESTAMP AT TIME ZONE 'UTC'` is reported by `now_at_time_zone`, not also as a
wall-clock call.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

ENGINES = ("materialize", "risingwave")

MZ_TEMPORAL = "https://materialize.com/docs/transform-data/patterns/temporal-filters/"
MZ_NOW = "https://materialize.com/docs/sql/functions/now_and_mz_now/"
MZ_IDIOMATIC_NOW = "https://materialize.com/docs/transform-data/idiomatic-materialize-sql/mz_now/"
MZ_TOP_K = "https://materialize.com/docs/transform-data/idiomatic-materialize-sql/top-k/"
MZ_FUNCTIONS = "https://materialize.com/docs/sql/functions/"
MZ_IDIOMATIC_CHART = "https://materialize.com/docs/transform-data/idiomatic-materialize-sql/appendix/idiomatic-sql-chart/"
RW_TEMPORAL = "https://docs.risingwave.com/processing/sql/temporal-filters"
RW_JOINS = "https://docs.risingwave.com/processing/sql/joins"
RW_NESTED_LOOP = "https://github.com/risingwavelabs/risingwave/issues/22752"
RW_SET_RETURNING = "https://docs.risingwave.com/sql/functions/set-returning"
RW_AGGREGATE = "https://docs.risingwave.com/sql/functions/aggregate"
RW_DATETIME = "https://docs.risingwave.com/sql/functions/datetime"
DUCKDB_NOW = "https://duckdb.org/docs/sql/functions/timestamptz"


@dataclass(frozen=True)
class Violation:
    rule: str
    engine: str
    message: str  # names the offending SQL fragment
    url: str


Finding = tuple[exp.Expression | str, str]  # (offending node or text, what is wrong)
Check = Callable[[exp.Expression, str, str], Iterator[Finding]]  # (tree, sql, dialect)


@dataclass(frozen=True)
class Rule:
    id: str
    engines: tuple[str, ...]
    url: str
    check: Check
    doc: str


RULES: dict[str, Rule] = {}


def rule(rule_id: str, engines: tuple[str, ...], url: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        RULES[rule_id] = Rule(rule_id, engines, url, check, " ".join((check.__doc__ or "").split()))
        return check
    return register


def check(sql: str, dialect: str, only: Collection[str] | None = None, skip: Collection[str] = ()) -> list[Violation]:
    """Violations of `dialect`'s rules in `sql` (only the rules `only` names, when given)."""
    if dialect not in ENGINES:
        raise ValueError(f"no streaming rules for dialect {dialect!r}; rules exist for {', '.join(ENGINES)}")
    unknown = (set(only or ()) | set(skip)) - RULES.keys()
    if unknown:
        raise ValueError(f"unknown rules {sorted(unknown)}; rules: {', '.join(RULES)}")
    tree = _without_read_fill(sqlglot.parse_one(sql, read=dialect))
    violations = []
    for r in RULES.values():
        if dialect not in r.engines or r.id in skip or (only is not None and r.id not in only):
            continue
        for node, problem in r.check(tree, sql, dialect):
            fragment = node if isinstance(node, str) else _fragment(node, dialect)
            violations.append(Violation(r.id, dialect, f"{problem}: {fragment}", r.url))
    return violations


def violated_rules(sql: str, dialect: str, **kwargs) -> set[str]:
    return {v.rule for v in check(sql, dialect, **kwargs)}


# ---- AST helpers -------------------------------------------------------------------------

FILL_GROUPS = "_series_groups"  # compiler._FILL_GROUPS


def _without_read_fill(tree: exp.Expression) -> exp.Expression:
    """The tree with the compiler's read-time fill of a rolling series reduced to its groups level.

    A streaming engine maintains only the buckets whose windows hold rows; a query's read fills
    the empty ones with `(SELECT MIN(d), MAX(d) FROM _series_groups) AS bounds, generate_series(
    bounds.lo, bounds.hi, step) AS s(bucket) LEFT JOIN _series_groups AS g ON g.d = s.bucket`.
    That is a one-shot batch read, never part of a materialization (deploy stores the groups
    level): both engines run generate_series with computed bounds and such joins in batch
    queries (RW_SET_RETURNING shows the timestamp form; MZ_FUNCTIONS lists generate_series), so
    only the groups level below it is checked. Anything else stays checked: the fill is
    recognised by its exact shape only.
    """
    for select in list(tree.find_all(exp.Select)):
        ctes = select.args.get("with_")
        if ctes is None or FILL_GROUPS not in {c.alias for c in ctes.expressions} or not _is_read_fill(select):
            continue
        select.set("expressions", [exp.Star()])
        select.set("from_", exp.From(this=exp.to_table(FILL_GROUPS)))
        select.set("joins", None)
    return tree


def _is_read_fill(select: exp.Select) -> bool:
    source = select.args["from_"].this
    joins = select.args.get("joins") or []
    if not (isinstance(source, exp.Subquery) and source.alias == "bounds" and len(joins) == 2):
        return False
    bounds_from = source.this.args.get("from_")
    series, groups = joins
    return (
        bounds_from is not None and isinstance(bounds_from.this, exp.Table) and bounds_from.this.name == FILL_GROUPS
        and not (source.this.args.get("joins") or source.this.args.get("where"))
        and isinstance(series.this, exp.Table) and isinstance(series.this.this, exp.Anonymous | exp.GenerateSeries)
        and series.args.get("on") is None
        and groups.side == "LEFT" and isinstance(groups.this, exp.Table) and groups.this.name == FILL_GROUPS
        and isinstance(groups.args.get("on"), exp.EQ)
    )

_COMPARISONS = (exp.EQ, exp.LT, exp.LTE, exp.GT, exp.GTE)
_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg)
_PERCENTILES = (exp.PercentileCont, exp.PercentileDisc, exp.Median)
# Clock readings other than NOW()/CURRENT_TIMESTAMP (sqlglot parses both of those to CurrentTimestamp).
_CLOCK_NODES = (exp.CurrentDate, exp.CurrentTime, exp.Localtimestamp, exp.CurrentDatetime)
_CLOCK_NAMES = {"clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday", "localtime"}
_TABLE_FUNCTIONS = (exp.ExplodingGenerateSeries, exp.GenerateSeries, exp.Unnest, exp.Anonymous)


def _fragment(node: exp.Expression, dialect: str, limit: int = 160) -> str:
    """The node as SQL, NOW() shown as NOW() (sqlglot parses NOW() to CURRENT_TIMESTAMP)."""
    def as_now(n: exp.Expression) -> exp.Expression:
        if isinstance(n, exp.CurrentTimestamp) and not isinstance(n.parent, exp.AtTimeZone):
            return exp.Anonymous(this="NOW")
        return n

    text = node.transform(as_now).sql(dialect=dialect)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unparen(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _outer(node: exp.Expression) -> exp.Expression:
    """The node, or the parentheses around it: what its operator sees."""
    while isinstance(node.parent, exp.Paren):
        node = node.parent
    return node


def _mz_nows(tree: exp.Expression) -> Iterator[exp.Expression]:
    return (f for f in tree.find_all(exp.Anonymous) if f.name.lower() == "mz_now")


def _nows(tree: exp.Expression) -> Iterator[exp.Expression]:
    """NOW() / CURRENT_TIMESTAMP, but not the DuckDB `CURRENT_TIMESTAMP AT TIME ZONE` form (own rule)."""
    return (n for n in tree.find_all(exp.CurrentTimestamp) if not isinstance(n.parent, exp.AtTimeZone))


def _has(node: exp.Expression, is_clock: Callable[[exp.Expression], bool]) -> bool:
    return any(is_clock(n) for n in node.walk())


def _is_mz_now(node: exp.Expression) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.lower() == "mz_now"


def _is_now(node: exp.Expression) -> bool:
    return isinstance(node, exp.CurrentTimestamp)


def _clause(node: exp.Expression) -> str:
    """Where `node` sits: 'where', 'having', 'join on', 'aggregate', 'aggregate filter', 'window',
    'generate_series stop', or 'select list' (any other part of a SELECT: projections, GROUP BY...)."""
    child = node
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.Where):
            return "aggregate filter" if isinstance(parent.parent, exp.Filter) else "where"
        if isinstance(parent, exp.Having):
            return "having"
        if isinstance(parent, (exp.AggFunc, exp.Filter)):
            return "aggregate"
        if isinstance(parent, exp.Window):
            return "window"
        if isinstance(parent, exp.Join) and child is parent.args.get("on"):
            return "join on"
        if isinstance(parent, exp.ExplodingGenerateSeries | exp.GenerateSeries) and child is parent.args.get("end"):
            return "generate_series stop"
        if isinstance(parent, (exp.Select, exp.Subquery, exp.Union)):
            return "select list"
        child, parent = parent, parent.parent
    return "select list"


def _comparison_of(clock: exp.Expression, through: tuple[type, ...] = ()) -> tuple[exp.Expression, list[exp.Expression]] | None:
    """(comparison, its other operands) when `clock` is one side of =, <, <=, >, >= or BETWEEN.

    `through` lists the operators allowed between the clock and the comparison (RisingWave's
    `NOW() - INTERVAL '1 hour'`); none for Materialize, where mz_now() must stand alone.
    """
    side = _outer(clock)
    while isinstance(side.parent, through):
        side = _outer(side.parent)
    comparison = side.parent
    if isinstance(comparison, _COMPARISONS):
        return comparison, [comparison.expression if comparison.this is side else comparison.this]
    if isinstance(comparison, exp.Between):  # desugars to a conjunction of comparisons
        if comparison.this is side:
            return comparison, [comparison.args["low"], comparison.args["high"]]
        return comparison, [comparison.this]
    return None


_NOW_ARITHMETIC = (exp.Paren, *_ARITHMETIC, exp.DateTrunc, exp.TimestampTrunc)


def _maximal_ors(tree: exp.Expression) -> Iterator[exp.Or]:
    """Every OR not itself a disjunct of a larger OR (parentheses looked through)."""
    for node in tree.find_all(exp.Or):
        if not isinstance(_outer(node).parent, exp.Or):
            yield node


def _conjuncts(condition: exp.Expression) -> list[exp.Expression]:
    condition = _unparen(condition)
    if isinstance(condition, exp.And):
        return [c for part in (condition.this, condition.expression) for c in _conjuncts(part)]
    return [condition]


def _tables_of(node: exp.Expression) -> set[str]:
    return {c.table for c in node.find_all(exp.Column)}


def _is_equi_condition(condition: exp.Expression) -> bool:
    """A top-level conjunct `a = b` (or IS NOT DISTINCT FROM) with columns of different relations on each side."""
    for part in _conjuncts(condition):
        if isinstance(part, (exp.EQ, exp.NullSafeEQ)):
            left, right = _tables_of(part.this), _tables_of(part.expression)
            if left and right and left != right:
                return True
    return False


def _joins_without_equality(tree: exp.Expression, dialect: str) -> Iterator[Finding]:
    for join in tree.find_all(exp.Join):
        item = join.this
        if isinstance(item, exp.Lateral) or (isinstance(item, exp.Table) and isinstance(item.this, _TABLE_FUNCTIONS)):
            continue  # a table function over earlier FROM items: a lateral flat map, not a join
        if join.args.get("using") or join.args.get("method") == "NATURAL":
            continue
        on = join.args.get("on")
        name = item.alias_or_name or "(subquery)"
        if on is None:
            kind = "CROSS JOIN" if join.args.get("kind") == "CROSS" else "comma join"
            yield (join if name == "(subquery)" or isinstance(item, exp.Values) else f"{kind} {name}"), f"{kind} with no equality condition"
        elif not _is_equi_condition(on):
            side = f"{join.side} " if join.side else ""
            yield f"{side}JOIN {name} ON {_fragment(on, dialect)}", "join whose ON has no equality between the two sides"


def _percentiles(tree: exp.Expression) -> Iterator[Finding]:
    for node in tree.find_all(*_PERCENTILES):
        shown = node.parent if isinstance(node.parent, exp.WithinGroup) else node
        yield shown, f"{node.sql_name()} aggregate"


def _other_clocks(tree: exp.Expression) -> Iterator[exp.Expression]:
    yield from tree.find_all(*_CLOCK_NODES)
    yield from (f for f in tree.find_all(exp.Anonymous) if f.name.lower() in _CLOCK_NAMES)


# ---- Materialize ---------------------------------------------------------------------------

@rule("mz_now_placement", ("materialize",), MZ_TEMPORAL)
def _mz_now_placement(tree, sql, dialect):
    """Materialize: "you can only use mz_now() to establish a temporal filter" where "mz_now()
    appears in a WHERE or HAVING clause", and "you cannot use temporal filters in the WHERE
    clause of an aggregate FILTER expression". So not in a SELECT list, an aggregate, or JOIN ON."""
    for call in _mz_nows(tree):
        where = _clause(call)
        if where not in ("where", "having"):
            yield call.parent or call, f"mz_now() in the {where}, not in WHERE/HAVING"


@rule("mz_now_arithmetic", ("materialize",), MZ_IDIOMATIC_NOW)
def _mz_now_arithmetic(tree, sql, dialect):
    """Materialize: "you cannot use date/time operations directly on mz_now() to calculate a
    timestamp in the past or future. Instead, rewrite the query expression to move the
    operation to the other side of the comparison" (`mz_now() - INTERVAL '5min' > t` is not supported)."""
    for call in _mz_nows(tree):
        parent = _outer(call).parent
        if isinstance(parent, _ARITHMETIC):
            yield parent, "arithmetic on mz_now()"


@rule("mz_now_comparison", ("materialize",), MZ_NOW)
def _mz_now_comparison(tree, sql, dialect):
    """Materialize: "mz_now() must be used with one of the following comparison operators: =, <,
    <=, >, >=, or an operator that desugars to them or to a conjunction (AND) of them" and "can
    only be compared to either a numeric expression or a timestamp expression not containing mz_now()"."""
    for call in _mz_nows(tree):
        if isinstance(_outer(call).parent, _ARITHMETIC) or _clause(call) not in ("where", "having"):
            continue  # mz_now_arithmetic, mz_now_placement
        found = _comparison_of(call)
        if found is None:
            yield _outer(call).parent or call, "mz_now() not compared with =, <, <=, >, >="
        elif any(_has(other, _is_mz_now) for other in found[1]):
            yield found[0], "mz_now() compared with an expression containing mz_now()"


@rule("mz_now_or", ("materialize",), MZ_IDIOMATIC_NOW)
def _mz_now_or(tree, sql, dialect):
    """Materialize, in a materialized or indexed view (what the compiler's SQL is for): "mz_now()
    clauses can only be combined using an AND, and all top-level WHERE or HAVING conditions must be
    combined using an AND, even if the mz_now() clause is nested"; rewrite an OR as UNION ALL."""
    for disjunction in _maximal_ors(tree):
        if _has(disjunction, _is_mz_now):
            yield disjunction, "OR over a temporal filter"


@rule("mz_row_number_dedupe", ("materialize",), MZ_TOP_K)
def _mz_row_number(tree, sql, dialect):
    """Materialize recomputes a window function's whole partition on every change; for Top-K with
    K = 1 idiomatic Materialize SQL is `SELECT DISTINCT ON (...) ... ORDER BY ...`, not ROW_NUMBER()."""
    for window in tree.find_all(exp.Window):
        if isinstance(window.this, exp.RowNumber):
            yield window, "ROW_NUMBER() window (use DISTINCT ON)"


@rule("mz_percentile", ("materialize",), MZ_FUNCTIONS)
def _mz_percentile(tree, sql, dialect):
    """Materialize's function reference lists no PERCENTILE_CONT, PERCENTILE_DISC or MEDIAN
    aggregate; SQL relying on them is not known to run there."""
    yield from _percentiles(tree)


@rule("mz_wall_clock", ("materialize",), MZ_NOW)
def _mz_wall_clock(tree, sql, dialect):
    """Materialize: now() "returns the value of the system clock when the transaction began"; it
    cannot be used when creating (materialized) views, where "now" must be an mz_now() temporal filter."""
    for node in (*_nows(tree), *_other_clocks(tree)):
        yield node.parent or node, f"wall-clock {node.sql(dialect)} in a view"


@rule("mz_join_equality", ("materialize",), MZ_IDIOMATIC_CHART)
def _mz_join_equality(tree, sql, dialect):
    """Materialize maintains joins incrementally by their equality keys; a join without an equality
    between its two sides is a cross join (idiomatic Materialize SQL rewrites conditions into
    equi-joins, e.g. ANY() as a join on UNNEST)."""
    yield from _joins_without_equality(tree, dialect)


# ---- RisingWave ----------------------------------------------------------------------------

@rule("rw_now_placement", ("risingwave",), RW_TEMPORAL)
def _rw_now_placement(tree, sql, dialect):
    """RisingWave: a temporal filter "is a filter condition with a NOW() function call. It can only
    be used in the WHERE and HAVING clauses" (and, as a dynamic filter, in JOIN ON); NOW() in a
    SELECT list or an aggregate cannot be maintained by a streaming job."""
    for now in _nows(tree):
        where = _clause(now)
        if where not in ("where", "having", "join on", "generate_series stop"):
            yield now.parent or now, f"NOW() in the {where}"


@rule("rw_temporal_filter_form", ("risingwave",), RW_TEMPORAL)
def _rw_temporal_form(tree, sql, dialect):
    """RisingWave: a valid temporal filter has "a comparison operator, among <, >, <=, >=, = and
    BETWEEN", "a time expression of the columns in the base relation as one comparing side" and "a
    non-decreasing time expression with exactly one NOW() function call as the other comparing side"."""
    for now in _nows(tree):
        if _clause(now) not in ("where", "having", "join on"):
            continue  # rw_now_placement
        found = _comparison_of(now, _NOW_ARITHMETIC)
        if found is None:
            yield now.parent or now, "NOW() not compared with <, >, <=, >=, = or BETWEEN"
        elif any(_has(other, _is_now) for other in found[1]):
            yield found[0], "NOW() on both sides of the comparison"


@rule("rw_temporal_filter_or", ("risingwave",), RW_TEMPORAL)
def _rw_temporal_or(tree, sql, dialect):
    """RisingWave: "A temporal filter condition cannot be disjoined with another temporal filter
    using the OR operator", e.g. `(a < 1) OR (t > NOW() - INTERVAL '1 hour' AND t < NOW() - ...)`
    is invalid; each AND-ed expression may hold only one temporal filter under an OR."""
    for disjunction in _maximal_ors(tree):
        if sum(1 for _ in _nows(disjunction)) > 1:
            yield disjunction, "two temporal filters under one OR"


@rule("rw_temporal_filter_utc", ("risingwave",), RW_DATETIME)
def _rw_temporal_utc(tree, sql, dialect):
    """RisingWave's NOW() is a timestamptz; the models' naive UTC timestamps must meet it as
    `col AT TIME ZONE 'UTC'` (timestamp AT TIME ZONE zone -> timestamptz). A bare
    CAST(col AS TIMESTAMPTZ) reads the naive value in the session time zone, so the window
    would shift with the session's TimeZone setting."""
    for now in _nows(tree):
        found = _comparison_of(now, _NOW_ARITHMETIC) if _clause(now) in ("where", "having", "join on") else None
        if found is None:
            continue
        columns = [(c, other) for other in found[1] for c in other.find_all(exp.Column)]
        if not columns or not all(_in_utc(c, other) for c, other in columns):
            yield found[0], "the time compared with NOW() is not an explicit `AT TIME ZONE 'UTC'` conversion"


def _in_utc(column: exp.Column, side: exp.Expression) -> bool:
    node: exp.Expression | None = column
    while node is not None and node is not side.parent:
        if isinstance(node, exp.AtTimeZone) and node.args["zone"].name.upper() == "UTC":
            return True
        node = node.parent
    return False


@rule("rw_nested_loop_join", ("risingwave",), RW_NESTED_LOOP)
def _rw_nested_loop(tree, sql, dialect):
    """RisingWave streaming joins are hash joins on equality keys (regular joins: "based on certain
    conditions, such as whether the values of some columns are equal", see RW_JOINS); a join without
    one fails with "Not supported: streaming nested-loop join" (cross, comma, range-only joins, a
    join to VALUES without equality)."""
    yield from _joins_without_equality(tree, dialect)


@rule("rw_generate_series", ("risingwave",), RW_SET_RETURNING)
def _rw_generate_series(tree, sql, dialect):
    """RisingWave streams generate_series only in its "advanced usage": a constant start, NOW() as
    the stop and a constant step, producing a new row as NOW() advances (see also
    https://docs.risingwave.com/processing/sql/periodic-query); a series over other inputs (e.g.
    MIN/MAX of a table) is not maintained incrementally."""
    for series in tree.find_all(exp.ExplodingGenerateSeries, exp.GenerateSeries):
        start, stop, step = (series.args.get(k) for k in ("start", "end", "step"))
        constant = all(x is None or not list(x.find_all(exp.Column, exp.AggFunc, exp.Subquery)) for x in (start, step))
        if not (constant and stop is not None and _is_now(_unparen(stop))):
            yield series, "generate_series not of the form generate_series(constant, NOW(), constant)"


@rule("rw_percentile", ("risingwave",), RW_AGGREGATE)
def _rw_percentile(tree, sql, dialect):
    """RisingWave documents percentile_cont, percentile_disc and mode as ordered-set aggregates for
    batch queries; they are not maintained by streaming jobs (materialized views), so the streaming
    SQL must not use them (nor MEDIAN)."""
    yield from _percentiles(tree)


@rule("rw_clock", ("risingwave",), RW_TEMPORAL)
def _rw_clock(tree, sql, dialect):
    """RisingWave maintains "now" only as NOW() in a temporal filter; other clock readings
    (CURRENT_TIMESTAMP, CURRENT_DATE, LOCALTIMESTAMP, clock_timestamp()...) are not temporal
    filters. sqlglot parses NOW() and CURRENT_TIMESTAMP alike, so the keyword is found in the tokens."""
    tokens = sqlglot.tokenize(sql, read=dialect)
    for i, token in enumerate(tokens):
        if token.token_type == TokenType.CURRENT_TIMESTAMP and token.text.upper() == "CURRENT_TIMESTAMP":
            after = [t.text.upper() for t in tokens[i + 1 : i + 4]]
            if after != ["AT", "TIME", "ZONE"]:  # now_at_time_zone
                yield sql[token.start : token.end + 1], "CURRENT_TIMESTAMP (write NOW() in a temporal filter)"
    for node in _other_clocks(tree):
        yield node, "clock function other than NOW()"


# ---- both engines --------------------------------------------------------------------------

@rule("now_at_time_zone", ENGINES, DUCKDB_NOW)
def _now_at_time_zone(tree, sql, dialect):
    """`CURRENT_TIMESTAMP AT TIME ZONE 'UTC'` is how the compiler writes "now" for DuckDB and
    PostgreSQL; on the streaming engines "now" must be their temporal filter (mz_now() on
    Materialize, NOW() on RisingWave), so this form must never reach them."""
    for node in tree.find_all(exp.AtTimeZone):
        if isinstance(_unparen(node.this), exp.CurrentTimestamp):
            yield node, "DuckDB-style now"
