"""`deploy` and `refresh`: the model's objects in the engine, changed only where they changed.

What is deployed is planned purely in compile/ddl.py (one view per model, one object per
materialization, each with a digest of its definition). Here that plan is diffed against a
metadata table in the deploy schema, `metrics_layer_deployments` (name, kind, object, digest,
definition, model version, refresh interval, deployed at, refreshed at), and the difference is
applied:

- PostgreSQL and DuckDB have transactional DDL: every create, replace, drop and the metadata
  rows go in one transaction, so a deploy that fails or is killed halfway leaves the engine as
  it was. Objects keep their names (`<schema>.<model>`, `<schema>.<materialization>`).
- Materialize and RisingWave do not: a changed object is created under a new name
  (`<name>__<digest>`), the metadata row is swapped to it, and only then is the old one
  dropped. Until the swap every reader, routing included, keeps reading the old object.

Refresh (PostgreSQL and DuckDB; streaming engines keep materializations current) recomputes a
materialization from the definition deployed, in one transaction with its `refreshed_at`, so
the time recorded is the transaction time its trailing windows were computed at. A DuckDB file
that `serve` opens read-only (so that the CLI can read it too) is refreshed into a copy beside
it instead (engine.refreshed_copy, an attached database): `<schema>.<materialization>` there,
with a row of `metrics_layer_refreshes` (name, digest, refreshed_at) in the same transaction.
Reading what is deployed takes the copy's row where its digest is the deployed one and it is
the fresher.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import sqlglot
from sqlglot import exp

from .compile import dialects
from .compile.ddl import MATERIALIZATION, MODEL_VIEW, DeployObject, plan_objects
from .compile.routing import Route
from .engines import Engine, EngineError
from .model.types import SemanticModel

METADATA_TABLE = "metrics_layer_deployments"
REFRESHES_TABLE = "metrics_layer_refreshes"  # in a refreshed copy: which definition, refreshed when
DEFAULT_SCHEMA = "metrics_layer"

_COLUMNS = ("name", "kind", "object", "digest", "definition", "model_version", "refresh_seconds",
            "deployed_at", "refreshed_at")
_TYPES = ("TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT", "TIMESTAMP", "TIMESTAMP")
_NOW = exp.Cast(this=exp.CurrentTimestamp(), to=exp.DataType.build("TIMESTAMP"))  # the transaction's time, UTC


class DeployError(Exception):
    """A deploy or refresh that could not be applied; the engine is as it was."""


@dataclass(frozen=True)
class Deployed:
    """One metadata row: an object deploy put into the engine."""

    name: str
    kind: str
    object: str  # the relation's name in the schema (differs from `name` after a swap)
    digest: str
    definition: str
    model_version: str
    refresh_seconds: int | None
    deployed_at: dt.datetime
    refreshed_at: dt.datetime | None
    catalog: str | None = None  # where the rows are read from when not the database itself: a refreshed copy

    def age(self, now: dt.datetime) -> float | None:
        return None if self.refreshed_at is None else (now - self.refreshed_at).total_seconds()


@dataclass
class Change:
    action: str  # create | replace | drop | unchanged
    name: str
    kind: str
    statements: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """What a deploy does, statement by statement; `statements` run in this order."""

    schema: str
    dialect: str
    model_version: str
    changes: list[Change]
    statements: list[str]
    transactional: bool

    @property
    def changed(self) -> list[Change]:
        return [c for c in self.changes if c.action != "unchanged"]

    def summary(self) -> list[str]:
        lines = [f"{c.action:9} {_label(c.kind)} {self.schema}.{c.name}" for c in self.changes]
        counts = {a: sum(c.action == a for c in self.changes) for a in ("create", "replace", "drop", "unchanged")}
        lines.append(", ".join(f"{n} to {a}" if a != "unchanged" else f"{n} unchanged" for a, n in counts.items() if n)
                     or "nothing to deploy: the model declares no models")
        return lines


def _label(kind: str) -> str:
    return "materialization" if kind == MATERIALIZATION else "model view   "


# ---- reading what is deployed ------------------------------------------------------------

def _table(schema: str, name: str, catalog: str | None = None) -> exp.Table:
    return exp.Table(this=exp.to_identifier(name, quoted=True), db=exp.to_identifier(schema, quoted=True),
                     catalog=exp.to_identifier(catalog, quoted=True) if catalog else None)


def _metadata(schema: str) -> exp.Table:
    return _table(schema, METADATA_TABLE)


def _exists(engine: Engine, schema: str, table: str, catalog: str | None = None) -> bool:
    exists = (exp.select("1").from_(exp.Table(this=exp.to_identifier("tables"), db=exp.to_identifier("information_schema")))
              .where(exp.column("table_schema").eq(exp.Literal.string(schema)))
              .where(exp.column("table_name").eq(exp.Literal.string(table))))
    if catalog is not None:
        exists = exists.where(exp.column("table_catalog").eq(exp.Literal.string(catalog)))
    return bool(engine.execute(exists.sql(dialect=engine.dialect)).rows)


def read_deployed(engine: Engine, schema: str) -> dict[str, Deployed]:
    """The metadata rows by name; empty when nothing was deployed into `schema` yet. A
    materialization refreshed more recently into the engine's refreshed copy, from the same
    definition, is read from there."""
    if not _exists(engine, schema, METADATA_TABLE):
        return {}
    rows = engine.execute(exp.select(*_COLUMNS).from_(_metadata(schema)).sql(dialect=engine.dialect)).rows
    deployed = {row[0]: Deployed(*row) for row in rows}
    copy = engine.refreshed_copy
    if copy is None or not _exists(engine, schema, REFRESHES_TABLE, copy):
        return deployed
    records = engine.execute(exp.select("name", "digest", "refreshed_at").from_(_table(schema, REFRESHES_TABLE, copy))
                             .sql(dialect=engine.dialect)).rows
    for name, digest, refreshed_at in records:
        d = deployed.get(name)
        if d is not None and d.kind == MATERIALIZATION and d.digest == digest and (
                d.refreshed_at is None or refreshed_at > d.refreshed_at):
            deployed[name] = replace(d, object=name, refreshed_at=refreshed_at, catalog=copy)
    return deployed


def current_schema(engine: Engine) -> str:
    return str(engine.execute("SELECT current_schema()").rows[0][0])


# ---- planning ----------------------------------------------------------------------------

def model_version(resolved: list[tuple[DeployObject, exp.Select, str]]) -> str:
    """Identifies the whole deployed model: a digest of every object's digest."""
    return hashlib.sha256("\n".join(f"{o.name}:{digest}" for o, _, digest in resolved).encode()).hexdigest()[:12]


