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

    def at_or_before_now(self, moment: exp.Expression) -> exp.Expression:
        return exp.GTE(this=self.now(), expression=moment)

    def newer_than(self, moment: exp.Expression, age: Interval) -> exp.Expression:
        return exp.LT(this=self.now(), expression=shift(moment, age, +1))  # moment > now - age

    def older_than(self, moment: exp.Expression, age: Interval | None) -> exp.Expression:
        return exp.GTE(this=self.now(), expression=shift(moment, age, +1))  # moment <= now - age

    def lag_query(self, schema: str, objects: list[str]) -> exp.Select:
        """The latest minute of each object's wallclock lag (how far its write frontier trails the
        wall clock), as https://materialize.com/docs/transform-data/monitor-freshness/ reads it
        from mz_internal.mz_wallclock_global_lag_recent_history."""
        name = exp.column("name", table="o")
        lag = exp.Extract(this=exp.var("EPOCH"), expression=exp.column("lag", table="wl"))
        select = (
            exp.select(name, exp.alias_(lag, "lag_s", copy=False), copy=False)
            .from_(exp.to_table("mz_internal.mz_wallclock_global_lag_recent_history", alias="wl"), copy=False)
            .join(exp.to_table("mz_catalog.mz_objects", alias="o"),
                  on=exp.EQ(this=exp.column("object_id", table="wl"), expression=exp.column("id", table="o")), copy=False)
            .join(exp.to_table("mz_catalog.mz_schemas", alias="s"),
                  on=exp.EQ(this=exp.column("schema_id", table="o"), expression=exp.column("id", table="s")), copy=False)
            .where(exp.EQ(this=exp.column("name", table="s"), expression=exp.Literal.string(schema)), copy=False)
            .where(name.copy().isin(*[exp.Literal.string(o) for o in objects]), copy=False)
            .order_by(name.copy(), exp.Ordered(this=exp.column("occurred_at", table="wl"), desc=True), copy=False)
        )
        select.set("distinct", exp.Distinct(on=exp.Tuple(expressions=[name.copy()])))
        return select

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
