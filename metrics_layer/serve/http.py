"""The HTTP doors: GraphQL (+ GraphiQL page) and a small REST API, as one FastAPI app.

    POST /graphql             GraphQL (GET with ?query= too; GET from a browser: GraphiQL)
    POST /api/v1/query        run a query (JSON mirroring SemanticQuery) -> columns, rows, sql
    POST /api/v1/compile      the SQL a query compiles to, for a dialect
    GET  /api/v1/catalog      views, metrics and dimensions
    POST /api/features/training-set   metrics at every row of a posted spine (JSON, CSV or Arrow out)
    GET  /api/features/{view}?key=K   current values of a keyed view's metrics, per key
    GET  /health              model status, engine reachability, last reload errors (no auth)

Every door only translates: JSON or a GraphQL selection into a SemanticQuery, the Result back
into JSON. Engine work runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from inspect import isawaitable
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Union

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.staticfiles import StaticFiles

from ..model.types import SemanticModel
from ..query import DimensionRef, Filter, OrderBy, QueryError, SemanticQuery
from ..service import MetricsService
from .auth import ApiKeys
from ..json_values import dumps

log = logging.getLogger("metrics_layer.serve")

STATIC_DIR = Path(__file__).parent / "static"
_UNAUTHORIZED = json.dumps({"error": {"message": "missing or invalid API key"}}).encode()
# Paths readable without a key: they hold no model or data (the GraphiQL page and its assets,
# the REST API's own description) or are meant for probes (/health).
_PUBLIC_PATHS = ("/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/")


# ---- request bodies (pydantic: they make /docs meaningful) -------------------------------

class DimensionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="model.dimension (or the dimension's own name when unambiguous)", examples=["leads.created_at"])
    grain: str | None = Field(None, description="minute, hour, day, week, month, quarter or year (time dimensions)", examples=["hour"])


class FilterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = Field(description="a dimension (filters rows) or a metric (filters result rows)", examples=["predictions.model_version"])
    op: str = Field(description="=, !=, <, <=, >, >=, in, not in, between, is null, is not null, contains, starts with", examples=["="])
    value: Any = Field(None, description="a value; a list for in / not in / between; none for is (not) null", examples=["v2"])
    grain: str | None = Field(None, description="compare a time dimension truncated to this grain")


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = Field(description="a dimension or metric of the query, as written", examples=["accuracy"])
    descending: bool = False


class QueryIn(BaseModel):
    """A SemanticQuery as JSON."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "metrics": ["accuracy"], "dimensions": ["predictions.model_version", {"name": "leads.created_at", "grain": "hour"}],
        "filters": [{"field": "leads.utm_source", "op": "in", "value": ["google", "newsletter"]}],
        "order_by": ["-leads.created_at"], "limit": 24,
    }]})
    metrics: list[str] = Field(default_factory=list, description="metric names, or model.measure")
    dimensions: list[Union[str, DimensionIn]] = Field(
        default_factory=list, description='"model.dimension", "model.dimension:grain" or {"name", "grain"}')
    filters: list[FilterIn] = Field(default_factory=list)
    order_by: list[Union[str, OrderIn]] = Field(default_factory=list, description='"field", "-field" (descending) or {"field", "descending"}')
    limit: int | None = Field(None, ge=0)
    offset: int | None = Field(None, ge=0)
    window: str | None = Field(None, description="override every metric's trailing window, e.g. '3 hours'")
    as_of: str | None = Field(None, description="evaluate with only rows at or before this moment (ISO 8601)")

    def semantic_query(self) -> SemanticQuery:
        dimensions = []
        for d in self.dimensions:
            if isinstance(d, str):
                name, _, grain = d.partition(":")
                dimensions.append(DimensionRef(name, grain or None))
            else:
                dimensions.append(DimensionRef(d.name, d.grain))
        order = []
        for o in self.order_by:
            if isinstance(o, str):
                order.append(OrderBy(o[1:], True) if o.startswith("-") else OrderBy(o))
            else:
                order.append(OrderBy(o.field, o.descending))
        filters = [Filter(f.field, f.op, _filter_value(f.value), f.grain) for f in self.filters]
        return SemanticQuery(
            metrics=tuple(self.metrics), dimensions=tuple(dimensions), filters=tuple(filters), order_by=tuple(order),
            limit=self.limit, offset=self.offset, window=self.window, as_of=self.as_of,
        )


