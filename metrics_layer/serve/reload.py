"""Hot reload: watch the project's YAML folder and swap in the new model when it validates.

A background thread polls the modification time and size of every .yml/.yaml file (no
dependency on inotify). Editors save in steps (truncate, write in pieces, rename), and a file
cut short can still be valid YAML that lacks half its metrics, so a change is loaded only when
it is complete:

* debounce: the folder must stay unchanged (mtimes and sizes) for `debounce` seconds
  (project file `reload: {debounce: 0.5}`; at least one poll);
* stable content: the files are read twice, and loaded only when both reads are identical;
* after loading, the files must still hold the content that was loaded, otherwise the new
  model is dropped and the next poll tries again.

The model is then checked against the engine's tables and columns. On success the service gets
the new model (one reference swap; requests in flight finish on the old one). On failure the
last good model keeps serving and the errors, with file:line, are kept for /health.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
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


DEFAULT_DEBOUNCE = 0.5  # seconds the folder must stay unchanged before a reload


def digest(directory: Path) -> dict[str, str] | None:
    """sha256 of every YAML file's content (None when a file vanished while reading)."""
    result = {}
    try:
        for path in yaml_files(directory):
            result[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
    return result


class ModelWatcher:
    """Polls `service.project.metrics_dir` and reloads the model when its files change."""

    def __init__(self, service: MetricsService, interval: float = 0.5,
                 on_reload: Callable[[Any], None] | None = None, debounce: float | None = None):
        self.service = service
        self.directory = Path(service.project.metrics_dir)
        self.interval = interval
        if debounce is None:
            debounce = getattr(service.project, "reload_debounce", DEFAULT_DEBOUNCE)
        self.debounce = max(float(debounce), interval)
        self.dropped = 0  # reloads abandoned because the files changed while loading
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
        """Reload if the files changed and are complete since; True when a reload was tried."""
        current = snapshot(self.directory)
        if current == self._seen:
            return False
        content = self._settle(current)
        if content is None:
            return False  # stopping
        current, hashes = content
        self.reload(expect=hashes)
        return True

    def _settle(self, current: Snapshot) -> tuple[Snapshot, dict[str, str]] | None:
        """Wait until the folder is quiet for `debounce` seconds and two reads of it agree."""
        step = min(self.interval, 0.1)
        quiet_since = time.monotonic()
        while True:
            if self._stop.wait(step):
                return None
            now = snapshot(self.directory)
            if now != current:
                current, quiet_since = now, time.monotonic()
                continue
            if time.monotonic() - quiet_since < self.debounce:
                continue
            first = digest(self.directory)
            second = digest(self.directory)
            if first is not None and first == second and snapshot(self.directory) == current:
                self._seen = current
                return current, first
            current, quiet_since = snapshot(self.directory), time.monotonic()

    def reload(self, expect: dict[str, str] | None = None) -> bool:
        """Load the folder now; True when the new model replaced the old one.

        `expect`: the files' content digests the caller saw settle; when the files no longer
        hold that content after loading, the model is dropped (the next poll sees the change)."""
        self.last_reload_at = dt.datetime.now(dt.timezone.utc)
        try:
            model = load_model(self.directory)
            if expect is not None and digest(self.directory) != expect:
                self.dropped += 1
                self._seen = {}  # a change after the settled state: poll again
                log.info("reload: the YAML changed while it was loaded; waiting for it to settle again")
                return False
            self.service.check_schema(model)
        except ValidationFailed as e:
            if expect is not None and digest(self.directory) != expect:
                self.dropped += 1
                self._seen = {}  # the errors are those of a file being written: wait for the next state
                return False
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
