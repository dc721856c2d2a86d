"""DuckDB: the embedded default. Differs from PostgreSQL only in its dedupe form."""

from __future__ import annotations

from sqlglot import exp

from .base import Dialect


class DuckDB(Dialect):
    name = "duckdb"

    def deduplicated(self, source, keys, order, descending, where):
        """QUALIFY ROW_NUMBER() = 1: pipelined, faster than DISTINCT ON's sort in DuckDB."""
        rank = self._row_rank(keys, order, descending)
        return self._select_from(source, where).qualify(exp.EQ(this=rank, expression=exp.Literal.number(1)), copy=False)
