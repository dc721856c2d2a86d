"""Training sets: a spine (pandas, Arrow or a CSV/Parquet file) in, the spine plus one column per metric out.

This module only shapes the spine for the engine (row ids, point ids, UTC timestamps) and
attaches the metric columns the service returns; the values come from one compiled query
(compile/spine.py) run by MetricsService.training_set.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Sequence

from .query import Filter, QueryError


def load_spine(spine: Any):
    """A pyarrow Table from a pandas DataFrame, an Arrow table or a .csv/.parquet path."""
    import pyarrow as pa

    if isinstance(spine, pa.Table):
        return spine
    if isinstance(spine, (str, os.PathLike)):
        path = os.fspath(spine)
        if not os.path.exists(path):
            raise QueryError(f"spine file {path!r} does not exist")
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq
            return pq.read_table(path)
        if path.endswith(".csv"):
            import pyarrow.csv as pcsv
            return pcsv.read_csv(path)
        raise QueryError(f"spine file {path!r}: give a .csv or .parquet file")
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(spine, pd.DataFrame):
        return pa.Table.from_pandas(spine, preserve_index=False)
    raise QueryError(f"a spine is a pandas DataFrame, an Arrow table or a .csv/.parquet path, got {type(spine).__name__}")


def engine_spine(spine, at: str, key: str | None):
    """The engine's copy of the spine: ml_row, ml_point (one per distinct (time, key)), ml_at[, ml_key]."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .compile.spine import AT, KEY, POINT, ROW

    for column in (at, key):
        if column is not None and column not in spine.column_names:
            raise QueryError(f"the spine has no column {column!r}; its columns: {', '.join(spine.column_names)}")
    times = spine.column(at)
    if pa.types.is_string(times.type) or pa.types.is_large_string(times.type):
        try:
            times = pc.strptime(times, format="%Y-%m-%dT%H:%M:%S", unit="us", error_is_null=False)
        except pa.ArrowInvalid:
            try:
                times = pc.cast(pc.replace_substring(spine.column(at), "T", " "), pa.timestamp("us"))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # offsets, Z, or not a time at all
                times = pa.array([_spine_time(v, at, i) for i, v in enumerate(spine.column(at).to_pylist())],
                                 pa.timestamp("us"))
    if not pa.types.is_timestamp(times.type):
        try:
            times = pc.cast(times, pa.timestamp("us"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise QueryError(f"spine column {at!r} holds {times.type}, not timestamps") from None
    if times.type.tz is not None:  # naive UTC everywhere
        times = pc.cast(times.cast(pa.timestamp(times.type.unit, "UTC")), pa.timestamp("us"))
    times = pc.cast(times, pa.timestamp("us"))
    if times.null_count:
        first = pc.index(pc.is_null(times), True).as_py()
        raise QueryError(f"spine row {first + 1} has no time in column {at!r}; every spine row needs one")
    columns = {AT: times}
    if key is not None:
        columns[KEY] = spine.column(key)
    # Point ids in Python: Arrow's joins and group-bys do not match a NULL key to itself.
    ids: dict = {}
    pairs = zip(*(c.to_pylist() for c in columns.values())) if key is not None else ((t,) for t in times.to_pylist())
    point = [ids.setdefault(pair, len(ids)) for pair in pairs]
    joined = pa.table({ROW: pa.array(range(len(point)), pa.int64()), POINT: pa.array(point, pa.int64()), **columns})
    return joined.select([ROW, POINT, AT] + ([KEY] if key is not None else []))


def _spine_time(value, at: str, index: int):
    """One spine time written as ISO 8601 text (offsets converted to UTC), or a clear error."""
    from .query import parse_timestamp

    if value is None:
        raise QueryError(f"spine row {index + 1} has no time in column {at!r}; every spine row needs one", "22007")
    return parse_timestamp(value, f"spine row {index + 1}, column {at!r}")


def training_set(service, spine: Any, metrics: Sequence[str], at: str = "at", entity: str | None = None,
                 key: str | None = None, filters: Sequence[Filter] = (), show_sql: bool = False):
    """The spine's columns unchanged plus one column per metric (named as written), in the spine's order."""
    import pyarrow as pa

    from .compile.spine import SpineQuery, entity_name

    table = load_spine(spine)
    name = entity_name(service.model, entity)
    if name is not None and key is None:
        key = name if name in table.column_names else None
        if key is None:
            raise QueryError(f"a spine keyed by entity '{name}' needs a key column: name it --key (the spine's "
                             f"columns: {', '.join(table.column_names)})")
    relation = f"ml_spine_{uuid.uuid4().hex[:12]}"
    query = SpineQuery(tuple(metrics), relation, entity, tuple(filters))
    result = service.training_set(query, engine_spine(table, at, key))
    for i, column in enumerate(result.columns):
        if column.name in table.column_names:
            raise QueryError(f"the spine already has a column {column.name!r}; rename it or ask for the metric once")
        table = table.append_column(column.name, pa.array([row[i] for row in result.rows]))
    return (table, result.sql) if show_sql else table


# ---- spines read from the engine ---------------------------------------------------------

def spine_from_sql(service, sql: str):
    """A spine from the user's SQL, run on the engine as the spine only: it must parse (sqlglot,
    the engine's dialect) as exactly one SELECT (or UNION of SELECTs), nothing else."""
    import pyarrow as pa
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError

    from .engines import EngineError

    dialect = service.dialect  # sqlglot's name for the engine's dialect
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except ParseError as e:
        raise QueryError(f"--spine-sql does not parse: {str(e).splitlines()[0]}", "42601") from None
    if len(statements) != 1 or not isinstance(statements[0], (exp.Select, exp.Union)):
        kinds = ", ".join(type(s).__name__.upper() for s in statements) or "nothing"
        raise QueryError(f"--spine-sql must be one SELECT (it is run as the spine only), got {kinds}", "42601")
    statement = statements[0]
    if any(isinstance(node, (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Command))
           for node in statement.walk()):
        raise QueryError("--spine-sql must only read: one SELECT without INSERT, UPDATE, DELETE or DDL", "42601")
    try:
        result = service.engine.execute(statement.sql(dialect=dialect), timeout=service.project.query_timeout)
    except EngineError as e:
        raise QueryError(f"--spine-sql failed: {e.message}", e.code) from None
    names = [c.name for c in result.columns]
    if len(set(names)) != len(names):
        raise QueryError(f"--spine-sql returns duplicate column names ({', '.join(names)}); alias them", "42701")
    return pa.table({name: pa.array([row[i] for row in result.rows]) for i, name in enumerate(names)})


def spine_from_table(service, table: str):
    """A spine from a table (or view) in the engine: every column, in the table's order."""
    from sqlglot import exp

    try:
        relation = exp.to_table(table)
    except Exception:
        raise QueryError(f"--spine-table {table!r} is not a table name", "42602") from None
    return spine_from_sql(service, exp.select("*").from_(relation).sql(dialect=service.dialect))


DEMO_SPINE = "spine_predictions.csv"


def write_demo_spine(database: str, out: str | None = None) -> str:
    """The demo's prediction events as a spine (lead_id, at = predicted_at, model_version),
    written as CSV next to the demo database (or to `out`)."""
    import duckdb

    path = out or os.path.join(os.path.dirname(os.path.abspath(database)), DEMO_SPINE)
    con = duckdb.connect(database, read_only=True)
    try:
        # The time is written as ISO text (the CSV reader reads it back as a timestamp).
        con.execute(f"""COPY (SELECT event_id, lead_id, predicted_at AS at, model_version
                              FROM prediction_events ORDER BY event_id) TO '{path.replace("'", "''")}'
                        (FORMAT csv, HEADER true, TIMESTAMPFORMAT '%Y-%m-%dT%H:%M:%S.%f')""")
    finally:
        con.close()
    return path


# ---- online values -----------------------------------------------------------------------

MAX_ONLINE_KEYS = 1000


def online_values(service, view: str, keys: Sequence[Any], model=None) -> dict:
    """The current value of each metric of a keyed view (YAML `entity:`) for each key.

    One SemanticQuery: the view's metrics by the entity, filtered to the keys (literals); the
    service reads a deployed materialization when routing finds one, else the base tables. A key
    without rows gets the metrics' values over no rows (0 for counts, null for ratios), computed
    by the same compiler once per model.
    """
    import datetime as dt

    from .query import DimensionRef, SemanticQuery

    model = model if model is not None else service.model
    spec = model.views.get(view)
    keyed = sorted(v.name for v in model.views.values() if v.entity)
    if spec is None:
        raise QueryError(f"unknown feature view '{view}'; views with an entity: {', '.join(keyed) or '(none)'}", "42P01")
    if spec.entity is None or not spec.metrics:
        raise QueryError(f"view '{view}' has no entity to look values up by: add `entity: model.entity` (and metrics) "
                         f"to it in the YAML; views with an entity: {', '.join(keyed) or '(none)'}", "0A000")
    keys = list(keys)
    if not keys:
        raise QueryError(f"give at least one key of {spec.entity}: ?key=K&key=K2", "22023")
    if len(keys) > MAX_ONLINE_KEYS:
        raise QueryError(f"{len(keys)} keys: ask for at most {MAX_ONLINE_KEYS} per request", "54000")
    for k in keys:
        if not isinstance(k, (str, int)) or isinstance(k, bool):
            raise QueryError(f"a key is text or an integer, got {k!r}", "22023")
    keys = list(dict.fromkeys(str(k) for k in keys))
    table = _refreshed_table(service, model, spec)
    # A lookup in the materialization's rows as of its last refresh; a key it does not hold (no
    # rows, or not a value of the entity) goes the query's way below, which says which.
    if table is not None and all(k in table[2] for k in keys):
        sql, freshness, values = table
        rows = [{"key": k, "values": dict(zip(spec.metrics, values[k]))} for k in keys]
        return {"view": view, "entity": spec.entity, "metrics": list(spec.metrics),
                "source": f"materialization {freshness['materialization']}", "freshness": freshness, "rows": rows, "sql": sql}
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    # Sorted: the same key set in any order is one query (compile cache, result cache).
    query = SemanticQuery(spec.metrics, (DimensionRef(spec.entity),), (Filter(spec.entity, "in", tuple(sorted(keys))),))
    try:
        result = service.run(query, model=model)
    except QueryError as e:
        if any(word in e.message for word in ("Conversion Error", "invalid input syntax", "Could not convert")):
            raise QueryError(f"a key is not a value of {spec.entity}: {e.message.splitlines()[0]}", "22P02") from None
        raise
    found = {str(row[0]): row[1:] for row in result.rows}
    missing = [k for k in keys if k not in found]
    empty = _values_over_no_rows(service, model, spec, missing) if missing else ()
    rows = [{"key": k, "values": dict(zip(spec.metrics, found.get(k, empty)))} for k in keys]
    if result.freshness is not None:
        source, freshness = f"materialization {result.freshness['materialization']}", result.freshness
    else:
        source, freshness = "query", {"computed_at": now.isoformat(sep=" ") + "Z"}
    return {"view": view, "entity": spec.entity, "metrics": list(spec.metrics), "source": source,
            "freshness": freshness, "rows": rows, "sql": result.sql}


ONLINE_TABLE_ROWS = 100_000  # a view's rows kept in memory per refresh, at most


def _refreshed_table(service, model, spec) -> tuple[str, dict, dict] | None:
    """(SQL, freshness, values by key) of the whole view, when it is read from a materialization
    refreshed in batch (DuckDB, PostgreSQL) and holds at most ONLINE_TABLE_ROWS keys.

    Such a materialization changes only when it is refreshed, so its rows by key, read once per
    refresh through the same compiled query (all keys, no filter), answer every lookup until the
    next one exactly: a dictionary lookup instead of a query per request. The entry is checked
    on each request against the current route (the same SQL, the same refreshed_at), so a
    refresh, a redeploy, a stale materialization or a reloaded model reads afresh.
    """
    from .query import DimensionRef, SemanticQuery

    query = SemanticQuery(spec.metrics, (DimensionRef(spec.entity),))
    explained = service.explain(query, model=model)
    freshness = explained.freshness
    if freshness is None or freshness["maintained_by"] != "refresh" or freshness["refreshed_at"] is None:
        return None
    entry = service.online_tables.get(spec.name)  # one per view: a reload replaces it, nothing piles up
    if entry is not None and entry[0] is model and entry[1] == (explained.sql, freshness["refreshed_at"]):
        values = entry[2]
    else:
        result = service.run(query, model=model)
        values = {str(row[0]): tuple(row[1:]) for row in result.rows} if len(result.rows) <= ONLINE_TABLE_ROWS else None
        service.online_tables[spec.name] = (model, (explained.sql, freshness["refreshed_at"]), values)
    return (explained.sql, freshness, values) if values is not None else None


def _values_over_no_rows(service, model, spec, keys: list[str]) -> tuple:
    """The view's metrics over keys that have no rows: the compiler's own answer over no rows
    (one query over those keys, no dimension), kept per model and view."""
    from .query import SemanticQuery

    cache_key = ("__online_no_rows__", spec.name)
    cached = model.compile_cache.get(cache_key)
    if cached is None:
        query = SemanticQuery(spec.metrics, (), (Filter(spec.entity, "in", tuple(keys)),))
        rows = service.run(query, model=model).rows
        cached = tuple(rows[0]) if rows else (None,) * len(spec.metrics)
        model.compile_cache[cache_key] = cached
    return cached
