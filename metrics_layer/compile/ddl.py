"""What `deploy` puts into an engine: one view per model (deduplicated rows) and one object per
materialization (its additive parts by its dimensions), each as a dialect-neutral SELECT.

Pure: no I/O. metrics_layer/deploy.py turns these into DDL for the engine, diffs them against
what the engine holds and applies the difference.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from ..model.errors import ModelError
from ..model.types import Interval, SemanticModel
from ..query import QueryError
from .compiler import compile_materialization, compile_model_rows

MODEL_VIEW = "model_view"
MATERIALIZATION = "materialization"


@dataclass(frozen=True)
class DeployObject:
    name: str  # object name inside the deploy schema
    kind: str  # MODEL_VIEW | MATERIALIZATION
    definition: exp.Select  # the SELECT, built for `dialect`
    dialect: str
    key: tuple[str, ...] = ()  # columns unique per row (materializations: the dimension columns)
    refresh: Interval | None = None  # PostgreSQL / DuckDB rebuild interval
    depends_on: tuple[str, ...] = ()  # other deploy objects it reads


def plan_objects(model: SemanticModel, dialect: str) -> list[DeployObject]:
    """Every object of the model, in dependency order."""
    objects = [
        DeployObject(name, MODEL_VIEW, compile_model_rows(model, name, dialect), dialect)
        for name in model.models
    ]
    for name, mat in model.materializations.items():
        select = compile_materialization(model, name, dialect)
        key = tuple(f"d{i}" for i in range(len(mat.dimensions)))
        objects.append(DeployObject(name, MATERIALIZATION, select, dialect, key, mat.refresh))
    return objects


def check_materializations(model: SemanticModel, dialect: str) -> list[ModelError]:
    """Each materialization the engine cannot maintain exactly (e.g. a median on a streaming
    engine), at its file:line, with the compiler's reason."""
    errors = []
    for name, mat in model.materializations.items():
        try:
            compile_materialization(model, name, dialect)
        except QueryError as e:
            errors.append(ModelError(mat.location, f"materialization '{name}' cannot be stored on {dialect}: {e.message}"))
    return errors