class CompileIn(QueryIn):
    dialect: str | None = Field(None, description="duckdb, postgres, materialize or risingwave (default: the engine's)")


def _filter_value(value: Any) -> Any:
    if isinstance(value, dict):
        raise QueryError("a filter value must be a scalar or a list of scalars, not an object", "22023")
    if isinstance(value, list):
        if any(isinstance(v, (list, dict)) for v in value):
            raise QueryError("a filter value list must hold scalars", "22023")
        return tuple(value)
    return value


# ---- errors ------------------------------------------------------------------------------

def http_status(code: str) -> int:
    """The HTTP status for a QueryError's SQLSTATE."""
    if code.startswith("08") or code.startswith("57P") or code == "53300":
        return 503  # engine unreachable or refusing connections
    if code == "57014":
        return 504  # timed out (or cancelled)
    if code in ("58000", "XX000"):
        return 502  # the engine failed the query
    return 400


def error_response(message: str, code: str, status: int | None = None) -> Response:
    body = dumps({"error": {"message": message, "code": code}})
    return Response(body, status_code=status or http_status(code), media_type="application/json")


def _json(document: Any, status: int = 200) -> Response:
    return Response(dumps(document), status_code=status, media_type="application/json")


# ---- auth and last-resort errors (plain ASGI: cheaper per request than BaseHTTPMiddleware) --

class DoorMiddleware:
    """Refuses requests without a valid API key; turns an unexpected exception into one JSON 500."""

    def __init__(self, app, keys: ApiKeys):
        self.app = app
        self.keys = keys

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not self.keys or _is_public(scope) or self._authorized(scope):
            started = False

            async def tracking_send(message):
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                await send(message)

            try:
                return await self.app(scope, receive, tracking_send)
            except Exception as e:
                log.exception("internal error answering %s %s", scope.get("method"), scope.get("path"))
                if started:
                    raise
                body = dumps({"error": {"message": f"internal error ({type(e).__name__}); see the server log", "code": "XX000"}})
                await send({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
            (b"content-length", str(len(_UNAUTHORIZED)).encode()),
        ]})
        await send({"type": "http.response.body", "body": _UNAUTHORIZED})

    def _authorized(self, scope) -> bool:
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        return self.keys.check(authorization)


def _is_public(scope) -> bool:
    path = scope["path"]
    if path in _PUBLIC_PATHS or path.startswith("/static/"):
        return True
    # The GraphiQL page (what a browser GET receives, even with ?query=) holds nothing of the
    # model; its requests to /graphql carry the key from its header editor.
    if path == "/graphql" and scope["method"] == "GET":
        return _wants_html(scope)
    return False


def _wants_html(scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"accept":
            return b"text/html" in value
    return False


# ---- GraphQL over HTTP ------------------------------------------------------------------

@dataclass
class GraphQLContext:
    service: MetricsService
    workers: "EngineWorkers"
    request: Request | None = None
    freshness: list = field(default_factory=list)  # one entry per field read from a materialization


def _noting_freshness(context: GraphQLContext, result):
    if result.freshness is not None and result.freshness not in context.freshness:
        context.freshness.append(result.freshness)
    return result


async def _run_query(context: GraphQLContext, model: SemanticModel, query: SemanticQuery, transform):
    service = context.service
    return await context.workers.run(lambda: transform(_noting_freshness(context, service.run(query, model=model))))


class EngineWorkers:
    """Worker threads for engine work, at most `size` at once.

    Each thread keeps its own engine cursor or connection, so queries run in parallel; the cap
    keeps memory bounded (every DuckDB cursor and thread holds buffers) and stops a burst of
    requests from thrashing the engine, which parallelises each query by itself anyway.
    """

    def __init__(self, size: int):
        self.size = size
        self._limiter = None

    async def run(self, func, *args):
        if self._limiter is None:  # made inside the event loop, as anyio requires
            self._limiter = anyio.CapacityLimiter(self.size)
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)


def default_workers(service: MetricsService) -> int:
    """`http: {workers: N}` in the project file, else twice the CPUs (at least 4, at most 32)."""
    import os

    http = service.project.settings.get("http")
    if isinstance(http, dict) and http.get("workers"):
        return max(1, int(http["workers"]))
    return min(32, max(4, 2 * (os.cpu_count() or 2)))


