"""`metrics-layer serve`: HTTP (GraphQL + REST) and the PostgreSQL wire endpoint, one process.

Both doors share one MetricsService (one model, one engine) and one asyncio event loop.
Ctrl-C (or SIGTERM) stops both cleanly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import signal
import sys
import threading
import time
from typing import Any

from ..project import Project

log = logging.getLogger("metrics_layer.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 4000
DEFAULT_SQL_PORT = 15432


class ServeError(Exception):
    """A reason not to start, said plainly."""


def _setting(project: Project, door: str, key: str) -> Any:
    section = project.settings.get(door)
    if isinstance(section, dict):
        return section.get(key)
    if key == "port" and isinstance(section, int):  # `http: 4000` is a port
        return section
    return None


def _first(*values: Any) -> Any:
    """The first value given (0 is a value: any free port)."""
    return next(v for v in values if v is not None)


def _port(value: Any, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ServeError(f"{what} must be a port number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ServeError(f"{what} must be between 0 and 65535, got {port}")
    return port


def serve(args) -> int:
    """Entry point of the CLI's `serve` command. Returns the exit code."""
    t0 = time.perf_counter()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("metrics_layer").setLevel(logging.INFO)

    from ..model import load_model
    from ..project import load_project
    from .auth import is_loopback, load_api_keys

    project = load_project(getattr(args, "project", None))
    host = getattr(args, "host", None) or _setting(project, "http", "host") or DEFAULT_HOST
    http_port = _port(_first(getattr(args, "http_port", None), _setting(project, "http", "port"), DEFAULT_HTTP_PORT), "HTTP port")
    sql_port = _port(_first(getattr(args, "sql_port", None), _setting(project, "sql", "port"), DEFAULT_SQL_PORT), "SQL port")
    project.tls("http"), project.tls("sql")  # a missing certificate or key file: one clear error before starting
    keys = load_api_keys(project)
    if not keys and not is_loopback(host):
        print(
            f"error: refusing to listen on {host} without API keys: anyone who can reach it could query your data.\n"
            "  Configure keys (api_keys: [\"sha256:<hex>\"] in metrics_layer.yml, or METRICS_LAYER_API_KEYS=key1,key2),\n"
            "  or listen on loopback only (--host 127.0.0.1).", file=sys.stderr)
        return 2
    if project.is_demo:
        from ..cli import _ensure_demo_data

        _ensure_demo_data(project)
    model = load_model(project.metrics_dir)  # a broken model at start-up is fatal (the CLI prints its errors)

    from ..service import MetricsService

    service = MetricsService(project, model=model)
    if project.deploy.get("refresh") is True:  # refreshing DuckDB materializations writes the file
        service.read_only_engine = False
    # Open the engine (a DuckDB file takes tens of ms) and check the model's tables and columns
    # on it while the HTTP stack is imported; a model that cannot run is fatal, like bad YAML.
    checked: list[BaseException] = []
    check = threading.Thread(target=_check_schema, args=(service, model, checked), name="metrics-layer-engine-open", daemon=True)
    check.start()

    from .http import create_app
    from .reload import ModelWatcher

    check.join()
    if checked:
        raise checked[0]

    watcher = ModelWatcher(service).start()
    from .refresher import Refresher

    refresher = Refresher(service).start()
    from ..monitors import Monitors, MonitorTicker

    # History goes to monitors.history_store: a SQLite file next to a DuckDB file (read-only or not), else the engine.
    monitors = Monitors(service, query_timeout=project.query_timeout or 60.0)
    ticker = MonitorTicker(monitors).start()
    app = create_app(service, api_keys=keys, watcher=watcher)
    app.state.monitors = monitors
    try:
        asyncio.run(_serve_both(app, service, project, host, http_port, sql_port, keys, t0))
    except ServeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()
        refresher.stop()
        ticker.stop()
        _close_engine(service)
    print("metrics-layer: stopped", file=sys.stderr)
    return 0


async def _serve_both(app, service, project: Project, host: str, http_port: int, sql_port: int, keys, t0: float) -> None:
    import uvicorn

    # Bind the HTTP socket first, ourselves: a port in use is then one clear error, before the
    # SQL endpoint starts, and port 0 tells us the port it got.
    sock = _bind(host, http_port)
    http_port = sock.getsockname()[1]
    tls = project.tls("http")  # http: {tls_cert, tls_key}: HTTPS of the server's own
    tls_options = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", **tls_options)
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        server.should_exit = True

    # Our handlers stay in place around uvicorn's own (which it restores, then re-raises the
    # signal into): the re-raised signal lands here, so shutdown is one clean path.
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop)
        except (NotImplementedError, RuntimeError):  # not the main thread, or not Unix
            pass

    sql_endpoint, sql_note = await _start_sql(service, project, host, sql_port)
    announce = asyncio.create_task(_announce(server, app, service, project, host, http_port, sql_endpoint, sql_note, keys, t0))
    try:
        await server.serve(sockets=[sock])
    finally:
        announce.cancel()
        if sql_endpoint is not None:
            try:
                await sql_endpoint.close()
            except Exception:
                log.exception("closing the SQL endpoint")


