"""The threads that run blocking backend calls for the event loop.

A leaner stand-in for `concurrent.futures.ThreadPoolExecutor` + `asyncio.wrap_future` +
`asyncio.shield` on the per-statement path: a call is a job on a queue, and the worker settles
the asyncio future the connection awaits directly, with no intermediate concurrent Future,
condition variable or future chaining (one event-loop iteration and ~15-40 us of CPU less
per backend call on the development machine). Threads are started on demand up to `max_workers`
and reused.

A coroutine cancelled while awaiting a call (server shutdown) does not stop the thread:
`detach` gives a future that completes when the call has returned, so the connection can
wait for it before closing its session.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Callable


class Job:
    __slots__ = ("loop", "future", "fn", "args", "finished", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, fn: Callable, args: tuple):
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()  # the call's outcome
        self.fn = fn
        self.args = args
        self.finished = False  # the call has returned (set under the pool's lock)
        self.waiter: asyncio.Future | None = None  # see WorkerPool.detach


def _settle(future: asyncio.Future, result: Any, error: BaseException | None, waiter: asyncio.Future | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
    if future.done():  # cancelled meanwhile
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class WorkerPool:
    def __init__(self, max_workers: int, name: str):
        self._max_workers = max_workers
        self._name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # workers waiting for a job (or about to)
        self._lock = threading.Lock()
        self._shutdown = False

    def call(self, loop: asyncio.AbstractEventLoop, fn: Callable, *args: Any) -> Job:
        """Run `fn(*args)` in a worker; `job.future` (of `loop`) gets its outcome."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new calls after shutdown")
        job = Job(loop, fn, args)
        self._jobs.put(job)
        with self._lock:
            if self._idle:
                self._idle -= 1
                return job
            if len(self._threads) >= self._max_workers:
                return job  # queued until a worker frees up
            thread = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True)
            self._threads.append(thread)
        thread.start()
        return job

    def detach(self, job: Job) -> asyncio.Future | None:
        """For a call whose awaiting coroutine was cancelled: a future done once the call has
        returned, or None if it already has."""
        with self._lock:
            if job.finished:
                return None
            job.waiter = job.loop.create_future()
            return job.waiter

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                result, error = job.fn(*job.args), None
            except BaseException as e:  # handed to the awaiting coroutine, as a Future would
                result, error = None, e if not isinstance(e, StopIteration) else RuntimeError(repr(e))
            with self._lock:
                self._idle += 1  # before waking the loop: its next call finds this worker idle
                job.finished = True
                waiter = job.waiter
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, result, error, waiter)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more
            job.fn = job.args = None
            job = result = error = waiter = None  # hold no references while idle

    def shutdown(self) -> None:
        """Stop the workers once their current call returns; queued calls are cancelled."""
        self._shutdown = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                try:
                    job.loop.call_soon_threadsafe(job.future.cancel)
                except RuntimeError:
                    pass
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
