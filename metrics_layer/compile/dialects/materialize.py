"""Materialize: "now" is a temporal filter on mz_now(); dedupe is DISTINCT ON (its idiom).

https://materialize.com/docs/transform-data/patterns/temporal-filters/ : mz_now() may appear
only in WHERE/HAVING, compared with an expression free of it, with no arithmetic on mz_now().
"""

from __future__ import annotations

from sqlglot import exp

from .base import Interval, Streaming, shift


class Materialize(Streaming):
    name = "materialize"

    def now(self) -> exp.Expression:
        return exp.Anonymous(this="mz_now", expressions=[])

    def trailing_window_now(self, time: exp.Expression, reach: Interval, delay: Interval | None) -> list[exp.Expression]:
        # t > now - reach  <=>  mz_now() < t + reach;   t <= now - delay  <=>  mz_now() >= t + delay
        return [
            exp.LT(this=self.now(), expression=shift(time.copy(), reach, +1)),
            exp.GTE(this=self.now(), expression=shift(time.copy(), delay, +1)),
        ]

    def at_or_before_now(self, moment: exp.Expression) -> exp.Expression:
        return exp.GTE(this=self.now(), expression=moment)

    def newer_than(self, moment: exp.Expression, age: Interval) -> exp.Expression:
        return exp.LT(this=self.now(), expression=shift(moment, age, +1))  # moment > now - age

    def create_materialization(self, table, select, key, options):
        """A materialized view in the configured cluster, and an index over its key in the same
        cluster so that reads are lookups in memory
        (https://materialize.com/docs/sql/create-materialized-view/,
        https://materialize.com/docs/sql/create-index/). sqlglot has no node for IN CLUSTER:
        the names are rendered identifiers, the body a rendered SELECT."""
        name = table.sql(dialect=self.name)
        cluster = f" IN CLUSTER {exp.to_identifier(options['cluster'], quoted=True).sql(dialect=self.name)}" if options.get("cluster") else ""
        columns = ", ".join(exp.to_identifier(k, quoted=True).sql(dialect=self.name) for k in key)
        index = f"INDEX{cluster} ON {name} ({columns})" if key else f"DEFAULT INDEX{cluster} ON {name}"
        return [
            exp.Command(this="CREATE", expression=f"MATERIALIZED VIEW {name}{cluster} AS {select.sql(dialect=self.name)}"),
            exp.Command(this="CREATE", expression=index),
        ]
