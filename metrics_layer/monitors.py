"""Monitors: a metric's value per group checked against a condition, on a schedule.

Each evaluation asks MetricsService.run for the metric (and its coverage when min_coverage is
set) by the monitor's dimensions, like any door, and decides a state per group:

    ok            the condition does not hold
    alerting      the condition holds
    no_data       the value is NULL (no rows, or a ratio over none)
    low_coverage  fewer labels are mature than min_coverage: too early to judge, not alerting
    error         the query failed (a metric broken on reload, the engine down): reported

Every evaluation is a row of the history table `metrics_layer_monitor_history` (monitor,
group_key, value, coverage, state, at), written through sqlglot ASTs, in the store
history_store() picks: a SQLite file beside a DuckDB database file (which serve and the CLI
open read-only), else the engine's own table. Notifications
fire on a change into or out of `alerting` only (ok -> alerting -> ok), not on every
evaluation; a webhook is retried with backoff. One evaluation at a time per monitor: a tick
that finds the monitor still running skips it (no pile-up).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import operator
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sqlglot import exp

from .model.types import Monitor
from .query import DimensionRef, SemanticQuery

log = logging.getLogger("metrics_layer.monitors")

HISTORY_TABLE = "metrics_layer_monitor_history"
_COLUMNS = ("monitor", "group_key", "value", "coverage", "state", "at")
_TYPES = ("TEXT", "TEXT", "DOUBLE PRECISION", "DOUBLE PRECISION", "TEXT", "TIMESTAMP")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
ALERTING = "alerting"


@dataclass
class GroupState:
    monitor: str
    group: dict  # dimension -> value ({} for a monitor without `by`)
    value: float | None
    coverage: float | None
    state: str
    at: dt.datetime
    message: str | None = None

    @property
    def key(self) -> str:
        return json.dumps(self.group, sort_keys=True, default=str) if self.group else ""

    def as_dict(self) -> dict:
        return {"monitor": self.monitor, "group": {k: _plain(v) for k, v in self.group.items()}, "value": self.value,
                "coverage": self.coverage, "state": self.state, "at": self.at.isoformat(sep=" ") + "Z",
                "message": self.message}


def _plain(value):
    return value.isoformat(sep=" ") if isinstance(value, (dt.datetime, dt.date)) else value


def _number(value) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _dimension(text: str) -> DimensionRef:
    name, _, grain = text.partition(":")
    return DimensionRef(name, grain or None)


@dataclass
class Webhook:
    """POST JSON with retries: `attempts` tries, waiting backoff, 2*backoff, ... between them."""

    attempts: int = 4
    backoff: float = 0.5
    timeout: float = 10.0
    sleep: Callable[[float], None] = time.sleep

    def send(self, url: str, payload: dict) -> bool:
        body = json.dumps(payload, default=str).encode()
        for attempt in range(self.attempts):
            try:
                request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    if 200 <= response.status < 300:
                        return True
            except (urllib.error.URLError, OSError) as e:
                log.warning("webhook %s attempt %d failed: %s", url, attempt + 1, e)
            if attempt + 1 < self.attempts:
                self.sleep(self.backoff * 2 ** attempt)
        log.error("webhook %s failed after %d attempts", url, self.attempts)
        return False


@dataclass
class Monitors:
    """Evaluates a service's monitors, keeps their last states, records history in the engine."""

    service: object  # MetricsService
    query_timeout: float | None = 60.0
    webhook: Webhook = field(default_factory=Webhook)
    record: bool = True  # record every evaluation in the history store (history_store)
    last: dict[str, list[GroupState]] = field(default_factory=dict)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _states: dict[tuple[str, str], str] = field(default_factory=dict)  # (monitor, group) -> state
    _values: dict[tuple[str, str], float] = field(default_factory=dict)  # for `change` conditions
    _store: "HistoryStore | None" = None
    _guard: threading.Lock = field(default_factory=threading.Lock)

    # ---- evaluation ----------------------------------------------------------------

    def evaluate_all(self, now: dt.datetime | None = None) -> list[GroupState]:
        states = []
        for monitor in list(self.service.model.monitors.values()):
            states.extend(self.evaluate(monitor, now) or [])
        return states

    def evaluate(self, monitor: Monitor, now: dt.datetime | None = None) -> list[GroupState] | None:
        """One evaluation; None when the monitor's previous evaluation is still running."""
        with self._guard:
            lock = self._locks.setdefault(monitor.name, threading.Lock())
        if not lock.acquire(blocking=False):
            log.info("monitor %s: previous evaluation still running; skipped", monitor.name)
            return None
        try:
            at = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
            states = self._states_of(monitor, at)
            if self.record:
                self._record(states)
            self.last[monitor.name] = states  # after the history row: a reader of `last` finds it there
            for state in states:
                self._notify_on_change(monitor, state)
            return states
        finally:
            lock.release()

    def check(self, monitor: Monitor, as_of: dt.datetime | None = None) -> list[GroupState]:
        """The states one evaluation would give (as of `as_of`, else now), without recording them,
        notifying or remembering them (the report shows these). A `change` condition compares
        with this object's previous evaluation, if any."""
        saved = dict(self._values)
        try:
            return self._states_of(monitor, as_of or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None), as_of)
        finally:
            self._values = saved

    def _states_of(self, monitor: Monitor, at: dt.datetime, as_of: dt.datetime | None = None) -> list[GroupState]:
        metrics = (monitor.metric,) + ((monitor.coverage_metric,) if monitor.coverage_metric else ())
        query = SemanticQuery(metrics, tuple(_dimension(d) for d in monitor.by), as_of=as_of)
        try:
            result = self.service.run(query, timeout=self.query_timeout)
        except Exception as e:  # noqa: BLE001 - a broken metric (QueryError) or a down engine is reported, not raised
            log.error("monitor %s: %s", monitor.name, e)
            return [GroupState(monitor.name, {}, None, None, "error", at, str(e))]
        states = []
        width = len(monitor.by)
        for row in result.rows:
            group = dict(zip(monitor.by, row[:width]))
            value = _number(row[width])
            coverage = _number(row[width + 1]) if monitor.coverage_metric else None
            state = GroupState(monitor.name, group, value, coverage, "ok", at)
            state.state = self._decide(monitor, state)
            states.append(state)
        if not states:  # no group at all (nothing in the window): recorded and shown as no data, not ok
            states.append(GroupState(monitor.name, {}, None, None, "no_data", at, "the query returned no rows"))
        return states

    def _decide(self, monitor: Monitor, state: GroupState) -> str:
        if monitor.min_coverage is not None and (state.coverage is None or state.coverage < monitor.min_coverage):
            return "low_coverage"
        if state.value is None:
            return "no_data"
        subject = state.value
        if monitor.change:
            previous = self._values.get((monitor.name, state.key))
            self._values[(monitor.name, state.key)] = state.value
            if previous is None:
                return "ok"  # nothing to compare with yet
            subject = state.value - previous
        return ALERTING if _OPS[monitor.op](subject, monitor.threshold) else "ok"

    # ---- notifications -------------------------------------------------------------

    def _notify_on_change(self, monitor: Monitor, state: GroupState) -> None:
        key = (monitor.name, state.key)
        before = self._states.get(key)
        self._states[key] = state.state
        entered, left = state.state == ALERTING and before != ALERTING, before == ALERTING and state.state == "ok"
        if not (entered or left):
            return
        payload = {"event": "alerting" if entered else "recovered", "previous_state": before,
                   "condition": f"{'change ' if monitor.change else ''}{monitor.op} {monitor.threshold:g}",
                   "metric": monitor.metric, **state.as_dict()}
        for target in monitor.notify:
            if target == "log":
                log.warning("monitor %s %s: %s", monitor.name, payload["event"], json.dumps(payload, default=str))
            else:
                self.webhook.send(target, payload)

    # ---- history -------------------------------------------------------------------

    @property
    def store(self) -> "HistoryStore":
        """Where evaluations are recorded: history_store(engine), chosen once."""
        with self._guard:
            if self._store is None:
                self._store = history_store(self.service.engine)
        return self._store

    def _record(self, states: list[GroupState]) -> None:
        try:
            self.store.append(states)
        except Exception as e:  # history is best effort: evaluating and notifying go on
            log.error("monitor history not recorded in %s: %s", self.store.where, e)

    def history(self, monitor: str | None = None) -> list[dict]:
        """Every recorded evaluation (of `monitor`), oldest first: dicts of monitor, group_key,
        value, coverage, state, at."""
        return self.store.read(monitor)


