"""RisingWave: temporal filters on NOW() against timestamptz; dedupe as ROW_NUMBER() top-1.

https://docs.risingwave.com/processing/sql/temporal-filters : NOW() in WHERE/HAVING/ON,
compared with a timestamptz. A naive UTC column is made timestamptz with AT TIME ZONE 'UTC':
a CAST would read it in the session's time zone and shift the window silently.
"""

from __future__ import annotations

from sqlglot import exp

from .base import Interval, Streaming, shift


class RisingWave(Streaming):
    name = "risingwave"

    def now(self) -> exp.Expression:
        return exp.Anonymous(this="NOW", expressions=[])

    def at_or_before_now(self, moment: exp.Expression) -> exp.Expression:
        return exp.LTE(this=_utc(moment), expression=self.now())

    def newer_than(self, moment: exp.Expression, age: Interval) -> exp.Expression:
        return exp.GT(this=_utc(moment), expression=shift(self.now(), age, -1))

    def older_than(self, moment: exp.Expression, age: Interval | None) -> exp.Expression:
        return exp.LTE(this=_utc(moment), expression=shift(self.now(), age, -1))

    def deduplicated(self, source, keys, order, descending, where):
        """ROW_NUMBER in a subquery with a rank filter: the form its streaming top-N recognises."""
        ranked = self._select_from(source, where).select(
            exp.alias_(self._row_rank(keys, order, descending), "_row_rank", copy=False), copy=False)
        return (
            exp.select(exp.Star(), copy=False)
            .from_(ranked.subquery("_ranked", copy=False), copy=False)
            .where(exp.EQ(this=exp.column("_row_rank"), expression=exp.Literal.number(1)), copy=False)
        )

    def lag_query(self, schema: str, objects: list[str]) -> exp.Expression:
        """The system parameters (rows of name, value, mutable): RisingWave documents no per-view
        lag; a batch read sees the latest checkpoint, taken every barrier_interval_ms ×
        checkpoint_frequency (https://docs.risingwave.com/reference/data-persistence,
        https://docs.risingwave.com/operate/view-configure-system-parameters)."""
        return exp.Command(this="SHOW", expression="PARAMETERS")

    def lags(self, rows, objects):
        """Every materialization trails by up to one checkpoint interval (a database's own
        interval, a premium setting since v2.5, is not read: the system's is)."""
        params = {str(row[0]).lower(): row[1] for row in rows if len(row) >= 2}
        try:
            interval = float(params["barrier_interval_ms"]) * float(params["checkpoint_frequency"]) / 1000
        except (KeyError, TypeError, ValueError):
            return {}
        return {obj: (interval, "checkpoint_interval") for obj in objects}


def _utc(naive: exp.Expression) -> exp.Expression:
    """A naive UTC timestamp as timestamptz, whatever the session's time zone."""
    return exp.AtTimeZone(this=naive, zone=exp.Literal.string("UTC"))
