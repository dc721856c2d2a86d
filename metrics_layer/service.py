"""The one path from every door to the engine: model + query -> compiled SQL -> Result."""

from __future__ import annotations

import logging
import threading

from .compile import compile_query
from .compile.ddl import check_materializations
from .engines import Cancel, Engine, EngineError, connect
from .model import ModelError, SemanticModel, ValidationFailed, load_model
from .model.schema_check import check_schema, engine_error_origin, first_line
from .project import Project
from .query import QueryError, Result, SemanticQuery

log = logging.getLogger("metrics_layer.serve")


class MetricsService:
    """Holds the current model (replaced atomically on reload) and the engine."""

    # Queries only read: a DuckDB file is opened read-only, so `serve` and the CLI (or several
    # servers) can read one file at once. A caller that writes through the service sets False.
    read_only_engine = True

    def __init__(self, project: Project, engine: Engine | None = None, model: SemanticModel | None = None):
        self.project = project
        self._model = model if model is not None else load_model(project.metrics_dir)
        self._engine = engine
        self._engine_lock = threading.Lock()

    @property
    def model(self) -> SemanticModel:
        return self._model

    def replace_model(self, model: SemanticModel) -> None:
        self._model = model  # one reference swap: requests in flight keep the model they started with

    def check_schema(self, model: SemanticModel) -> None:
        """Raise ValidationFailed when `model` does not fit the engine's tables and columns.

        An engine that cannot be reached only logs a warning: the YAML was valid, and queries
        will say the engine is down. An in-memory DuckDB is not checked (it starts empty).
        """
        errors: list[ModelError] = []
        try:
            engine = self.engine
            if engine.dialect == "duckdb" and getattr(engine, "path", None) == ":memory:":
                return
            errors = check_schema(model, engine) + check_materializations(model, engine.dialect)
        except EngineError as e:
            log.warning("the engine is not reachable, the model's tables and columns were not checked: %s", first_line(e.message))
        if errors:
            raise ValidationFailed(errors)

    def explain_engine_error(self, message: str, model: SemanticModel | None = None) -> str:
        """The engine's message, and where in the YAML a missing column or table it names is written."""
        found = engine_error_origin(model if model is not None else self._model, message)
        return message + "".join(f"\n  from {location}: {what}" for location, what in found)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = connect(self.project.engine_url, self.project.root, read_only=self.read_only_engine,
                                           result_cache=self.project.result_cache)
        return self._engine

    @property
    def dialect(self) -> str:
        from .engines import engine_dialect

        return self._engine.dialect if self._engine is not None else engine_dialect(self.project.engine_url)

    def compile(self, query: SemanticQuery, dialect: str | None = None, model: SemanticModel | None = None) -> str:
        """SQL for `query`; `model` pins the model a request started with (default: the current one)."""
        return compile_query(model if model is not None else self._model, query, dialect or self.dialect)

    def run(self, query: SemanticQuery, cancel: Cancel | None = None, timeout: float | None = None,
            model: SemanticModel | None = None) -> Result:
        model = model if model is not None else self._model
        sql = self.compile(query, model=model)
        try:
            result = self.engine.execute(sql, cancel=cancel, timeout=timeout or self.project.query_timeout)
        except EngineError as e:
            asked = ", ".join(query.metrics) or ", ".join(d.name for d in query.dimensions)
            raise QueryError(f"query for {asked} failed: {self.explain_engine_error(e.message, model)}", e.code) from None
        result.sql = sql
        return result