def plan_deploy(model: SemanticModel, engine: Engine, schema: str = DEFAULT_SCHEMA,
                options: dict[str, str] | None = None) -> Plan:
    """The changes that bring `schema` in the engine to the model, and their statements."""
    dialect = dialects.get(engine.dialect)
    deployed = read_deployed(engine, schema)
    home = current_schema(engine)
    resolved = _resolved(model, engine.dialect, home)
    objects = [o for o, _, _ in resolved]
    version = model_version(resolved)
    options = options or {}
    wanted = {o.name: o for o in objects}
    clash = [o.name for o in objects if o.name == METADATA_TABLE]
    if clash:
        raise DeployError(f"'{METADATA_TABLE}' is the name of deploy's metadata table; rename that model or materialization")
    names = [o.name for o in objects]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise DeployError(f"a model and a materialization share the name {', '.join(doubled)}: both would be "
                          f"{schema}.<name>; rename the materialization")

    render = lambda statement: statement.sql(dialect=engine.dialect)  # noqa: E731
    changes: list[Change] = []
    creates: list[str] = []  # new objects, in dependency order
    drops: list[str] = []  # old objects (dropped before a re-create on transactional engines, after on others)
    rows: list[tuple] = []  # metadata rows to write
    for obj, definition, digest in resolved:
        old = deployed.get(obj.name)
        if old is not None and old.digest == digest and old.kind == obj.kind:
            changes.append(Change("unchanged", obj.name, obj.kind))
            continue
        target = obj.name if dialect.transactional_ddl else f"{obj.name}__{digest[:8]}"
        statements = _create(dialect, _table(schema, target), definition, obj, options)
        if old is not None:
            drops.append(render(dialect.drop(_table(schema, old.object), old.kind == MATERIALIZATION)))
        creates.extend(render(s) for s in statements)
        refresh = obj.refresh.seconds if obj.refresh is not None and obj.kind == MATERIALIZATION else None
        rows.append((obj.name, obj.kind, target, digest, render(definition), version, refresh))
        changes.append(Change("replace" if old is not None else "create", obj.name, obj.kind, [render(s) for s in statements]))
    for name, old in deployed.items():
        if name not in wanted:
            drops.append(render(dialect.drop(_table(schema, old.object), old.kind == MATERIALIZATION)))
            changes.append(Change("drop", name, old.kind, [drops[-1]]))

    meta = _metadata(schema)
    gone = [c.name for c in changes if c.action in ("replace", "drop")]
    metadata = []
    if gone:
        metadata.append(render(exp.Delete(this=meta.copy(), where=exp.Where(
            this=exp.column("name").isin(*[exp.Literal.string(n) for n in gone])))))
    for name, kind, target, digest, definition, version_, refresh in rows:
        values = [exp.Literal.string(v) for v in (name, kind, target, digest, definition, version_)]
        values += [exp.Literal.number(refresh) if refresh is not None else exp.Null(), _NOW.copy(),
                   _NOW.copy() if kind == MATERIALIZATION else exp.Null()]
        metadata.append(render(exp.insert(exp.select(*values), meta.copy(), columns=list(_COLUMNS))))
    if changes and all(c.action == "unchanged" for c in changes):
        statements = []
    else:
        setup = [render(exp.Create(this=exp.Table(db=exp.to_identifier(schema, quoted=True)), kind="SCHEMA", exists=True)),
                 render(exp.Create(this=exp.Schema(this=meta.copy(), expressions=[
                     exp.ColumnDef(this=exp.to_identifier(c), kind=exp.DataType.build(t)) for c, t in zip(_COLUMNS, _TYPES)]),
                     kind="TABLE", exists=True))]
        if dialect.transactional_ddl:  # all in one transaction: drop first, then create under the same names
            statements = setup + drops + creates + metadata
        else:  # new names first, then the swap of the metadata rows, then the old objects go
            statements = setup + creates + metadata + drops
    return Plan(schema, engine.dialect, version, changes, statements, dialect.transactional_ddl)