class _DocumentCache:
    """Parsed and validated documents by query text, per schema (validation is the costly part)."""

    def __init__(self, size: int = 256):
        self.size = size
        self.entries: OrderedDict[tuple[int, str], tuple[Any, Any, list]] = OrderedDict()

    def get(self, schema, text: str) -> tuple[Any, list]:
        from graphql import parse, validate
        from graphql.error import GraphQLSyntaxError

        key = (id(schema), text)
        entry = self.entries.get(key)
        if entry is not None and entry[0] is schema:
            self.entries.move_to_end(key)
            return entry[1], entry[2]
        try:
            document = parse(text)
        except GraphQLSyntaxError as e:
            return None, [e]
        errors = validate(schema, document)
        if len(text) <= 32_768:  # queries are small; a huge one is not worth keeping
            self.entries[key] = (schema, document, errors)
            if len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return document, errors


# ---- the app -----------------------------------------------------------------------------

def create_app(service: MetricsService, api_keys: ApiKeys | None = None, watcher=None) -> FastAPI:
    """The FastAPI app for `service`; `watcher` (a ModelWatcher) feeds /health its reload errors."""
    app = FastAPI(
        title="metrics-layer", version=_version(),
        description="Semantic metrics over REST. GraphQL is at [/graphql](/graphql) (GraphiQL in a browser).",
    )
    keys = api_keys or ApiKeys()
    workers = EngineWorkers(default_workers(service))
    documents = _DocumentCache()
    probe = HealthProbe(service)
    app.state.service = service
    app.state.watcher = watcher
    schema_cache: list = []  # the SchemaCache, made on first use: graphql-core is imported late to start fast
    schema_lock = threading.Lock()

    def schema_for(model: SemanticModel):
        if not schema_cache:
            with schema_lock:
                if not schema_cache:
                    from .graphql_schema import SchemaCache

                    schema_cache.append(SchemaCache(_run_query))
        return schema_cache[0].get(model)

    def warm_up() -> None:
        """Import and build what the first requests need; call in a thread once serving."""
        schema_for(service.model)
        probe._ping()

    app.state.schema_for = schema_for
    app.state.warm_up = warm_up
    started = dt.datetime.now(dt.timezone.utc)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(DoorMiddleware, keys=keys)

    @app.exception_handler(QueryError)
    async def _query_error(_request: Request, e: QueryError) -> Response:
        return error_response(e.message, e.code, 413 if isinstance(e, BodyTooLarge) else None)

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(_request: Request, e: RequestValidationError) -> Response:
        problems = []
        for err in e.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg')}")
        return error_response("invalid request: " + "; ".join(problems), "22023", 400)

    @app.get("/", include_in_schema=False)
    async def _root() -> Response:
        return RedirectResponse("/graphql")

    # -- GraphQL

    async def graphql_endpoint(request: Request) -> Response:
        if request.method == "GET":
            params = request.query_params
            if "text/html" in request.headers.get("accept", ""):  # a browser: GraphiQL (it reads ?query=)
                return HTMLResponse(graphiql_page(service.model, keys_required=bool(keys)))
            payload: dict[str, Any] = {"query": params.get("query"), "operationName": params.get("operationName")}
            if params.get("variables"):
                try:
                    payload["variables"] = json.loads(params["variables"])
                except ValueError:
                    return _graphql_request_error("variables is not valid JSON")
        else:
            content_type = request.headers.get("content-type", "")
            body = await request.body()
            if content_type.startswith("application/graphql"):
                payload = {"query": body.decode("utf-8", "replace")}
            else:
                try:
                    payload = json.loads(body or b"null")
                except ValueError:
                    return _graphql_request_error("the request body is not valid JSON; send {\"query\": \"...\"}")
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str) or not payload["query"].strip():
            return _graphql_request_error("no query: send {\"query\": \"{ ... }\", \"variables\": {...}}")
        variables = payload.get("variables")
        if variables is not None and not isinstance(variables, dict):
            return _graphql_request_error("variables must be a JSON object")
        operation = payload.get("operationName")
        if operation is not None and not isinstance(operation, str):
            return _graphql_request_error("operationName must be a string")

        model = service.model  # one model for the whole request, even if a reload lands meanwhile
        schema = schema_for(model)
        document, errors = documents.get(schema, payload["query"])
        if errors:
            return _json({"errors": [e.formatted for e in errors]})
        from graphql import GraphQLError, execute

        from .graphql_schema import CompletingExecutionContext

        context = GraphQLContext(service, workers, request)
        result = execute(schema, document, context_value=context,
                         variable_values=variables, operation_name=operation,
                         execution_context_class=CompletingExecutionContext)
        if isawaitable(result):
            result = await result
        response: dict[str, Any] = {}
        if result.errors:
            for error in result.errors:
                if error.original_error is not None and not isinstance(error.original_error, GraphQLError):
                    log.error("GraphQL resolver error at %s", error.path, exc_info=error.original_error)
            response["errors"] = [e.formatted for e in result.errors]
        response["data"] = result.data
        if context.freshness:  # fields read from materializations: which, and how fresh
            response["extensions"] = {"freshness": context.freshness}
        return _json(response)

    app.add_api_route("/graphql", graphql_endpoint, methods=["GET", "POST"], include_in_schema=False)

    # -- REST

    @app.post("/api/v1/query", tags=["query"], summary="Run a query", responses={
        200: {"description": "columns with logical types, rows as objects keyed by the names as written, and the SQL run",
              "content": {"application/json": {"example": {
                  "columns": [{"name": "predictions.model_version", "type": "text"}, {"name": "accuracy", "type": "double"}],
                  "rows": [{"predictions.model_version": "v2", "accuracy": 0.8123}], "sql": "SELECT ..."}}}},
        400: {"description": "the query cannot be answered as asked: {error: {message, code}}"},
        401: {"description": "missing or invalid API key"},
        503: {"description": "the engine cannot be reached"}, 504: {"description": "the query timed out"},
    })
    async def query_endpoint(body: QueryIn) -> Response:
        query = body.semantic_query()
        model = service.model

        def answer() -> bytes:  # in the worker thread, encoding included: big results spare the loop
            result = service.run(query, model=model)
            names = [c.name for c in result.columns]
            # Values go as they are: dumps writes Decimal, datetime and the like without loss.
            rows = [dict(zip(names, row)) for row in result.rows]
            answer = {"columns": [{"name": c.name, "type": c.type} for c in result.columns], "rows": rows, "sql": result.sql}
            if result.freshness is not None:
                answer["extensions"] = {"freshness": result.freshness}
            return dumps(answer)

        return Response(await workers.run(answer), media_type="application/json")

    @app.post("/api/v1/compile", tags=["query"], summary="Compile a query to SQL", responses={
        200: {"content": {"application/json": {"example": {"sql": "SELECT ...", "dialect": "duckdb"}}}},
        400: {"description": "the query cannot be compiled: {error: {message, code}}"},
    })
    async def compile_endpoint(body: CompileIn) -> Response:
        query = body.semantic_query()
        dialect = body.dialect or service.dialect
        sql = await workers.run(partial(service.compile, query, dialect, model=service.model))
        return _json({"sql": sql, "dialect": dialect})

    @app.get("/api/v1/catalog", tags=["catalog"], summary="Views, metrics and dimensions")
    async def catalog_endpoint() -> Response:
        from .graphql_schema import model_catalog

        return _json(model_catalog(service.model))

    # -- features (docs/http.md "Features"): thin doors over features.py and the service

    max_spine_bytes = training_set_max_bytes(service)

    @app.post("/api/features/training-set", tags=["features"], summary="A training set over a posted spine", responses={
        200: {"description": "the spine's columns plus one per metric, one row per spine row in order: JSON "
                             "{columns, rows} (default), CSV (Accept: text/csv) or an Arrow IPC stream "
                             "(Accept: application/vnd.apache.arrow.stream); streamed"},
        400: {"description": "bad spine or parameters: {error: {message, code}}"},
        413: {"description": "the body is larger than http.training_set_max_mb"},
    }, openapi_extra={"requestBody": {"content": {
        "application/json": {"schema": {"type": "object", "required": ["spine", "metrics"], "properties": {
            "spine": {"type": "array", "items": {"type": "object"}},
            "at": {"type": "string", "default": "at"}, "metrics": {"type": "array", "items": {"type": "string"}},
            "entity": {"type": "string"}, "key": {"type": "string"},
            "filters": {"type": "array", "items": {"type": "object"}}}},
            "example": {"spine": [{"at": "2026-03-01T12:00:00", "lead_id": 7}], "metrics": ["conversion_rate_fb_3h"]}},
        "text/csv": {"schema": {"type": "string"}, "example": "at,lead_id\n2026-03-01T12:00:00,7\n"}}}})
    async def training_set_endpoint(request: Request) -> Response:
        body = await _limited_body(request, max_spine_bytes)
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        spine, params = _training_set_request(content_type, body, request.query_params)

        def answer():
            from ..features import training_set

            return training_set(service, spine, params["metrics"], at=params["at"], entity=params["entity"],
                                key=params["key"], filters=params["filters"])

        table = await workers.run(answer)
        media_type, chunks = _encoded_table(table, request.headers.get("accept", ""))
        return StreamingResponse(chunks, media_type=media_type)

    @app.get("/api/features/{view}", tags=["features"], summary="Current feature values of a keyed view, per key", responses={
        200: {"description": "per key, the current value of each metric of the view, where it was read from and how fresh",
              "content": {"application/json": {"example": {
                  "view": "merchant_features", "entity": "transactions.merchant", "metrics": ["merchant_fraud_rate_7d"],
                  "source": "materialization merchant_fraud_now", "freshness": {"refreshed_at": "2026-03-01 11:59:00Z"},
                  "rows": [{"key": "17", "values": {"merchant_fraud_rate_7d": 0.012}}]}}}},
        400: {"description": "unknown view, a view without an entity, no keys: {error: {message, code}}"},
    })
    async def online_features_endpoint(view: str, request: Request) -> Response:
        from ..features import online_values

        keys = request.query_params.getlist("key")
        model = service.model
        return Response(await workers.run(lambda: dumps(online_values(service, view, keys, model=model))),
                        media_type="application/json")

    @app.get("/api/monitors", tags=["monitors"], summary="Monitors: state, last value per group, last evaluation")
    async def monitors_endpoint() -> Response:
        from ..monitors import Monitors, status

        monitors = getattr(app.state, "monitors", None) or Monitors(service, record=False)
        return _json({"monitors": status(monitors)})

    @app.get("/health", tags=["health"], summary="Model status, engine reachability, last reload errors")
    async def health_endpoint(request: Request) -> Response:
        model = service.model
        # With API keys, a caller without one learns only whether the server is well: no
        # folder, engine URL or engine/reload messages (they may hold paths, hosts, names).
        detailed = not keys or keys.check(request.headers.get("authorization"))
        engine: dict[str, Any] = {"dialect": service.dialect, "reachable": True, "error": None}
        t0 = time.perf_counter()
        error = await probe.check()
        if error is not None:
            engine.update(reachable=False, **error)
        engine["ping_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        reload_errors = list(watcher.last_reload_errors) if watcher is not None else []
        last_reload = watcher.last_reload_at.isoformat() if watcher is not None and watcher.last_reload_at else None
        status = "ok" if engine["reachable"] and not reload_errors else "degraded"
        document = {
            "status": status,
            "model": {
                "status": "stale: the last reload failed, the previous model is serving" if reload_errors else "ok",
                "models": len(model.models), "metrics": len(model.metrics), "views": len(model.views),
                "directory": str(service.project.metrics_dir),
            },
            "engine": engine,
            "last_reload_errors": reload_errors,
            "last_reload_at": last_reload,
            "hot_reload": watcher is not None,
            "auth": "api keys" if keys else "none",
            "started_at": started.isoformat(),
        }
        if not detailed:
            document = {
                "status": status, "model": {"status": document["model"]["status"]},
                "engine": {"reachable": engine["reachable"]}, "auth": document["auth"],
                "detail": "send an API key (Authorization: Bearer <key>) for the details",
            }
        return _json(document, 200 if engine["reachable"] else 503)

    return app


# ---- features: request parsing and streamed encodings -------------------------------------

ARROW_STREAM = "application/vnd.apache.arrow.stream"
_CHUNK_ROWS = 8192  # rows per encoded chunk of a streamed training set


def training_set_max_bytes(service: MetricsService) -> int:
    """`http: {training_set_max_mb: N}` in the project file (default 64 MB)."""
    http = service.project.settings.get("http") if service.project is not None else None
    mb = http.get("training_set_max_mb") if isinstance(http, dict) else None
    return int(float(mb) * 1024 * 1024) if mb else 64 * 1024 * 1024


async def _limited_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
    return b"".join(parts)


class BodyTooLarge(QueryError):
    def __init__(self, limit: int):
        super().__init__(f"the request body is larger than {limit // (1024 * 1024)} MB (http.training_set_max_mb); "
                         "send a smaller spine or run metrics-layer features on a file", "54000")


def _training_set_request(content_type: str, body: bytes, query_params) -> tuple[Any, dict]:
    """(spine as an Arrow table, parameters) from a JSON body, or a CSV body with the parameters
    in the query string (?metric=...&at=...&entity=...&key=...)."""
    import pyarrow as pa

    if content_type in ("text/csv", "application/csv"):
        import io

        import pyarrow.csv as pcsv

        if not body.strip():
            raise QueryError("the CSV body is empty: send a header line and one line per spine row", "22023")
        try:
            spine = pcsv.read_csv(io.BytesIO(body))
        except pa.ArrowInvalid as e:
            raise QueryError(f"the CSV body does not parse: {str(e).splitlines()[0]}", "22P02") from None
        params = {"metrics": query_params.getlist("metric") or query_params.getlist("metrics"),
                  "at": query_params.get("at", "at"), "entity": query_params.get("entity"), "key": query_params.get("key"),
                  "filters": []}
    elif content_type in ("application/json", ""):
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            raise QueryError('the body is not valid JSON; send {"spine": [{"at": ...}, ...], "metrics": [...]}', "22P02") from None
        if not isinstance(payload, dict):
            raise QueryError('the body must be a JSON object: {"spine": [...], "metrics": [...]}', "22023")
        unknown = sorted(set(payload) - {"spine", "at", "metrics", "entity", "key", "filters"})
        if unknown:
            raise QueryError(f"unknown field(s) {', '.join(unknown)}; fields: spine, at, metrics, entity, key, filters", "22023")
        rows = payload.get("spine")
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise QueryError('spine must be a non-empty list of row objects, e.g. [{"at": "2026-03-01T12:00:00"}]', "22023")
        try:
            spine = pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise QueryError(f"the spine's rows do not form a table (a column mixes types?): {str(e).splitlines()[0]}",
                             "22023") from None
        raw_filters = payload.get("filters") or []
        try:
            if not isinstance(raw_filters, list):
                raise ValueError
            filters = [FilterIn.model_validate(f) for f in raw_filters]
        except ValueError:  # pydantic's ValidationError too
            raise QueryError('filters must be a list of objects {"field", "op", "value"}', "22023") from None
        params = {"metrics": payload.get("metrics"), "at": payload.get("at", "at"), "entity": payload.get("entity"),
                  "key": payload.get("key"),
                  "filters": [Filter(f.field, f.op, _filter_value(f.value), f.grain) for f in filters]}
    else:
        raise QueryError(f"content type {content_type!r}: send application/json or text/csv", "22023")
    metrics = params["metrics"]
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise QueryError('metrics must be a non-empty list of metric names (CSV body: ?metric=M&metric=M2)', "22023")
    for name in ("at", "entity", "key"):
        if params[name] is not None and not isinstance(params[name], str):
            raise QueryError(f"{name} must be a string (a column or entity name)", "22023")
    return spine, params


def _encoded_table(table, accept: str):
    """(media type, iterator of byte chunks) for a training set, by the Accept header."""
    accept = accept.lower()
    if ARROW_STREAM in accept:
        return ARROW_STREAM, _arrow_chunks(table)
    if "text/csv" in accept:
        return "text/csv; charset=utf-8", _csv_chunks(table)
    return "application/json", _json_chunks(table)


class _Pending(io.RawIOBase):
    """A write-only file whose bytes are taken out after each Arrow message."""

    def __init__(self):
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def _arrow_chunks(table):
    import pyarrow as pa

    sink = _Pending()
    writer = pa.ipc.new_stream(sink, table.schema)
    yield sink.take()  # the schema message
    for batch in table.to_batches(max_chunksize=_CHUNK_ROWS):
        writer.write_batch(batch)
        yield sink.take()
    writer.close()
    yield sink.take()  # end-of-stream marker


def _csv_chunks(table):
    import io

    import pyarrow.csv as pcsv

    for i, offset in enumerate(range(0, max(table.num_rows, 1), _CHUNK_ROWS)):
        out = io.BytesIO()
        pcsv.write_csv(table.slice(offset, _CHUNK_ROWS), out, pcsv.WriteOptions(include_header=i == 0))
        yield out.getvalue()


def _json_chunks(table):
    names = table.column_names
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    yield dumps({"columns": columns})[:-1] + b', "rows": ['
    for offset in range(0, table.num_rows, _CHUNK_ROWS):
        rows = [dict(zip(names, values)) for values in zip(*(c.to_pylist() for c in table.slice(offset, _CHUNK_ROWS).columns))]
        yield (b"," if offset else b"") + dumps(rows)[1:-1]
    yield b"]}"


class HealthProbe:
    """Engine pings for /health, in a thread of their own and one at a time: /health waits for
    the current ping at most `wait` seconds and never queues behind queries or a hung engine."""

    def __init__(self, service: MetricsService, wait: float = 2.0, timeout: float = 5.0):
        self.service = service
        self.wait = wait
        self.timeout = timeout
        self._inflight: asyncio.Future | None = None
        self._executor = None

    def _ping(self) -> None:
        self.service.engine.execute("SELECT 1", timeout=self.timeout)

    async def check(self) -> dict[str, Any] | None:
        """None when the engine answered; else {error, code?}."""
        from concurrent.futures import ThreadPoolExecutor

        if self._inflight is None or self._inflight.done():
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="health")
            self._inflight = asyncio.get_running_loop().run_in_executor(self._executor, self._ping)
        try:
            await asyncio.wait_for(asyncio.shield(self._inflight), self.wait)
        except asyncio.TimeoutError:
            return {"error": f"the engine did not answer a ping within {self.wait:g} s", "code": "57014"}
        except QueryError as e:
            return {"error": e.message, "code": e.code}
        except Exception as e:  # health must answer whatever the engine does
            return {"error": f"{type(e).__name__}: {e}"}
        return None


