"""The one path from every door to the engine: model + query -> compiled SQL -> Result."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from .compile import explain_query
from .compile.ddl import check_materializations
from .engines import Cancel, Engine, EngineError, connect
from .model import ModelError, SemanticModel, ValidationFailed
from .model.errors import first_line
from .project import Project
from .query import QueryError, Result, SemanticQuery

log = logging.getLogger("metrics_layer.serve")


@dataclass(frozen=True)
class Explained:
    """The SQL a query runs, the materialization it reads (and how fresh that is), and why
    each other deployed materialization was not used."""

    sql: str
    materialization: str | None = None
    not_used: tuple[tuple[str, str], ...] = ()
    freshness: dict | None = None

    def lines(self) -> list[str]:
        """Which materialization the query reads, how fresh it is, and why the others are not used."""
        if self.materialization is None:
            lines = ["reads the base tables"]
        else:
            lines = [f"reads materialization {self.materialization} ({describe_freshness(self.freshness)})"]
        return lines + [f"not {name}: {why}" for name, why in self.not_used]


LAG_PHRASES = {"wallclock": ", {:.1f} s behind the wall clock",
               "checkpoint_interval": ", reads its latest checkpoint (taken every {:.1f} s)"}


def describe_freshness(freshness: dict) -> str:
    if freshness.get("refreshed_at") is None:
        lag = freshness.get("lag_s")
        behind = LAG_PHRASES[freshness.get("lag_kind") or "wallclock"].format(lag) if lag is not None else ""
        return f"kept current by {freshness['maintained_by']}{behind}"
    return f"refreshed {freshness['refreshed_at']}, every {freshness['refresh_every_s']} s"


class MetricsService:
    """Holds the current model (replaced atomically on reload) and the engine."""

    # Queries only read: a DuckDB file is opened read-only, so `serve` and the CLI (or several
    # servers) can read one file at once. A caller that writes through the service sets False.
    read_only_engine = True

    def __init__(self, project: Project, engine: Engine | None = None, model: SemanticModel | None = None):
        self.project = project
        if model is None:
            from .model import load_model

            model = load_model(project.metrics_dir)
        self._model = model
        self._engine = engine
        self._engine_lock = threading.Lock()
        self._routes = None  # (monotonic time, model, deploy.Routes): what is deployed, re-read every ROUTES_TTL s
        self._routes_lock = threading.Lock()
        self._home: str | None = None  # the engine connection's schema, which deployed definitions read
        self.online_tables: dict = {}  # view -> (model, route, a refreshed materialization's rows by key): features.py

    ROUTES_TTL = 2.0  # seconds a read of the deploy metadata is trusted (deploy and refresh here reset it)

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
        from .model.schema_check import check_schema

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
        from .model.schema_check import engine_error_origin

        found = engine_error_origin(model if model is not None else self._model, message)
        return message + "".join(f"\n  from {location}: {what}" for location, what in found)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = connect(
                        self.project.engine_url, self.project.root, read_only=self.read_only_engine,
                        result_cache=self.project.result_cache, pool_size=self.project.pool_size,
                        statement_timeout=self.project.query_timeout)
        return self._engine

    @property
    def dialect(self) -> str:
        from .engines import engine_dialect

        return self._engine.dialect if self._engine is not None else engine_dialect(self.project.engine_url)

    # ---- routing to deployed materializations ------------------------------------------

    def routes(self, model: SemanticModel | None = None):
        """The deployed materializations queries may read now (deploy.usable_routes); none when
        routing is off, nothing is deployed or the engine cannot say."""
        from .deploy import Routes, current_schema, read_deployed, read_lags, usable_routes, utc_now

        model = model if model is not None else self._model
        if not self._deploy_settings.get("route", True):
            return Routes()
        cached = self._routes
        if cached is not None and cached[1] is model and time.monotonic() - cached[0] < self.ROUTES_TTL:
            return cached[2]
        with self._routes_lock:
            try:
                deployed = read_deployed(self.engine, self.deploy_schema)
                if deployed and self._home is None:
                    self._home = current_schema(self.engine)
            except EngineError as e:
                log.debug("deployed materializations not read: %s", first_line(e.message))
                deployed = {}
            try:
                lags = read_lags(self.engine, self.deploy_schema, deployed)
            except EngineError as e:  # freshness unknown; the rows are still the engine's current ones
                log.debug("materializations' lag not read: %s", first_line(e.message))
                lags = {}
            routes = usable_routes(model, self.dialect, deployed, self.deploy_schema, self._home or "", utc_now(), lags)
            self._routes = (time.monotonic(), model, routes)
        return routes

    def forget_routes(self) -> None:
        """Re-read what is deployed at the next query (after a deploy or refresh)."""
        self._routes = None

    @property
    def deploy_schema(self) -> str:
        from .deploy import DEFAULT_SCHEMA

        return str(self._deploy_settings.get("schema") or DEFAULT_SCHEMA)

    @property
    def _deploy_settings(self) -> dict:
        return self.project.deploy if self.project is not None else {}

    def explain(self, query: SemanticQuery, dialect: str | None = None, model: SemanticModel | None = None) -> Explained:
        """The SQL for `query`: read from a deployed materialization where one answers it exactly
        and is fresh (the engine's own dialect only), else over the base tables."""
        model = model if model is not None else self._model
        routed = dialect is None or dialect == self.dialect
        routes = self.routes(model) if routed else None
        compiled = explain_query(model, query, dialect or self.dialect, routes.routes if routes else ())
        if routes is None:
            return Explained(compiled.sql)
        freshness = None
        if compiled.materialization is not None:
            freshness = _freshness(routes.deployed[compiled.materialization], self.dialect, routes.lags)
        return Explained(compiled.sql, compiled.materialization, compiled.not_used + routes.excluded, freshness)

    def compile(self, query: SemanticQuery, dialect: str | None = None, model: SemanticModel | None = None) -> str:
        """SQL for `query`; `model` pins the model a request started with (default: the current one)."""
        return self.explain(query, dialect, model).sql

    def run(self, query: SemanticQuery, cancel: Cancel | None = None, timeout: float | None = None,
            model: SemanticModel | None = None) -> Result:
        model = model if model is not None else self._model
        explained = self.explain(query, model=model)
        try:
            result = self.engine.execute(explained.sql, cancel=cancel, timeout=timeout or self.project.query_timeout)
        except EngineError as e:
            asked = ", ".join(query.metrics) or ", ".join(d.name for d in query.dimensions)
            raise QueryError(f"query for {asked} failed: {self.explain_engine_error(e.message, model)}", e.code) from None
        result.sql = explained.sql
        result.freshness = explained.freshness
        return result

    def training_set(self, spine_query, spine_table) -> Result:
        """Metrics at every row of a spine (compile/spine.py), the spine's rows loaded into the
        engine as the temporary relation `spine_query.table` for this one query."""
        from .compile.spine import compile_spine

        sql = compile_spine(self._model, spine_query, self.dialect)
        try:
            result = self.engine.execute_with_table(spine_query.table, spine_table, sql, timeout=self.project.query_timeout)
        except EngineError as e:
            raise QueryError(f"training set of {', '.join(spine_query.metrics)} failed: "
                             f"{self.explain_engine_error(e.message)}", e.code) from None
        result.sql = sql
        return result


def _freshness(deployed, dialect: str, lags: dict[str, tuple[float, str]]) -> dict:
    """How current a materialization's rows are: its last refresh, or kept current by the engine
    (and how far it trails the wall clock, where the engine says: lag_s, measured when lag_kind
    is "wallclock", at most when it is "checkpoint_interval")."""
    from .compile import dialects

    if dialects.get(dialect).streaming:
        lag, kind = lags.get(deployed.name, (None, None))
        return {"materialization": deployed.name, "maintained_by": dialect, "refreshed_at": None,
                "refresh_every_s": None, "lag_s": lag, "lag_kind": kind}
    return {"materialization": deployed.name, "maintained_by": "refresh",
            "refreshed_at": deployed.refreshed_at.isoformat(sep=" ") + "Z" if deployed.refreshed_at else None,
            "refresh_every_s": deployed.refresh_seconds, "lag_s": None, "lag_kind": None}
