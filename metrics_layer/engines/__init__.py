"""Engines by URL: duckdb:///path (or :memory:), postgresql://, materialize://, risingwave://."""

from __future__ import annotations

from pathlib import Path

from .base import Cancel, Engine, EngineError

_POSTGRES_SCHEMES = {"postgresql": "postgres", "postgres": "postgres", "materialize": "materialize", "risingwave": "risingwave"}


def engine_dialect(url: str) -> str:
    scheme = url.split("://", 1)[0].lower()
    if scheme == "duckdb":
        return "duckdb"
    if scheme in _POSTGRES_SCHEMES:
        return _POSTGRES_SCHEMES[scheme]
    raise EngineError(
        f"unknown engine URL {url!r}; write duckdb:///path/file.duckdb, duckdb:///:memory:, "
        "postgresql://user@host/db, materialize://... or risingwave://...", "22023"
    )


def duckdb_path(url: str, base_dir: Path | None = None) -> str:
    """duckdb:///rel/file.duckdb is relative to the project; duckdb:////abs/file.duckdb is absolute."""
    path = url.split("://", 1)[1]
    path = path[1:] if path.startswith("/") else path
    if path in ("", ":memory:"):
        return ":memory:"
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and base_dir is not None:
        resolved = base_dir / resolved
    return str(resolved)


def connect(url: str, base_dir: Path | None = None, read_only: bool = False, result_cache: bool = True,
            pool_size: int | None = None, statement_timeout: float | None = None) -> Engine:
    """`result_cache` applies to DuckDB, the engine whose data cannot change behind our back;
    `pool_size` (connections) and `statement_timeout` (seconds, the engine's own) to PostgreSQL-family engines."""
    dialect = engine_dialect(url)
    if dialect == "duckdb":
        from .duckdb_engine import DuckDBEngine

        return DuckDBEngine(duckdb_path(url, base_dir), read_only=read_only, result_cache=result_cache)
    from .postgres_engine import PostgresEngine

    scheme, rest = url.split("://", 1)
    # Materialize and RisingWave speak the PostgreSQL protocol: psycopg takes a postgresql:// URL.
    return PostgresEngine(f"postgresql://{rest}", dialect=dialect, pool_size=pool_size, statement_timeout=statement_timeout)


__all__ = ["Cancel", "Engine", "EngineError", "connect", "duckdb_path", "engine_dialect"]