def _table() -> exp.Table:
    return exp.Table(this=exp.to_identifier(HISTORY_TABLE, quoted=True))


def _create_table() -> exp.Create:
    return exp.Create(this=exp.Schema(this=_table(), expressions=[
        exp.ColumnDef(this=exp.to_identifier(c), kind=exp.DataType.build(t)) for c, t in zip(_COLUMNS, _TYPES)]),
        kind="TABLE", exists=True)


def _insert(s: GroupState, typed_time: bool = True) -> exp.Insert:
    """One history row; `typed_time` False keeps `at` as ISO text with microseconds (SQLite,
    whose DATETIME() would drop them: text in that fixed form sorts in time order)."""
    at = exp.Literal.string(s.at.isoformat(sep=" ", timespec="microseconds"))
    values = [exp.Literal.string(s.monitor), exp.Literal.string(s.key), _literal(s.value), _literal(s.coverage),
              exp.Literal.string(s.state), exp.Cast(this=at, to=exp.DataType.build("TIMESTAMP")) if typed_time else at]
    return exp.insert(exp.select(*values), _table(), columns=list(_COLUMNS))


def _select(monitor: str | None) -> exp.Select:
    select = exp.select(*_COLUMNS).from_(_table()).order_by("at", "monitor", "group_key")
    if monitor is not None:
        select = select.where(exp.column("monitor").eq(exp.Literal.string(monitor)))
    return select


