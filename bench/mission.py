"""The six mission queries, shared by the benchmarks.

Each query is given three ways: as a SemanticQuery (for compile_query), as `metrics-layer
compile` arguments (for the CLI timing), and as the hand-written SQL of tests/reference.py
(the execution baseline), projected onto the columns the semantic query returns.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from metrics_layer.query import DimensionRef, SemanticQuery  # noqa: E402

AS_OF = "2026-02-25T12:00:00"
DATA_END = dt.datetime(2026, 3, 1)  # end of the generated demo data; AS_OF is 3.5 days before it


@dataclass(frozen=True)
class Mission:
    key: str
    title: str
    metrics: tuple[str, ...]
    dimensions: tuple[tuple[str, str | None], ...] = ()
    as_of: str | None = None

    def query(self) -> SemanticQuery:
        """A new SemanticQuery object (equal to every other one this returns)."""
        return SemanticQuery(
            metrics=self.metrics,
            dimensions=tuple(DimensionRef(name, grain) for name, grain in self.dimensions),
            as_of=self.as_of,
        )

    def cli_args(self) -> list[str]:
        args = ["compile", "--dialect", "duckdb"]
        for metric in self.metrics:
            args += ["--metric", metric]
        for name, grain in self.dimensions:
            args += ["--by", f"{name}:{grain}" if grain else name]
        if self.as_of:
            args += ["--as-of", self.as_of]
        return args


MISSIONS = [
    Mission("a", "accuracy, precision, recall, f1 overall", ("accuracy", "precision", "recall", "f1")),
    Mission(
        "b", "accuracy + precision by model_version, hour", ("accuracy", "precision"),
        (("predictions.model_version", None), ("leads.created_at", "hour")),
    ),
    Mission("c", "accuracy_3h current value (as_of)", ("accuracy_3h",), as_of=AS_OF),
    Mission("d", "accuracy_3h rolling hourly series (as_of)", ("accuracy_3h",), (("leads.created_at", "hour"),), AS_OF),
    Mission("e", "fraud_loss by merchant_category", ("fraud_loss",), (("transactions.merchant_category", None),)),
    Mission(
        "f", "fraud_loss + fraud_precision by fraud model_version, day", ("fraud_loss", "fraud_precision"),
        (("fraud_scores.model_version", None), ("transactions.created_at", "day")),
    ),
]


def reference_sql() -> dict[str, str]:
    """Hand-written SQL per mission key, from tests/reference.py, with the mission's columns only.

    Where the reference function returns extra columns (overall conversion metrics also give
    lead_count and conversion_rate; fraud by category also gives its two components), it is
    wrapped in a SELECT of the mission's columns; the engines prune the unused aggregates.
    """
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import reference as ref
    finally:
        sys.path.remove(str(REPO / "tests"))
    as_of = AS_OF.replace("T", " ")

    def only(columns: str, sql: Callable[[], str]) -> str:
        return f"SELECT {columns} FROM (\n{sql()}\n) AS reference"

    return {
        "a": only('accuracy, "precision", recall, f1', lambda: ref.conversion_metrics(None)),
        "b": ref.accuracy_precision_by_model_version_and_hour(None),
        "c": ref.accuracy_3h_at(as_of),
        "d": ref.accuracy_3h_by_hour(as_of),
        "e": only("merchant_category, fraud_loss", lambda: ref.fraud_by_merchant_category(None))
        + "\nORDER BY merchant_category NULLS LAST",
        "f": ref.fraud_by_model_version_and_day(None),
    }
