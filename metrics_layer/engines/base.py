"""What every engine offers: run SQL and return typed rows, stream big results, be cancelled."""

from __future__ import annotations

import threading
from typing import Callable, Iterator

from ..query import Column, QueryError, Result


class EngineError(QueryError):
    """The engine refused or failed a query; the message carries the engine's own words."""

    def __init__(self, message: str, code: str = "58000"):
        super().__init__(message, code)


class Cancel:
    """A handle a caller keeps to interrupt a running query from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._interrupt: Callable[[], None] | None = None
        self.cancelled = False
        self.reason = "canceling statement due to user request"

    def bind(self, interrupt: Callable[[], None] | None) -> None:
        with self._lock:
            self._interrupt = interrupt
            if interrupt is not None and self.cancelled:
                interrupt()

    def deadline(self, timeout: float | None, reason: str = "query timed out after {:g} s") -> threading.Timer | None:
        """Cancel with `reason` (formatted with the timeout) once `timeout` seconds pass.

        None when there is no timeout; otherwise stop the returned timer when the query ends.
        """
        if not timeout:
            return None
        timer = threading.Timer(timeout, self.cancel, args=(reason.format(timeout),))
        timer.daemon = True
        timer.start()
        return timer

    def cancel(self, reason: str | None = None) -> None:
        with self._lock:
            self.cancelled = True
            if reason:
                self.reason = reason
            if self._interrupt is not None:
                self._interrupt()


class Engine:
    """Base class: subclasses implement `stream`; `execute` collects it."""

    dialect = "duckdb"
    url = ""

    def stream(self, sql: str, cancel: Cancel | None = None, batch_size: int = 10_000) -> tuple[list[Column], Iterator[list[tuple]]]:
        raise NotImplementedError

    def execute(self, sql: str, cancel: Cancel | None = None, timeout: float | None = None) -> Result:
        cancel = cancel or Cancel()
        timer = cancel.deadline(timeout)
        try:
            columns, batches = self.stream(sql, cancel)
            rows = [row for batch in batches for row in batch]
        finally:
            if timer is not None:
                timer.cancel()
        return Result(columns, rows, sql)

    def ping(self) -> None:
        """Raise EngineError when the engine cannot be reached."""
        self.execute("SELECT 1")

    def close(self) -> None:
        pass