class HistoryStore:
    """Where monitor evaluations are recorded: a table `metrics_layer_monitor_history`
    (monitor, group_key, value, coverage, state, at), written and read as sqlglot ASTs."""

    where = ""

    def append(self, states: list[GroupState]) -> None:
        raise NotImplementedError

    def read(self, monitor: str | None = None) -> list[dict]:
        raise NotImplementedError


class EngineHistory(HistoryStore):
    """The table in the engine's current schema (PostgreSQL, Materialize, RisingWave, an
    in-memory DuckDB)."""

    def __init__(self, engine):
        self.engine = engine
        self.where = f"the engine ({engine.dialect}) table {HISTORY_TABLE}"
        self._ready = False

    def append(self, states: list[GroupState]) -> None:
        statements = ([] if self._ready else [_create_table()]) + [_insert(s) for s in states]
        self.engine.run_statements([e.sql(dialect=self.engine.dialect) for e in statements])
        self._ready = True

    def read(self, monitor: str | None = None) -> list[dict]:
        rows = self.engine.execute(_select(monitor).sql(dialect=self.engine.dialect)).rows
        return [dict(zip(_COLUMNS, r)) for r in rows]


class SqliteHistory(HistoryStore):
    """The table in a SQLite file of its own, next to a DuckDB database file.

    A DuckDB file is opened read-only by `serve` (and by any reader), and DuckDB lets one
    process write a file only when no other process has it open. SQLite takes a short lock per
    write instead, so `serve` and `metrics-layer monitor` (and a report reading it) can share
    the history while they all read the DuckDB file. One connection per call: thread-safe.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.where = str(self.path)

    def _connect(self):
        import sqlite3

        return sqlite3.connect(self.path, timeout=60)

    def append(self, states: list[GroupState]) -> None:
        statements = [_create_table()] + [_insert(s, typed_time=False) for s in states]
        with contextlib.closing(self._connect()) as con, con:  # one transaction
            for statement in statements:
                con.execute(statement.sql(dialect="sqlite"))

    def read(self, monitor: str | None = None) -> list[dict]:
        if not self.path.exists():
            return []  # never recorded (and reading must not create the file)
        with contextlib.closing(self._connect()) as con:
            con.execute(_create_table().sql(dialect="sqlite"))
            rows = con.execute(_select(monitor).sql(dialect="sqlite")).fetchall()
        return [{**dict(zip(_COLUMNS, r)), "at": dt.datetime.fromisoformat(r[-1])} for r in rows]


def history_path(database: str | Path) -> Path:
    """The SQLite history file of a DuckDB file: data.duckdb -> data.monitor_history.sqlite."""
    database = Path(database)
    return database.with_name(f"{database.stem}.monitor_history.sqlite")


def history_store(engine) -> HistoryStore:
    """A DuckDB database file: a SQLite file next to it (history_path), whether the file is
    opened read-only or not; every other engine: the table in the engine."""
    path = getattr(engine, "path", None)
    if isinstance(path, str) and path != ":memory:":
        return SqliteHistory(history_path(path))
    return EngineHistory(engine)


def _literal(value: float | None) -> exp.Expression:
    return exp.Null() if value is None else exp.Literal.number(repr(float(value)))


def describe(state: GroupState) -> str:
    """One CLI line: monitor[group] value state."""
    group = ", ".join(f"{k}={_plain(v)}" for k, v in state.group.items())
    value = "NULL" if state.value is None else f"{state.value:.6g}"
    coverage = f" coverage={state.coverage:.3g}" if state.coverage is not None else ""
    message = f" ({state.message})" if state.message else ""
    return f"{state.monitor}{f'[{group}]' if group else ''} {value} {state.state}{coverage}{message}"


class MonitorTicker:
    """Under `serve`: evaluates each monitor when it comes due, in a thread of its own.

    A monitor runs at most once at a time (Monitors.evaluate skips a busy one) and its query has
    a time-out, so a slow engine delays the monitor's next evaluation instead of piling them up.
    The model is re-read every tick: after a reload, monitors added, changed or removed apply.
    """

    def __init__(self, monitors: Monitors, tick: float = 1.0):
        self.monitors = monitors
        self.tick = tick
        self._due: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "MonitorTicker":
        # Started even without monitors: a reload may add some.
        self._thread = threading.Thread(target=self._run, name="metrics-layer-monitors", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.once()
            self._stop.wait(self.tick)

    def once(self) -> None:
        for name, monitor in list(self.monitors.service.model.monitors.items()):
            if self._stop.is_set() or time.monotonic() < self._due.get(name, 0.0):
                continue
            self._due[name] = time.monotonic() + monitor.every.seconds
            try:
                self.monitors.evaluate(monitor)
            except Exception:  # never let one monitor stop the others
                log.exception("monitor %s failed", name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def status(monitors: Monitors) -> list[dict]:
    """Every monitor of the current model with its last evaluation (for GET /api/monitors)."""
    result = []
    for name, monitor in monitors.service.model.monitors.items():
        groups = monitors.last.get(name)
        result.append({
            "name": name, "metric": monitor.metric, "by": list(monitor.by),
            "condition": f"{'change ' if monitor.change else ''}{monitor.op} {monitor.threshold:g}",
            "min_coverage": monitor.min_coverage, "every_s": monitor.every.seconds,
            "state": None if groups is None else ("alerting" if any(g.state == ALERTING for g in groups)
                                                  else "error" if any(g.state == "error" for g in groups)
                                                  else "no_data" if all(g.state == "no_data" for g in groups) else "ok"),
            "last_evaluation": groups[0].at.isoformat(sep=" ") + "Z" if groups else None,
            "groups": [g.as_dict() for g in groups or []],
        })
    return result