def _bind(host: str, port: int):
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise ServeError(f"cannot listen for HTTP on {host}:{port}: {e.strerror or e}"
                         + ("; use --http-port to choose another port" if getattr(e, "errno", None) == 98 else "")) from None
    sock.set_inheritable(True)
    return sock


async def _start_sql(service, project: Project, host: str, port: int):
    try:
        from .pgwire.endpoint import start_sql_endpoint
    except ImportError as e:
        return None, f"SQL endpoint unavailable in this build ({e})"
    try:
        return await start_sql_endpoint(service, host, port, project), None
    except OSError as e:
        return None, f"SQL endpoint could not listen on {host}:{port}: {e.strerror or e}"


async def _announce(server, app, service, project: Project, host: str, http_port: int, sql_endpoint,
                    sql_note: str | None, keys, t0: float) -> None:
    while not server.started:
        await asyncio.sleep(0.005)
    from .http import example_query

    model = service.model
    shown_host = f"[{host}]" if ":" in host else host
    base = f"{'https' if project.tls('http') else 'http'}://{shown_host}:{http_port}"
    lines = [
        f"metrics-layer: {len(model.models)} models, {len(model.metrics)} metrics, {len(model.views)} views "
        f"from {project.metrics_dir} on {service.dialect}",
        f"  GraphQL  {base}/graphql   (open it in a browser for GraphiQL)",
        f"  REST     {base}/api/v1/query   (API docs: {base}/docs; health: {base}/health)",
    ]
    if sql_endpoint is not None:
        lines.append(f"  SQL      postgresql://{shown_host}:{sql_endpoint.port}   (PostgreSQL wire protocol)")
    else:
        lines.append(f"  SQL      {sql_note}")
    auth = " -H 'Authorization: Bearer $METRICS_LAYER_API_KEY'" if keys else ""
    body = json.dumps({"query": " ".join(example_query(model).split())})
    lines.append("Try:")
    lines.append(f"  curl -s {base}/graphql -H 'Content-Type: application/json'{auth} -d {shlex.quote(body)}")
    if sql_endpoint is not None:
        lines.append("  " + _psql_line(sql_endpoint.users, host, sql_endpoint.port, _example_sql(model)))
    if keys:
        lines.append(f"Auth: {len(keys)} API key(s); send Authorization: Bearer <key> (all but /health)")
    else:
        lines.append("Auth: none (no API keys configured), so listening on loopback only")
    lines.append(f"ready in {time.perf_counter() - t0:.2f} s (Ctrl-C to stop)")
    print("\n".join(lines), flush=True)
    # Build the GraphQL schema and open the engine now, off the loop, so that the first request
    # does not pay for them; say if the engine is down.
    try:
        await asyncio.to_thread(app.state.warm_up)
    except Exception as e:
        print(f"warning: the engine is not reachable yet: {getattr(e, 'message', e)}", file=sys.stderr, flush=True)


def _example_sql(model) -> str:
    """A SELECT over the first view: a plain dimension and a metric without a trailing window."""
    from ..views import public_views

    for view in public_views(model).values():
        dims = [f.name for f in view.dimensions if f.type != "time"][:1]
        plain = [f for f in view.metrics if not (f.ref in model.metrics and model.metrics[f.ref].window)]
        if plain:
            columns = ", ".join(dims + [plain[0].name])
            return f"SELECT {columns} FROM {view.name}" + (f" ORDER BY {dims[0]}" if dims else "")
    return "SELECT version()"


def _psql_line(users: dict[str, str], host: str, port: int, sql: str) -> str:
    """A psql command that works as printed. The demo user's password is public, so it is given;
    a configured user's is not printed (psql asks for it); with no users (trust) any name will do."""
    from .pgwire.endpoint import DEMO_USER

    user = next(iter(users), DEMO_USER[0])
    password = f"PGPASSWORD={shlex.quote(DEMO_USER[1])} " if (user, users.get(user)) == DEMO_USER else ""
    return f"{password}psql -h {host} -p {port} -U {user} -c {shlex.quote(sql)}"


def _check_schema(service, model, failures: list[BaseException]) -> None:
    """Open the engine and check `model` on it; the ValidationFailed, if any, goes to `failures`.
    Other errors surface again on first use and in /health."""
    from ..model import ValidationFailed

    try:
        service.check_schema(model)
    except ValidationFailed as e:
        failures.append(e)
    except Exception:
        pass


def _close_engine(service) -> None:
    engine = getattr(service, "_engine", None)
    # DuckDB is left to close at exit: closing its connection while worker threads still hold
    # their cursors makes DuckDB abort during interpreter shutdown.
    if engine is not None and engine.dialect != "duckdb":
        try:
            engine.close()
        except Exception:
            pass
