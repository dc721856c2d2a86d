"""Hot reload: watch the project's YAML folder and swap in the new model when it validates.

A background thread polls the modification time and size of every .yml/.yaml file (no
dependency on inotify), waits until the folder has stopped changing for one poll, then loads
the model and checks it against the engine's tables and columns. On success the service gets the new model (one reference swap; requests in flight
finish on the old one). On failure the old model keeps serving and the errors, with file:line,
are kept for /health.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path
from typing import Any, Callable

from ..model import ValidationFailed, load_model
from ..model.load import yaml_files
from ..service import MetricsService

log = logging.getLogger("metrics_layer.serve")

Snapshot = dict[str, tuple[int, int]]


def snapshot(directory: Path) -> Snapshot:
    """(mtime_ns, size) of every YAML file under `directory`."""
    result = {}
    try:
        files = yaml_files(directory)
    except OSError:
        return {}
    for path in files:
        try:
            stat = path.stat()
        except OSError:  # removed between listing and stat
            continue
        result[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return result


class ModelWatcher:
    """Polls `service.project.metrics_dir` and reloads the model when its files change."""

    def __init__(self, service: MetricsService, interval: float = 0.5,
                 on_reload: Callable[[Any], None] | None = None):
        self.service = service
        self.directory = Path(service.project.metrics_dir)
        self.interval = interval
        self.on_reload = on_reload
        self.last_reload_at: dt.datetime | None = None
        self.last_reload_errors: list[dict[str, Any]] = []
        self.reloads = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen = snapshot(self.directory)

    def start(self) -> "ModelWatcher":
        self._thread = threading.Thread(target=self._loop, name="metrics-layer-reload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # never let the watcher die: the server goes on serving
                log.exception("reload: unexpected error while watching %s", self.directory)

    def poll(self) -> bool:
        """Reload if the files changed and have settled since; True when a reload was tried."""
        current = snapshot(self.directory)
        if current == self._seen:
            return False
        # Editors write in steps (truncate, write, rename): wait until one poll sees no change.
        while not self._stop.wait(min(self.interval, 0.2)):
            settled = snapshot(self.directory)
            if settled == current:
                break
            current = settled
        self._seen = current
        self.reload()
        return True

    def reload(self) -> bool:
        """Load the folder now; True when the new model replaced the old one."""
        self.last_reload_at = dt.datetime.now(dt.timezone.utc)
        try:
            model = load_model(self.directory)
            self.service.check_schema(model)
        except ValidationFailed as e:
            self.last_reload_errors = [
                {"file": err.location.file, "line": err.location.line, "message": err.message, "text": str(err)}
                for err in e.errors
            ]
            log.error("reload failed, still serving the previous model:\n%s", e)
            return False
        except Exception as e:  # e.g. a file unreadable mid-write
            self.last_reload_errors = [{"file": str(self.directory), "line": None, "message": str(e), "text": f"{self.directory}: {e}"}]
            log.error("reload failed, still serving the previous model: %s", e)
            return False
        self.service.replace_model(model)
        self.last_reload_errors = []
        self.reloads += 1
        log.info("reloaded: %d models, %d metrics", len(model.models), len(model.metrics))
        if self.on_reload is not None:
            self.on_reload(model)
        return True