def _graphql_request_error(message: str) -> Response:
    return Response(dumps({"errors": [{"message": message}]}), status_code=400, media_type="application/json")


def _version() -> str:
    from .. import __version__

    return __version__


# ---- GraphiQL ----------------------------------------------------------------------------

def example_query(model: SemanticModel) -> str:
    """A small query over the first view, to start GraphiQL and the printed curl example with."""
    from ..views import public_views

    views = list(public_views(model).values())
    if not views:
        return "{\n  catalog {\n    metrics { name description }\n  }\n}\n"
    view = views[0]
    lines = []
    dims = [f for f in view.dimensions if f.type != "time"][:1]
    times = [f for f in view.dimensions if f.type == "time"][:1]
    lines += [f.name for f in dims]
    lines += [f"{f.name} {{ day }}" for f in times]
    lines += [f.name for f in view.metrics[:2]]
    order = f"orderBy: {{{times[0].name}: desc}}, " if times else ""
    body = "\n    ".join(lines)
    return f"{{\n  {view.name}({order}limit: 10) {{\n    {body}\n  }}\n}}\n"


_GRAPHIQL_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>metrics-layer GraphiQL</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/graphiql.min.css">
<style>html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<script id="config" type="application/json">{config}</script>
<script src="/static/react.production.min.js"></script>
<script src="/static/react-dom.production.min.js"></script>
<script src="/static/graphiql.min.js"></script>
<script>
(function () {{
  var config = JSON.parse(document.getElementById("config").textContent);
  var params = new URLSearchParams(window.location.search);
  var query = params.get("query") || config.defaultQuery;
  var fetcher = GraphiQL.createFetcher({{ url: window.location.pathname }});
  var props = {{
    fetcher: fetcher,
    query: query,
    defaultEditorToolsVisibility: config.keysRequired ? "headers" : false,
    shouldPersistHeaders: false,
    isHeadersEditorEnabled: true
  }};
  if (config.keysRequired) {{ props.headers = '{{"Authorization": "Bearer <your API key>"}}'; }}
  ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(GraphiQL, props));
  if (params.get("run") === "1") {{
    // Press the run button once GraphiQL has rendered it (used by links and the browser test).
    var tries = 0;
    var timer = setInterval(function () {{
      var button = document.querySelector(".graphiql-execute-button");
      if (button || ++tries > 200) {{ clearInterval(timer); if (button) button.click(); }}
    }}, 50);
  }}
}})();
</script>
</body>
</html>
"""


_KEYED_EXAMPLE = "{\n  catalog {\n    views { name description }\n  }\n}\n"


def graphiql_page(model: SemanticModel, keys_required: bool = False) -> str:
    """The page holds nothing of the model when API keys protect it (it is served without a key)."""
    default = _KEYED_EXAMPLE if keys_required else example_query(model)
    config = json.dumps({"defaultQuery": default, "keysRequired": keys_required})
    return _GRAPHIQL_HTML.format(config=config.replace("</", "<\\/"))
