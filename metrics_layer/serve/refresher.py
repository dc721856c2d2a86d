"""Under `serve`: refresh deployed materializations as they come due (PostgreSQL, DuckDB).

A materialization is refreshed once it is half its refresh interval old (deploy.refresh with
due_only), so that routing, which stops reading it past the full interval, keeps reading it.
One refresh at a time, in a thread of its own; a failed refresh is logged and retried at the
next tick, and queries fall back to the base tables once it is stale. Streaming engines keep
their materializations current and need none of this.
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
        if self.service.engine.read_only:
            log.info("the DuckDB file is open read-only (so the CLI can read it too): deployed materializations are "
                     "not refreshed under serve; stop serve to run metrics-layer refresh, or set deploy: {refresh: true} to have "
                     "serve hold the file's write lock and refresh them")
            return self
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
