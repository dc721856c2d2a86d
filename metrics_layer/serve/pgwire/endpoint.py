"""Start the SQL endpoint: users from the project, the semantic backend, the protocol server.

Project file:

    sql:
      port: 15432
      auth: scram-sha-256          # or md5, password, trust
      tls_cert: server.crt         # optional: TLS of the endpoint's own (PEM, relative to the project)
      tls_key: server.key
      views_as: view               # how the catalog lists views: view (\\dv, get_view_names), or table for
                                   # tools that list only tables (\\dt, get_table_names); SET metrics.views_as per session
      failed_logins:               # rate limit (auth.LoginThrottle); these are the defaults
        per_address: {burst: 10, per_minute: 10}   # then refused (53300) until refilled
        per_user: {burst: 30, per_minute: 30}      # then each attempt delayed, up to max_delay
        max_delay: 5                               # seconds; beyond it refused (53300)
    users:
      analyst: {password_env: ANALYST_PASSWORD}                 # every view
      fraud_team: {password: s3cret, views: [fraud_monitoring]}  # only these views

$METRICS_LAYER_USERS ("name:password,name2:password2") adds users who see every view.
With no users configured: the demo project accepts user `metrics`, password `metrics`;
another project on a loopback address accepts any user name without a password (trust);
on any other address the endpoint refuses to start until users are configured.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any

from ...project import Project, ProjectError
from .semantic import SemanticBackend

ENV_USERS = "METRICS_LAYER_USERS"
DEMO_USER = ("metrics", "metrics")


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_users(project: Project, environ: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, list[str] | None]]:
    """(user -> password, user -> visible view names or None for all) from the project and env."""
    environ = os.environ if environ is None else environ
    passwords: dict[str, str] = {}
    views: dict[str, list[str] | None] = {}
    configured = project.settings.get("users") or {}
    if isinstance(configured, list):  # [{name:, password:, views:}] is accepted too
        configured = {str(u.get("name")): u for u in configured if isinstance(u, dict)}
    if not isinstance(configured, dict):
        raise ProjectError("users: must be a mapping of user name to {password | password_env, views}")
    for name, spec in configured.items():
        if isinstance(spec, str):
            spec = {"password": spec}
        if not isinstance(spec, dict):
            raise ProjectError(f"users.{name}: must be a mapping with password (or password_env) and optional views")
        unknown = set(spec) - {"password", "password_env", "views"}
        if unknown:
            raise ProjectError(f"users.{name}: unknown key(s) {', '.join(sorted(unknown))}; valid: password, password_env, views")
        password = spec.get("password")
        if password is None and spec.get("password_env"):
            password = environ.get(str(spec["password_env"]))
            if password is None:
                raise ProjectError(f"users.{name}: environment variable {spec['password_env']} is not set")
        if password is None:
            raise ProjectError(f"users.{name}: needs password or password_env")
        allowed = spec.get("views")
        if allowed is not None and not (isinstance(allowed, list) and all(isinstance(v, str) for v in allowed)):
            raise ProjectError(f"users.{name}.views: must be a list of view names")
        passwords[str(name)] = str(password)
        views[str(name)] = list(allowed) if allowed is not None else None
    for entry in (environ.get(ENV_USERS) or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, password = entry.partition(":")
        if not sep or not name or not password:
            raise ProjectError(f"{ENV_USERS}: write name:password pairs separated by commas")
        passwords[name] = password
        views[name] = None
    return passwords, views


def check_views(views: dict[str, list[str] | None], known: list[str]) -> None:
    from ...model.errors import did_you_mean

    for user, allowed in views.items():
        for name in allowed or []:
            if name not in known:
                raise ProjectError(f"users.{user}.views: unknown view '{name}'{did_you_mean(name, known, 'views')}")


class SqlEndpoint:
    """The running endpoint: `port` is the bound port; `await close()` stops it."""

    def __init__(self, server: Any, backend: SemanticBackend, auth: str, users: dict[str, str]):
        self.server = server
        self.backend = backend
        self.auth = auth
        self.users = users

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def host(self) -> str:
        return self.server.host

    async def close(self) -> None:
        await self.server.stop()


def endpoint_config(project: Project, host: str, environ: dict[str, str] | None = None) -> tuple[str, dict[str, str] | None, dict]:
    """(auth method, user -> password or None for trust, user -> views)."""
    sql_settings = project.settings.get("sql") or {}
    if not isinstance(sql_settings, dict):
        raise ProjectError("sql: must be a mapping with host, port, auth")
    passwords, views = load_users(project, environ)
    auth = str(sql_settings.get("auth") or "scram-sha-256").lower()
    if auth not in ("scram-sha-256", "md5", "password", "trust"):
        raise ProjectError(f"sql.auth: {auth!r} is not one of scram-sha-256, md5, password, trust")
    if not passwords:
        if project.is_demo:
            passwords = {DEMO_USER[0]: DEMO_USER[1]}
            views = {DEMO_USER[0]: None}
        elif auth == "trust" or _is_loopback(host):
            return "trust", None, {}
        else:
            raise ProjectError(
                f"the SQL endpoint listens on {host}, not a loopback address: configure users in metrics_layer.yml "
                f"(users: {{name: {{password_env: VAR}}}}) or ${ENV_USERS}"
            )
    return auth, passwords, views


LIMIT_SETTINGS = ("max_message_bytes", "max_statement_length")


def limits_config(project: Project) -> dict[str, int]:
    """`sql: {max_message_bytes: N, max_statement_length: N}` (positive whole numbers), as PgWireServer options."""
    sql_settings = project.settings.get("sql") or {}
    limits = {}
    for key in LIMIT_SETTINGS:
        value = sql_settings.get(key) if isinstance(sql_settings, dict) else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1024:
            raise ProjectError(f"sql.{key}: must be a whole number of at least 1024, got {value!r}")
        limits[key] = value
    return limits


def views_as_config(project: Project) -> str:
    """`sql: {views_as: view | table}`: the relkind the catalog gives the views (default view)."""
    from .catalog import VIEWS_AS

    sql_settings = project.settings.get("sql") or {}
    value = sql_settings.get("views_as", "view") if isinstance(sql_settings, dict) else "view"
    if value not in VIEWS_AS:
        raise ProjectError(f"sql.views_as: must be one of {', '.join(VIEWS_AS)}, got {value!r}")
    return value


FAILED_LOGIN_KEYS = ("per_address", "per_user", "max_delay")
FAILED_LOGIN_BUCKET_KEYS = ("burst", "per_minute")


def login_throttle_config(project: Project) -> Any:
    """`sql: {failed_logins: {per_address: {burst, per_minute}, per_user: {burst, per_minute}, max_delay}}`
    as an auth.LoginThrottle (the defaults for what is not given)."""
    from .auth import LoginThrottle

    sql_settings = project.settings.get("sql") or {}
    spec = sql_settings.get("failed_logins") if isinstance(sql_settings, dict) else None
    if spec is None:
        return LoginThrottle()
    if not isinstance(spec, dict):
        raise ProjectError(f"sql.failed_logins: must be a mapping with keys {', '.join(FAILED_LOGIN_KEYS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(FAILED_LOGIN_KEYS))
    if unknown:
        raise ProjectError(f"sql.failed_logins: unknown key(s) {', '.join(unknown)}; valid: {', '.join(FAILED_LOGIN_KEYS)}")
    defaults = LoginThrottle()
    options: dict[str, Any] = {}
    for key, buckets in (("per_address", defaults.addresses), ("per_user", defaults.users)):
        bucket = spec.get(key) or {}
        if not isinstance(bucket, dict) or set(bucket) - set(FAILED_LOGIN_BUCKET_KEYS):
            raise ProjectError(f"sql.failed_logins.{key}: must be a mapping with burst (failures at once, a whole "
                               f"number >= 1) and per_minute (refill, a number > 0), got {bucket!r}")
        burst, per_minute = bucket.get("burst", buckets.burst), bucket.get("per_minute", buckets.rate * 60)
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ProjectError(f"sql.failed_logins.{key}.burst: must be a whole number of at least 1, got {burst!r}")
        if isinstance(per_minute, bool) or not isinstance(per_minute, (int, float)) or per_minute <= 0:
            raise ProjectError(f"sql.failed_logins.{key}.per_minute: must be a number above 0, got {per_minute!r}")
        options[key] = (burst, float(per_minute))
    max_delay = spec.get("max_delay", defaults.max_delay)
    if isinstance(max_delay, bool) or not isinstance(max_delay, (int, float)) or max_delay < 0:
        raise ProjectError(f"sql.failed_logins.max_delay: must be a number of seconds (0 or more), got {max_delay!r}")
    return LoginThrottle(options["per_address"], options["per_user"], float(max_delay))


async def start_sql_endpoint(service, host: str, port: int, project: Project, **server_options: Any) -> SqlEndpoint:
    """Start the PostgreSQL-protocol endpoint over `service`; returns it once listening."""
    from ...views import public_views
    from .server import PgWireServer

    auth, passwords, views = endpoint_config(project, host)
    check_views(views, list(public_views(service.model)))
    backend = SemanticBackend(service, views, views_as=views_as_config(project))
    server_options = {**limits_config(project), "login_throttle": login_throttle_config(project), **server_options}
    tls = project.tls("sql")
    if tls is not None and "ssl_context" not in server_options:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(str(tls[0]), str(tls[1]))
        except (ssl.SSLError, OSError) as e:
            raise ProjectError(f"sql.tls_cert / sql.tls_key: cannot load the certificate and key: {e}") from None
        server_options["ssl_context"] = context  # clients ask for it (sslmode=require); plain connections still work
    server = PgWireServer(backend, host=host, port=port, users=passwords, auth_method=auth, **server_options)
    await server.start()
    if project.is_demo and passwords == {DEMO_USER[0]: DEMO_USER[1]}:
        print(f"SQL endpoint: demo user '{DEMO_USER[0]}', password '{DEMO_USER[1]}'", file=sys.stderr, flush=True)
    elif passwords is None:
        print("SQL endpoint: no users configured; any user name is accepted without a password on loopback (trust)",
              file=sys.stderr, flush=True)
    return SqlEndpoint(server, backend, auth, passwords or {})


def serve_until_stdin_closes(project_dir: str) -> None:
    """The SQL endpoint alone on a free loopback port: prints the port, stops when stdin closes.

    What tests and benchmarks run in a process of their own
    (`python -m metrics_layer.serve.pgwire.endpoint PROJECT`)."""
    import asyncio

    from ...project import load_project
    from ...service import MetricsService

    async def main() -> None:
        project = load_project(project_dir)
        endpoint = await start_sql_endpoint(MetricsService(project), "127.0.0.1", 0, project)
        print(endpoint.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await endpoint.close()

    asyncio.run(main())


if __name__ == "__main__":
    serve_until_stdin_closes(sys.argv[1])
