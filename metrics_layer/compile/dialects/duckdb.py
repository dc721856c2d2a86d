"""DuckDB: the embedded default. Differs from PostgreSQL in its dedupe form, and stores
materializations as tables (it has no materialized views)."""

from __future__ import annotations

from sqlglot import exp

from .base import Dialect


class DuckDB(Dialect):
    name = "duckdb"

    def deduplicated(self, source, keys, order, descending, where):
        """QUALIFY ROW_NUMBER() = 1: pipelined, faster than DISTINCT ON's sort in DuckDB."""
        rank = self._row_rank(keys, order, descending)
        return self._select_from(source, where).qualify(exp.EQ(this=rank, expression=exp.Literal.number(1)), copy=False)

    stored_kind = "TABLE"

    def create_materialization(self, table, select, key, options):
        return [exp.Create(this=table, kind="TABLE", expression=select)]

    def refresh_materialization(self, table, select):
        # In one transaction (deploy.py): readers see the old rows until COMMIT (DuckDB's MVCC).
        return [exp.Delete(this=table), exp.insert(select, table.copy())]