def _create(dialect, table: exp.Table, definition: exp.Select, obj: DeployObject, options) -> list[exp.Expression]:
    if obj.kind == MODEL_VIEW:
        return dialect.create_view(table, definition)
    return dialect.create_materialization(table, definition, obj.key, options)


def _qualified(select: exp.Select, schema: str) -> exp.Select:
    """The definition with every unqualified table read from `schema` (the connection's own).

    A view in the deploy schema named like a model must not read itself: DuckDB binds a
    view's table names when it is queried, relative to the view's own schema.
    """
    select = select.copy()
    ctes = {cte.alias_or_name for cte in select.find_all(exp.CTE)}
    for table in select.find_all(exp.Table):
        if not table.args.get("db") and isinstance(table.this, exp.Identifier) and table.name not in ctes:
            table.set("db", exp.to_identifier(schema, quoted=True))
    return select


def _resolved(model: SemanticModel, dialect: str, home: str) -> list[tuple[DeployObject, exp.Select, str]]:
    """(object, its definition with tables qualified by `home`, digest of that definition).

    The digest covers the qualified SQL: an object deployed over other tables (another
    schema's) never passes for this model's. Kept with the model (its compile cache) so that
    routing does not re-plan per query."""
    key = ("deploy plan", dialect, home)
    resolved = model.compile_cache.get(key)
    if resolved is None:
        resolved = []
        for obj in plan_objects(model, dialect):
            definition = _qualified(obj.definition, home)
            text = f"{obj.kind}\n{definition.sql(dialect=dialect)}"
            resolved.append((obj, definition, hashlib.sha256(text.encode()).hexdigest()[:16]))
        model.compile_cache[key] = resolved
    return resolved


