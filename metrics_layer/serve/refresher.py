"""Under `serve`: refresh deployed materializations as they come due (PostgreSQL, DuckDB).

A materialization is refreshed once it is half its refresh interval old (deploy.refresh with
due_only), so that routing, which stops reading it past the full interval, keeps reading it.
One refresh at a time, in a thread of its own; a failed refresh is logged and retried at the
next tick, and queries fall back to the base tables once it is stale. Streaming engines keep
their materializations current and need none of this.

A DuckDB file that serve opens read-only (so the CLI and other readers can open it too) is not
written: refreshes go to a copy beside it that serve attaches and holds (`<name>.refreshed.duckdb`,
engine.attach_refreshed_copy), and routing reads a materialization from there while it is the
fresher. Other processes read the file's own materializations, as last refreshed there, or the
base tables once those are stale: exact either way.
"""

from __future__ import annotations

import logging
import threading

from .. import deploy
from ..compile import dialects
from ..engines import EngineError

log = logging.getLogger("metrics_layer.serve")


class Refresher:
    def __init__(self, service, tick: float = 5.0):
        self.service = service
        self.tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshed = 0  # materializations refreshed since start

    def start(self) -> "Refresher":
        if self.service.project.deploy.get("refresh", True) is False or dialects.get(self.service.dialect).streaming:
            return self
        engine = self.service.engine
        if engine.read_only and engine.refreshed_copy is None:
            try:
                path = engine.attach_refreshed_copy()
            except EngineError as e:
                log.warning("deployed materializations are not refreshed under serve: %s; queries read them as last "
                            "refreshed, or the base tables once they are stale", e.message)
                return self
            log.info("the DuckDB file is open read-only (so the CLI can read it too): deployed materializations are "
                     "refreshed into %s", path)
            self.service.forget_routes()
        self._thread = threading.Thread(target=self._run, name="metrics-layer-refresh", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            self.once()

    def once(self) -> list[str]:
        try:
            done = deploy.refresh(self.service.engine, self.service.deploy_schema, due_only=True)
        except (deploy.DeployError, EngineError) as e:
            log.warning("refresh of deployed materializations failed (queries read the base tables once they are stale): %s", e)
            return []
        if done:
            self.refreshed += len(done)
            self.service.forget_routes()
            log.info("refreshed %s", ", ".join(done))
        return done

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
