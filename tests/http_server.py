"""A real uvicorn server on a loopback port, in a background thread, for the HTTP tests."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from conftest import make_project
from metrics_layer.project import load_project
from metrics_layer.serve.auth import ApiKeys
from metrics_layer.serve.http import create_app
from metrics_layer.service import MetricsService


class LiveServer:
    """Serves `app` on 127.0.0.1:<free port> until stop()."""

    def __init__(self, app, service: MetricsService | None = None, watcher=None):
        self.app = app
        self.service = service
        self.watcher = watcher
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def start(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 60  # only so that a broken start cannot hang
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        if self.watcher is not None:
            self.watcher.stop()
        self.socket.close()


def serve_project(folder: Path, keys: ApiKeys | None = None, watch: bool = False, interval: float = 0.1) -> LiveServer:
    """Start a server over the project in `folder` (optionally with hot reload)."""
    from metrics_layer.serve.reload import ModelWatcher

    service = MetricsService(load_project(folder))
    watcher = ModelWatcher(service, interval=interval).start() if watch else None
    app = create_app(service, api_keys=keys, watcher=watcher)
    return LiveServer(app, service, watcher).start()


def project_over(folder: Path, engine_url: str, extra: str = "") -> Path:
    return make_project(folder, engine_url, extra)


def wait_for(condition, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):
    """Poll `condition()` until it returns a truthy value; fail after `timeout` seconds.

    The time-out is generous on purpose: it only keeps a test that will fail from hanging,
    and a busy machine must not fail a test that would pass."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {last!r}")