# ---- applying ----------------------------------------------------------------------------

def apply(engine: Engine, plan: Plan, progress: Callable[[int, int, str], None] | None = None) -> None:
    """Run the plan's statements; on a transactional engine all take effect or none does.

    `progress(done, total, statement)` is called before each statement."""
    total = len(plan.statements)

    def reported():
        for i, statement in enumerate(plan.statements):
            if progress is not None:
                progress(i, total, statement)
            yield statement

    if plan.transactional:  # one transaction on one connection, reporting as it goes
        _run(engine, reported(), True)
    else:
        for statement in reported():
            _run(engine, [statement], False)


def _run(engine: Engine, statements: Iterable[str], transaction: bool) -> None:
    try:
        engine.run_statements(statements, transaction=transaction)
    except EngineError as e:
        state = "nothing was changed" if transaction else "objects already created stay unused until the next deploy"
        raise DeployError(f"deploy failed, {state}: {e.message}") from None


def refresh(engine: Engine, schema: str = DEFAULT_SCHEMA, names: list[str] | None = None,
            due_only: bool = False, now: dt.datetime | None = None) -> list[str]:
    """Recompute deployed materializations (all, those in `names`, or with `due_only` those
    whose age reached half their refresh interval); returns the names refreshed."""
    dialect = dialects.get(engine.dialect)
    deployed = {n: d for n, d in read_deployed(engine, schema).items() if d.kind == MATERIALIZATION}
    if names:
        unknown = [n for n in names if n not in deployed]
        if unknown:
            raise DeployError(f"not deployed in {schema}: {', '.join(unknown)}; deployed materializations: "
                              f"{', '.join(sorted(deployed)) or 'none (run metrics-layer deploy)'}")
        deployed = {n: deployed[n] for n in names}
    now = now or utc_now()
    done = []
    for name, d in deployed.items():
        if due_only:
            age = d.age(now)
            if d.refresh_seconds is None or (age is not None and age < d.refresh_seconds / 2):
                continue
        select = sqlglot.parse_one(d.definition, read=engine.dialect)  # our own SQL, as deployed
        if engine.refreshed_copy is not None:
            statements = _refresh_into_copy(engine.refreshed_copy, schema, d, select)
        else:
            statements = dialect.refresh_materialization(_table(schema, d.object), select)
            if not statements:
                continue
            statements.append(exp.update(_metadata(schema), {"refreshed_at": _NOW.copy()},
                                         where=exp.column("name").eq(exp.Literal.string(name))))
        try:
            engine.run_statements([s.sql(dialect=engine.dialect) for s in statements])
        except EngineError as e:
            raise DeployError(f"refresh of {schema}.{name} failed, it keeps its last rows: {e.message}") from None
        done.append(name)
    return done


def _refresh_into_copy(copy: str, schema: str, d: Deployed, select: exp.Select) -> list[exp.Expression]:
    """The materialization recomputed into the refreshed copy (one database written per DuckDB
    transaction: only the copy is), with its record of which definition, and when."""
    records = _table(schema, REFRESHES_TABLE, copy)
    columns = [exp.ColumnDef(this=exp.to_identifier(c), kind=exp.DataType.build(t))
               for c, t in (("name", "TEXT"), ("digest", "TEXT"), ("refreshed_at", "TIMESTAMP"))]
    name = exp.Literal.string(d.name)
    return [
        exp.Create(this=exp.Table(this=exp.to_identifier(schema, quoted=True), db=exp.to_identifier(copy, quoted=True)),
                   kind="SCHEMA", exists=True),
        exp.Create(this=_table(schema, d.name, copy), kind="TABLE", expression=select, replace=True),
        exp.Create(this=exp.Schema(this=records, expressions=columns), kind="TABLE", exists=True),
        exp.delete(records.copy(), where=exp.column("name").eq(name)),
        exp.insert(exp.select(name, exp.Literal.string(d.digest), _NOW.copy()), records.copy()),
    ]


