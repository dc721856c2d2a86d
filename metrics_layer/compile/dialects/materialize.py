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
