"""The asyncio server: listeners, the connection registry, cancellation and shutdown.

    server = PgWireServer(backend, port=0, users={"alice": "secret"})
    await server.start()      # server.port is the bound port
    ...
    await server.stop()       # closes listeners, says goodbye to clients, closes sessions

`BackgroundServer` runs one on its own event-loop thread for synchronous callers and tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import logging
import secrets
import ssl
import threading
from typing import Any

from .auth import AUTH_METHODS, LoginThrottle, UserTable
from .backend import Backend
from . import protocol as p
from .connection import Connection
from .workers import WorkerPool

log = logging.getLogger("metrics_layer.serve.pgwire")

SERVER_VERSION = "15.0 (metrics-layer)"  # clients parse the leading number


class PgWireServer:
    """A PostgreSQL-protocol endpoint in front of a `Backend`.

        server = PgWireServer(backend, port=0, users={"alice": "secret"})
        await server.start()       # server.port is the bound port
        ...
        await server.stop()        # closes listeners, ends sessions
    """

    def __init__(
        self,
        backend: Backend,
        host: str = "127.0.0.1",
        port: int = 15432,
        users: dict[str, str] | None = None,
        auth_method: str = "scram-sha-256",
        ssl_context: ssl.SSLContext | None = None,
        max_workers: int = 32,
        server_version: str = SERVER_VERSION,
        max_message_bytes: int | None = None,
        max_statement_length: int | None = None,
        login_throttle: LoginThrottle | None = None,
    ):
        if auth_method not in AUTH_METHODS:
            raise ValueError(f"auth_method must be one of {AUTH_METHODS}, got {auth_method!r}")
        if auth_method != "trust" and users is None:
            raise ValueError(f"auth_method {auth_method!r} needs a users table")
        self.backend = backend
        self.host = host
        self.port = port
        self.users = UserTable(users) if users is not None else None
        self.auth_method = auth_method
        # Failed logins per address and user name (auth.LoginThrottle); the defaults unless given.
        self.login_throttle = login_throttle if login_throttle is not None else LoginThrottle()
        self.ssl_context = ssl_context
        # Memory per connection: a message is refused before it is read when longer than these.
        self.max_message_bytes = int(max_message_bytes or p.DEFAULT_MAX_MESSAGE_BYTES)
        self.max_statement_length = int(max_statement_length or p.DEFAULT_MAX_STATEMENT_LENGTH)
        self.parameters = {
            "server_version": server_version,
            "server_encoding": "UTF8",
            "client_encoding": "UTF8",
            "DateStyle": "ISO, MDY",
            "integer_datetimes": "on",
            "TimeZone": "UTC",
            "standard_conforming_strings": "on",
            "IntervalStyle": "postgres",
            "is_superuser": "off",
        }
        self._pool = WorkerPool(max_workers, "pgwire-exec")
        # Cancels and session closes get their own threads: they must run even when every
        # worker is busy with a long query.
        self._control_pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="pgwire-ctl")
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[int, Connection] = {}  # by pid, for CancelRequests
        self._live: set[Connection] = set()  # including those still starting up

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("pgwire listening on %s:%s", self.host, self.port)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        try:
            await self._server.serve_forever()
        finally:
            await self.stop()

    async def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.close()
        live = list(self._live)
        for conn in live:
            if not conn.closing:
                conn.task.cancel()  # each connection says goodbye (57P01) and cleans up
        if live:
            await asyncio.wait([conn.task for conn in live], timeout=timeout)
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout)
        self._pool.shutdown()
        self._control_pool.shutdown(wait=False)

    async def __aenter__(self) -> PgWireServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(self, reader, writer)
        conn.task = asyncio.current_task()
        self._live.add(conn)
        try:
            await conn.run()
        finally:
            self._live.discard(conn)

    def _register(self, conn: Connection) -> tuple[int, bytes]:
        """A fresh (pid, secret) for BackendKeyData; the pair authorizes CancelRequests."""
        while True:
            pid = secrets.randbelow(2**31 - 2) + 1
            if pid not in self._connections:
                break
        self._connections[pid] = conn
        return pid, secrets.token_bytes(4)

    def _cancel(self, pid: int, secret: bytes) -> None:
        conn = self._connections.get(pid)
        if conn is not None and hmac.compare_digest(conn.secret, secret):
            conn.request_cancel()


async def serve_pgwire(
    backend: Backend,
    host: str = "127.0.0.1",
    port: int = 15432,
    users: dict[str, str] | None = None,
    auth_method: str = "scram-sha-256",
    ssl_context: ssl.SSLContext | None = None,
    **options: Any,
) -> PgWireServer:
    """Start serving `backend` over the PostgreSQL protocol; returns the started server."""
    server = PgWireServer(backend, host, port, users, auth_method, ssl_context, **options)
    await server.start()
    return server


class BackgroundServer:
    """A PgWireServer on its own event loop thread, for synchronous callers and tests.

        with BackgroundServer(backend, port=0, auth_method="trust") as srv:
            psycopg.connect(host="127.0.0.1", port=srv.port, ...)
    """

    def __init__(self, backend: Backend, **kwargs: Any):
        self.server = PgWireServer(backend, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pgwire-loop", daemon=True)

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> BackgroundServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