def _kept_after(mat, d: "Deployed", streaming: bool, now: dt.datetime) -> dt.datetime | None:
    """With a retention, the moment after which every bucket is stored: the last refresh less
    the retention; on a streaming engine, whose "now" moves on, now (plus a minute for the
    engine's clock running ahead), rounded up to the minute so that compiled SQL stays cached."""
    if mat.retention is None:
        return None
    age = dt.timedelta(seconds=mat.retention[1].seconds)
    if not streaming:
        return d.refreshed_at - age if d.refreshed_at is not None else None
    ahead = now + dt.timedelta(minutes=2) - age
    return ahead.replace(second=0, microsecond=0)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


# ---- routing -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Routes:
    """The materializations queries may read, and why each other deployed one may not."""

    routes: tuple[Route, ...] = ()
    deployed: dict = field(default_factory=dict)  # name -> Deployed, for freshness
    lags: dict = field(default_factory=dict)  # name -> (seconds behind the wall clock, how known): engines that keep them current
    excluded: tuple[tuple[str, str], ...] = ()  # (materialization, why not)


def read_lags(engine: Engine, schema: str, deployed: dict[str, Deployed]) -> dict[str, tuple[float, str]]:
    """How far each deployed materialization trails the wall clock, where the engine keeps it
    current and says so: (seconds, "wallclock") measured on Materialize, (seconds,
    "checkpoint_interval") at most on RisingWave; {} elsewhere."""
    objects = {d.object: name for name, d in deployed.items() if d.kind == MATERIALIZATION}
    dialect = dialects.get(engine.dialect)
    query = dialect.lag_query(schema, sorted(objects))
    if query is None or not objects:
        return {}
    rows = engine.execute(query.sql(dialect=engine.dialect)).rows
    return {objects[obj]: lag for obj, lag in dialect.lags(rows, sorted(objects)).items()}


def usable_routes(model: SemanticModel, dialect: str, deployed: dict[str, Deployed], schema: str,
                  home: str, now: dt.datetime, lags: dict[str, tuple[float, str]] | None = None) -> Routes:
    """Deployed materializations whose definition is the model's over the tables of `home` (the
    connection's schema) and, where the engine does not keep them current, whose last refresh
    is within their refresh interval."""
    wanted = {o.name: digest for o, _, digest in _resolved(model, dialect, home) if o.kind == MATERIALIZATION}
    routes, excluded = [], []
    streaming = dialects.get(dialect).streaming
    for name, d in deployed.items():
        if d.kind != MATERIALIZATION:
            continue
        digest = wanted.get(name)
        if digest is None:
            excluded.append((name, "it is deployed but no longer in the model; deploy again"))
        elif digest != d.digest:
            excluded.append((name, "its deployed definition differs from the model's; deploy again"))
        elif not streaming and d.refresh_seconds is not None and (
                d.age(now) is None or d.age(now) > d.refresh_seconds):
            excluded.append((name, f"it is stale: refreshed {d.refreshed_at} UTC, longer ago than its refresh interval "
                                   f"({d.refresh_seconds} s); run metrics-layer refresh"))
        else:
            routes.append(Route(name, schema, d.object, _kept_after(model.materializations[name], d, streaming, now), d.catalog))
    return Routes(tuple(sorted(routes, key=lambda r: r.name)), dict(deployed), lags or {}, tuple(excluded))
