"""One small class per engine, each overriding only what differs from the PostgreSQL base."""

from __future__ import annotations

from .base import Dialect, interval, shift, timestamp, truncate
from .duckdb import DuckDB
from .materialize import Materialize
from .postgres import Postgres
from .risingwave import RisingWave

_BY_NAME: dict[str, Dialect] = {d.name: d for d in (DuckDB(), Postgres(), Materialize(), RisingWave())}
DIALECTS = tuple(_BY_NAME)
STREAMING = tuple(name for name, d in _BY_NAME.items() if d.streaming)


def get(name: str) -> Dialect:
    """The dialect called `name`; a QueryError naming the valid ones otherwise."""
    dialect = _BY_NAME.get(name)
    if dialect is None:
        from ...query import QueryError

        raise QueryError(f"unknown dialect {name!r}; valid dialects: {', '.join(DIALECTS)}")
    return dialect


__all__ = ["DIALECTS", "STREAMING", "Dialect", "get", "interval", "shift", "timestamp", "truncate"]
