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
            times = pc.cast(pc.replace_substring(spine.column(at), "T", " "), pa.timestamp("us"))
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
