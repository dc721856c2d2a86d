"""The SQL endpoint's backend: each statement is classified and answered without ever passing
client SQL to the data engine.

    SET / RESET / SHOW              session settings (incl. metrics.as_of and metrics.window)
    SELECT over pg_catalog,         the shadow catalog (catalog.py), in a private DuckDB
      information_schema, or no FROM
    SELECT over a public view       mapping.py -> SemanticQuery -> service.compile -> engine.stream
    EXPLAIN SELECT over a view      the compiled SQL, one line per row
    INSERT/UPDATE/CREATE/...        refused: 25006 read-only
    anything else                   refused: 0A000 with what is supported

The server (server.py) handles transactions, cursors, prepared statements and statement
splitting; this module sees one statement at a time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import operator
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator

import sqlglot
import sqlglot.errors
from sqlglot import exp

from ...compile.pg_text import RENDERED_OIDS, pg_text_select
from ...engines import Cancel, EngineError
from ...model.types import parse_interval
from ...query import COLUMN_TYPES, DimensionRef, QueryError, SemanticQuery, parse_timestamp
from ...views import PublicView, ViewField, public_views
from ...service import describe_freshness
from .backend import BackendError, ColumnDesc, Described, Notice, Outcome
from .catalog import VIEWS_AS, CatalogResult, FieldType, SessionInfo, ShadowCatalog, references_catalog
from .mapping import Template, parse_sql, template_for
from .pg_parameters import PG_PARAMETERS
from .protocol import clip_name
from .values import ArrowRows

# Logical column types (query.COLUMN_TYPES) -> PostgreSQL type OIDs.
TYPE_OIDS = {
    "boolean": 16, "integer": 23, "bigint": 20, "double": 701, "decimal": 1700, "text": 25, "date": 1082,
    "timestamp": 1114, "interval": 1186, "unknown": 25,
}
assert set(TYPE_OIDS) == set(COLUMN_TYPES)

# Before the engine has been asked, from the definitions alone (see ViewTypes).
_STATIC_DIMENSION = {"time": 1114, "categorical": 25, "number": 1700, "boolean": 16}
_STATIC_METRIC = {"count": 20, "count_distinct": 20, "ratio": 701, "avg": 701, "median": 701, "percentile": 701,
                  "sum": 1700, "derived": 701, "simple": 1700, "min": 1700, "max": 1700}

READ_ONLY = "25006"
UNSUPPORTED = "0A000"

_WRITE_WORDS = {
    "insert", "update", "delete", "merge", "create", "drop", "alter", "truncate", "grant", "revoke", "comment",
    "vacuum", "analyze", "analyse", "cluster", "reindex", "refresh", "lock", "import", "call", "do", "security",
    "upsert", "replace", "attach", "detach", "checkpoint", "load", "install", "reassign", "cluster",
}
_FIRST_WORD = re.compile(r"\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*([A-Za-z_]+)", re.S)


# ---------------------------------------------------------------------------------------
# Session settings


_REPORTED = {  # ParameterStatus names PostgreSQL reports when they change
    "application_name": "application_name", "client_encoding": "client_encoding", "datestyle": "DateStyle",
    "intervalstyle": "IntervalStyle", "timezone": "TimeZone", "standard_conforming_strings": "standard_conforming_strings",
    "integer_datetimes": "integer_datetimes", "is_superuser": "is_superuser", "server_version": "server_version",
    "session_authorization": "session_authorization", "default_transaction_read_only": "default_transaction_read_only",
}


def _default_settings(server_version: str) -> dict[str, tuple[str, str]]:
    number = server_version.split()[0]
    major, _, minor = number.partition(".")
    pairs = {
        "server_version": server_version, "server_version_num": f"{int(major):d}{int(minor or 0):04d}",
        "server_encoding": "UTF8", "client_encoding": "UTF8", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres",
        "TimeZone": "UTC", "timezone_abbreviations": "Default", "standard_conforming_strings": "on",
        "integer_datetimes": "on", "is_superuser": "off", "application_name": "", "search_path": '"$user", public',
        "extra_float_digits": "1", "transaction_isolation": "read committed",
        "default_transaction_isolation": "read committed", "transaction_read_only": "off",
        "default_transaction_read_only": "off", "statement_timeout": "0", "lock_timeout": "0",
        "idle_in_transaction_session_timeout": "0", "max_identifier_length": "63", "max_index_keys": "32",
        "block_size": "8192", "lc_collate": "C.UTF-8", "lc_ctype": "C.UTF-8", "lc_messages": "C", "lc_monetary": "C",
        "lc_numeric": "C", "lc_time": "C", "bytea_output": "hex", "client_min_messages": "notice",
        "escape_string_warning": "on", "array_nulls": "on", "row_security": "on", "synchronous_commit": "on",
        "jit": "off", "work_mem": "4MB", "max_connections": "100", "default_text_search_config": "pg_catalog.english",
        "ssl": "off", "geqo": "on", "default_table_access_method": "heap", "backslash_quote": "safe_encoding", "xmloption": "content",
        "data_directory_mode": "0700", "in_hot_standby": "off", "session_authorization": "",
        "metrics.as_of": "", "metrics.window": "", "metrics.views_as": "view",
    }
    return {name.lower(): (name, value) for name, value in pairs.items()}


MAX_SETTING_LENGTH = 4096  # a SET value; reported ones travel in ParameterStatus, which libpq caps at 30,000 bytes


class Settings:
    """Per-session settings: what SET changes, SHOW and current_setting() read.

    As in PostgreSQL, SET takes PostgreSQL's parameters (pg_parameters.py) and custom ones with a
    dot (`myapp.x`); any other name is 42704, as is SHOW of an unknown name. Startup parameters
    we cannot honour are ignored. `metrics.as_of` and `metrics.window` apply to the following queries;
    `metrics.views_as` (view | table, default the project's sql.views_as) is how the catalog lists views.
    """

    def __init__(self, server_version: str, user: str, startup: dict[str, str], views_as: str = "view"):
        self._defaults = _default_settings(server_version)
        self._defaults["session_authorization"] = ("session_authorization", user)
        self._defaults["metrics.views_as"] = ("metrics.views_as", views_as)
        self._values: dict[str, tuple[str, str]] = {}
        self.as_of: dt.datetime | None = None
        self.window: str | None = None
        for name, value in startup.items():
            if name in ("user", "database", "replication") or name.startswith("_pq_"):
                continue
            if name == "options":
                for key, val in re.findall(r"(?:-c\s*|--)([\w.]+)=((?:\\\s|\S)+)", value):
                    self._safe_set(key, val.replace("\\ ", " "))
                continue
            self._safe_set(name, value)

    def _safe_set(self, name: str, value: str) -> None:
        try:
            self.set(name, value)
        except QueryError:
            pass  # a startup parameter we cannot honour is ignored, as PostgreSQL ignores unknown ones

    def get(self, name: str, missing_ok: bool = False) -> str | None:
        key = name.lower()
        if key in self._values:
            return self._values[key][1]
        if key in self._defaults:
            return self._defaults[key][1]
        if missing_ok:
            return None
        raise QueryError(f"unrecognized configuration parameter \"{name}\"", "42704")

    def set(self, name: str, value: str | None) -> dict[str, str]:
        """Set (None = reset); returns the ParameterStatus changes to report."""
        key = name.lower()
        if value is None:
            self._values.pop(key, None)
            if key == "metrics.as_of":
                self.as_of = None
            elif key == "metrics.window":
                self.window = None
            return self._report(key)
        value = str(value)
        if key == "application_name":
            value = clip_name(value)  # PostgreSQL keeps 63 bytes
        elif len(value) > MAX_SETTING_LENGTH:
            raise QueryError(
                f"value for parameter \"{name}\" is too long ({len(value)} characters; at most {MAX_SETTING_LENGTH})", "22023")
        if key.startswith("metrics."):
            if key == "metrics.as_of":
                self.as_of = parse_timestamp(value, "metrics.as_of") if value.strip() else None
            elif key == "metrics.window":
                if value.strip() and parse_interval(value) is None:
                    raise QueryError(f"metrics.window: {value!r} is not a duration; write e.g. '3 hours', '1 day'", "22023")
                self.window = value.strip() or None
            elif key == "metrics.views_as":
                value = value.strip().lower()
                if value not in VIEWS_AS:
                    raise QueryError(f"metrics.views_as: {value!r} is not one of {', '.join(VIEWS_AS)} (how the catalog "
                                     "lists the views: as views, or as tables for tools that list only tables)", "22023")
            else:
                raise QueryError(
                    f"unrecognized configuration parameter \"{name}\"; the metrics settings are metrics.as_of, "
                    "metrics.window and metrics.views_as",
                    "42704",
                )
        elif key == "client_encoding" and value.upper().replace("-", "") not in ("UTF8", "UNICODE"):
            raise QueryError(f"client_encoding {value!r} is not supported; the SQL endpoint speaks UTF8", UNSUPPORTED)
        elif key == "datestyle" and not value.upper().startswith("ISO"):
            raise QueryError(f"DateStyle {value!r} is not supported; dates are sent as ISO", UNSUPPORTED)
        elif key == "intervalstyle" and value.lower() != "postgres":
            raise QueryError(f"IntervalStyle {value!r} is not supported; intervals are sent in the postgres style", UNSUPPORTED)
        elif key not in self._defaults and "." not in key and key not in PG_PARAMETERS:
            raise QueryError(f"unrecognized configuration parameter \"{name}\"", "42704")
        elif key in ("server_version", "server_version_num", "server_encoding", "is_superuser", "integer_datetimes",
                     "session_authorization", "block_size", "max_identifier_length"):
            raise QueryError(f"parameter \"{name}\" cannot be changed", "55P02")
        display = self._defaults.get(key, (name, ""))[0]
        if key == "client_encoding":
            value = "UTF8"
        self._values[key] = (display, value)
        return self._report(key)

    def _report(self, key: str) -> dict[str, str]:
        if key in _REPORTED:
            return {_REPORTED[key]: self.get(key) or ""}
        return {}

    def reset_all(self) -> dict[str, str]:
        changed = {}
        for key in list(self._values):
            changed.update(self.set(key, None))
        return changed

    def rows(self) -> list[tuple[str, str]]:
        merged = dict(self._defaults)
        merged.update(self._values)
        return sorted(merged.values(), key=lambda x: x[0].lower())


_SET = re.compile(
    r"^\s*SET\s+(?:(SESSION|LOCAL)\s+)?(?:(TIME\s+ZONE)|([\w.\"]+))\s*(?:(?:=|\bTO\b)\s*)?(.*?)\s*;?\s*$", re.I | re.S
)
_RESET = re.compile(r"^\s*RESET\s+([\w.\"]+|ALL)\s*;?\s*$", re.I)
_SHOW = re.compile(r"^\s*SHOW\s+(.+?)\s*;?\s*$", re.I | re.S)
_SHOW_ALIASES = {
    "transaction isolation level": "transaction_isolation", "time zone": "TimeZone",
    "session authorization": "session_authorization",
}


def _setting_value(text: str) -> str | None:
    """The value of SET name = <text> (None for DEFAULT)."""
    text = text.strip()
    if not text:
        raise QueryError("syntax error: SET needs a value", "42601")
    if text.upper() in ("DEFAULT", "LOCAL"):
        return None
    values = []
    for part in re.findall(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|[^,\s][^,]*", text):
        part = part.strip()
        if part.startswith("'"):
            values.append(part[1:-1].replace("''", "'"))
        elif part.startswith('"'):
            values.append(part[1:-1].replace('""', '"'))
        else:
            values.append(part)
    return ", ".join(values)


# ---------------------------------------------------------------------------------------
# Column types of the views, as the engine returns them


class ViewTypes:
    """PostgreSQL type of every view column, taken from what the engine actually returns.

    Asked once per model: a LIMIT 0 query per view for its dimensions and one for its metrics
    (cheap: no rows are computed); the compiler's SQL is what real queries run, so the types
    announced by the catalog and in RowDescription are the types of the values sent. Columns
    the probe could not type fall back to the definitions (time -> timestamp, count -> int8 ...).
    """

    def __init__(self, service, model, probe: bool = True):
        self.service = service
        self.model = model
        self._types: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._probed: set[str] = set()
        self._probe = probe

    def oid(self, view: PublicView, f: ViewField) -> int:
        key = (view.name, f.name)
        if view.name not in self._probed:
            self._probe_view(view)
        oid = self._types.get(key)
        if oid is None:
            oid = (_STATIC_DIMENSION if f.kind == "dimension" else _STATIC_METRIC).get(f.type, 25)
        return oid

    def probed(self, view: PublicView, f: ViewField) -> bool:
        """True when the engine told the field's type (not a fallback from the definitions)."""
        if view.name not in self._probed:
            self._probe_view(view)
        return (view.name, f.name) in self._types

    def field_types(self, view: PublicView) -> list[FieldType]:
        return [FieldType(self.oid(view, f)) for f in view.dimensions + view.metrics]

    def _probe_view(self, view: PublicView) -> None:
        with self._lock:
            if view.name in self._probed:
                return
            self._probed.add(view.name)
            if not self._probe:
                return
            groups = [[f] for f in view.dimensions]
            if view.metrics:
                groups.append(list(view.metrics))
            for fields in groups:
                if not self._probe_fields(view, fields) and len(fields) > 1:
                    for f in fields:
                        self._probe_fields(view, [f])

    def _probe_fields(self, view: PublicView, fields: list[ViewField]) -> bool:
        dims = [f for f in fields if f.kind == "dimension"]
        mets = [f for f in fields if f.kind == "metric"]
        query = SemanticQuery(
            metrics=tuple(f.ref for f in mets), dimensions=tuple(DimensionRef(f.ref) for f in dims), limit=0,
        )
        try:
            columns = self.service.run(query, timeout=10.0, model=self.model).columns  # LIMIT 0: instant
        except Exception:
            return False
        for f, column in zip(dims + mets, columns):
            if column.type != "unknown":
                self._types[(view.name, f.name)] = TYPE_OIDS[column.type]
        return True


# ---------------------------------------------------------------------------------------
# The backend


@dataclass
class _ModelState:
    model: Any
    types: ViewTypes
    views_by_access: dict
    # (views key, sql, param oids) -> Described, for SemanticSession.cached_describe
    described: dict = field(default_factory=dict)


class SemanticBackend:
    """Backend for the protocol server: one SemanticSession per connection.

    `user_views` maps a user name to the view names they may query (None = all views); users
    missing from the map see every view (the protocol layer already refused unknown users).
    """

    def __init__(self, service, user_views: dict[str, list[str] | None] | None = None,
                 server_version: str | None = None, probe_types: bool = True, views_as: str = "view"):
        from .server import SERVER_VERSION

        self.service = service
        self.views_as = views_as  # the sessions' default metrics.views_as (sql.views_as)
        self.user_views = dict(user_views or {})
        self.server_version = server_version or SERVER_VERSION
        self.catalog = ShadowCatalog()
        self._probe_types = probe_types
        self._state: _ModelState | None = None
        self._state_lock = threading.Lock()
        self._pids = itertools.count(os.getpid() * 100 % 1_000_000 + 1)

    def state(self) -> _ModelState:
        """The current model and what is derived from it (rebuilt when the model object changes)."""
        model = self.service.model
        state = self._state
        if state is None or state.model is not model:
            with self._state_lock:
                state = self._state
                if state is None or state.model is not model:
                    state = _ModelState(model, ViewTypes(self.service, model, self._probe_types), {})
                    self._state = state
        return state

    def access_key(self, user: str) -> tuple[str, ...] | None:
        """The views `user` may query, as a key (None: all of them)."""
        allowed = self.user_views.get(user)
        return None if allowed is None else tuple(sorted(allowed))

    def views_for(self, state: _ModelState, user: str) -> dict[str, PublicView]:
        allowed = self.user_views.get(user)
        key = None if allowed is None else tuple(sorted(allowed))
        views = state.views_by_access.get(key)
        if views is None:
            every = public_views(state.model)
            views = every if allowed is None else {n: v for n, v in every.items() if n in allowed}
            state.views_by_access[key] = views
        return views

    def open_session(self, user: str, database: str, startup_params: dict[str, str]) -> "SemanticSession":
        return SemanticSession(self, user, database, startup_params, next(self._pids))


class _StatementCache:
    def __init__(self, size: int = 4096):
        self._items: OrderedDict = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key):
        return self._items.get(key)

    def put(self, key, value):
        with self._lock:
            self._items[key] = value
            if len(self._items) > self._size:
                self._items.popitem(last=False)




@dataclass
class _Classified:
    kind: str  # set | reset | show | catalog | semantic | explain
    tree: exp.Expression | None = None
    data: Any = None


_classified = _StatementCache()


def classify(sql: str) -> _Classified:
    """What kind of statement `sql` is (cached by text)."""
    found = _classified.get(sql)
    if found is not None:
        return found
    found = _classify(sql)
    _classified.put(sql, found)
    return found


def _classify(sql: str) -> _Classified:
    match = _FIRST_WORD.match(sql)
    word = match.group(1).lower() if match else ""
    if word == "set":
        return _Classified("set")
    if word == "reset":
        return _Classified("reset")
    if word == "show":
        return _Classified("show")
    if word in _WRITE_WORDS:
        raise QueryError(
            f"cannot execute {word.upper()}: the metrics SQL endpoint is read-only; query the views with SELECT",
            READ_ONLY,
        )
    if word == "copy":
        raise QueryError("COPY is not supported by the metrics SQL endpoint; use SELECT", UNSUPPORTED)
    if word in ("listen", "unlisten", "notify", "prepare", "execute", "deallocate", "discard", "fetch", "move",
                "declare", "close", "values", "table", "savepoint", "release", "begin", "start", "commit",
                "rollback", "end", "abort"):
        raise QueryError(f"{word.upper()} is not supported here; the SQL endpoint answers SELECT, SET, SHOW and EXPLAIN", UNSUPPORTED)
    explain = False
    if word == "explain":
        explain = True
        sql = re.sub(r"^\s*explain\s+(\((?:[^)]*)\)\s*|(?:analyze|analyse|verbose)\s+)*", "", sql, flags=re.I)
    tree = parse_sql(sql)
    if isinstance(tree, (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter, exp.Merge)) or tree.find(
        exp.Insert, exp.Update, exp.Delete
    ):
        raise QueryError("the metrics SQL endpoint is read-only; query the views with SELECT", READ_ONLY)
    if not isinstance(tree, (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery)):
        raise QueryError(
            f"{word.upper() or 'this statement'} is not supported; the SQL endpoint answers SELECT over the views, "
            "catalog queries, SET, SHOW and EXPLAIN", UNSUPPORTED,
        )
    catalog, others = references_catalog(tree)
    if catalog and others:
        names = ", ".join(sorted({t.name for t in others}))
        raise QueryError(
            f"a query may read either the catalog (pg_catalog, information_schema) or one view, not both ({names})",
            UNSUPPORTED,
        )
    if explain:
        if catalog or not others:
            raise QueryError("EXPLAIN is supported for queries over a view (it shows the compiled SQL)", UNSUPPORTED)
        return _Classified("explain", tree, sql)
    if catalog or not others:
        return _Classified("catalog", tree)
    return _Classified("semantic", tree, sql)


# Statement kinds whose description depends only on the model, the user's views and the
# statement: kept per model state. (Catalog statements are described by running them.)
_CACHED_DESCRIBE = ("semantic", "set", "reset", "show", "explain")
_DESCRIBED_LIMIT = 4096


def _copy_described(d: Described) -> Described:
    return Described(list(d.param_oids), None if d.columns is None else list(d.columns))


def _backend_error(e: Exception) -> BackendError:
    if isinstance(e, BackendError):
        return e
    if isinstance(e, QueryError):
        return BackendError(e.message, e.code or "XX000")
    return BackendError(f"internal error: {type(e).__name__}: {e}", "XX000")


class SemanticSession:
    def __init__(self, backend: SemanticBackend, user: str, database: str, startup: dict[str, str], pid: int):
        self.backend = backend
        self.user = user
        self.database = database
        self.settings = Settings(backend.server_version, user, startup, backend.views_as)
        self.info = SessionInfo(user, database, self.settings, pid)
        self._cancel: Cancel | None = None
        self._cancel_lock = threading.Lock()

    # ---- protocol entry points --------------------------------------------------------

    def describe(self, sql: str, param_oids: list[int]) -> Described:
        try:
            state = self.backend.state()
            described = self._describe(sql, list(param_oids))
        except Exception as e:
            raise _backend_error(e) from None
        if classify(sql).kind in _CACHED_DESCRIBE:
            cache = state.described
            if len(cache) >= _DESCRIBED_LIMIT:
                cache.clear()
            cache[(self.backend.access_key(self.user), sql, tuple(param_oids))] = described
        return _copy_described(described)

    def cached_describe(self, sql: str, param_oids: list[int]) -> Described | None:
        """What `describe` returned for this statement before, without blocking (no engine
        query, no catalog run), or None. The server calls it on the event loop, before
        sending `describe` to a worker thread: clients that do not keep prepared statements
        parse the same SQL at every execution."""
        described = self.backend.state().described.get((self.backend.access_key(self.user), sql, tuple(param_oids)))
        return None if described is None else _copy_described(described)

    def execute(self, sql: str, params: list[Any], param_oids: list[int], result_formats: list[int]) -> Outcome:
        try:
            return self._execute(sql, list(params or []), list(param_oids or []), list(result_formats or []))
        except Exception as e:
            raise _backend_error(e) from None

    def cancel(self) -> None:
        with self._cancel_lock:
            handle = self._cancel
        if handle is not None:
            handle.cancel()

    def close(self) -> None:
        self.cancel()

    # ---- describe ---------------------------------------------------------------------

    def _describe(self, sql: str, param_oids: list[int]) -> Described:
        kind = classify(sql)
        if kind.kind in ("set", "reset"):
            return Described(param_oids, None)
        if kind.kind == "show":
            name = self._show_name(sql)
            return Described(param_oids, [ColumnDesc(name if name != "all" else "name", 25)] + (
                [ColumnDesc("setting", 25), ColumnDesc("description", 25)] if name == "all" else []))
        if kind.kind == "explain":
            return Described(param_oids, [ColumnDesc("QUERY PLAN", 25)])
        if kind.kind == "semantic":
            state = self.backend.state()
            template = template_for(kind.data, state.model, self.backend.views_for(state, self.user), kind.tree)
            return Described(self._param_oids(template, param_oids, state), self._columns(template, state))
        # catalog: run it with NULL parameters and no rows, to learn the result types
        count = _param_count(kind.tree)
        oids = [o or 25 for o in param_oids] + [25] * max(0, count - len(param_oids))
        oids = self._cast_param_oids(kind.tree, oids)
        result = self._catalog(kind.tree, [None] * len(oids), describe_only=True)
        return Described(oids, [ColumnDesc(n, o) for n, o in zip(result.names, result.oids)])

    def _param_oids(self, template: Template, given: list[int], state: _ModelState) -> list[int]:
        count = max(template.param_count, len(given))
        oids = []
        for i in range(1, count + 1):
            if i <= len(given) and given[i - 1]:
                oids.append(given[i - 1])
                continue
            target = template.param_fields.get(i)
            if target == "int8":
                oids.append(20)
            elif target == "text" or target is None:
                oids.append(25)
            else:
                oids.append(self._field_oid(template.view, target, state))
        return oids

    def _field_oid(self, view: PublicView, f: ViewField, state: _ModelState) -> int:
        return state.types.oid(view, f)

    def _columns(self, template: Template, state: _ModelState) -> list[ColumnDesc]:
        if template.count_rows:
            return [ColumnDesc(template.count_name, 20)]
        columns = []
        for c in template.columns:
            if c.as_date:
                oid = 1082
            else:
                oid = self._field_oid(template.view, c.field, state)
            columns.append(ColumnDesc(c.name, oid))
        return columns

    @staticmethod
    def _cast_param_oids(tree: exp.Expression, oids: list[int]) -> list[int]:
        """Catalog statements: $n::type tells the parameter's type."""
        names = {"int": 23, "integer": 23, "int4": 23, "smallint": 21, "int2": 21, "bigint": 20, "int8": 20,
                 "oid": 26, "bool": 16, "boolean": 16, "float8": 701, "double": 701, "bigint[]": 1016, "uinteger[]": 1028}
        for cast in tree.find_all(exp.Cast):
            if isinstance(cast.this, exp.Parameter):
                try:
                    index = int(cast.this.name)
                except ValueError:
                    continue
                oid = names.get(cast.to.sql("postgres").lower())
                if oid and 1 <= index <= len(oids) and oids[index - 1] == 25:
                    oids[index - 1] = oid
        return oids

    # ---- execute ----------------------------------------------------------------------

    def _execute(self, sql: str, params: list[Any], param_oids: list[int], result_formats: list[int]) -> Outcome:
        kind = classify(sql)
        if kind.kind == "semantic":
            return self._semantic(kind, params, result_formats)
        if kind.kind == "set":
            return self._set(sql)
        if kind.kind == "reset":
            return self._reset(sql)
        if kind.kind == "show":
            return self._show(sql)
        if kind.kind == "explain":
            return self._explain(kind, params)
        result = self._catalog(kind.tree, params)
        return Outcome([ColumnDesc(n, o) for n, o in zip(result.names, result.oids)], result.rows)

    def _catalog(self, tree: exp.Expression, params: list[Any], describe_only: bool = False) -> CatalogResult:
        state = self.backend.state()
        views = self.backend.views_for(state, self.user)
        schema, index = self.backend.catalog.schema_for(state.model, views, state.types.field_types,
                                                        self.settings.get("metrics.views_as"))
        if params or _param_count(tree):
            tree = _inline_params(tree, params)
        cancel, timer = self._cancellable()
        try:
            return self.backend.catalog.run(tree, schema, index, self.info, describe_only=describe_only, cancel=cancel)
        finally:
            self._finish(cancel, timer)

    def _semantic(self, kind: _Classified, params: list[Any], result_formats: list[int]) -> Outcome:
        state = self.backend.state()
        template = template_for(kind.data, state.model, self.backend.views_for(state, self.user), kind.tree)
        query = template.bind(params, window=self.settings.window, as_of=self.settings.as_of)
        columns = self._columns(template, state)
        post_offset, post_limit = template.bind_post(params)
        if (query.limit == 0 or post_limit == 0) and not template.count_rows:
            return Outcome(columns, [])  # the shape only (tools probe with LIMIT 0): no engine query
        try:
            explained = self.backend.service.explain(query, model=state.model)
            sql = explained.sql
        except QueryError as e:
            if template.star:
                raise QueryError(
                    f"SELECT * asks for every column of {template.view.name} grouped by every dimension, and: "
                    f"{e.message}; list the columns you need instead", e.code) from None
            raise
        printed = self._printed_columns(template, columns, result_formats, state)
        if printed:
            # The engine prints these columns, and selects the template's columns in order.
            try:
                sql = pg_text_select(sql, tuple((c.source, columns[i].type_oid if i in printed else None)
                                                for i, c in enumerate(template.columns)))
            except sqlglot.errors.ParseError:  # not expected (sqlglot wrote it): values formatted here
                printed = set()
            columns = [dataclasses.replace(c, text_values=True) if i in printed else c for i, c in enumerate(columns)]
        notices = []
        if explained.freshness is not None:
            notices.append(Notice(f"read from materialization {explained.materialization} "
                                  f"({describe_freshness(explained.freshness)})"))
        return Outcome(columns, self._stream(sql, template, post_offset, post_limit, projected=bool(printed)), notices=notices)

    def _printed_columns(self, template: Template, columns: list[ColumnDesc], formats: list[int],
                         state: _ModelState) -> set[int]:
        """Indexes of the result columns DuckDB should print as PostgreSQL text: timestamps and
        dates asked in text format whose type the engine told (see compile/pg_text.py)."""
        if template.count_rows or self.backend.service.dialect != "duckdb":
            return set()
        if len(formats) <= 1:
            formats = (formats or [0]) * len(columns)
        elif len(formats) != len(columns):
            return set()
        return {i for i, (c, column, fmt) in enumerate(zip(template.columns, columns, formats))
                if fmt == 0 and column.type_oid in RENDERED_OIDS
                and (c.as_date or state.types.probed(template.view, c.field))}

    def _stream(self, sql: str, template: Template, post_offset: int, post_limit: int | None,
                projected: bool = False) -> Iterator:
        service = self.backend.service
        cancel, timer = self._cancellable()
        stream_arrow = None if template.count_rows else getattr(service.engine, "stream_arrow", None)
        if stream_arrow is not None:
            # Arrow batches, encoded column-wise by the server (values.ArrowRows); None: rows.
            try:
                arrow = stream_arrow(sql, cancel)
            except EngineError as e:
                self._finish(cancel, timer)
                raise BackendError(service.explain_engine_error(e.message), e.code) from None
            except BaseException:
                self._finish(cancel, timer)
                raise
            if arrow is not None:
                _, schema, batches = arrow
                return ArrowRows(
                    schema, batches, None if template.identity or projected else [c.source for c in template.columns],
                    post_offset, post_limit,
                    on_error=lambda e: BackendError(e.message, e.code) if isinstance(e, EngineError) else None,
                    on_close=lambda: self._finish(cancel, timer))
        try:
            _, batches = service.engine.stream(sql, cancel)
        except EngineError as e:
            self._finish(cancel, timer)
            raise BackendError(service.explain_engine_error(e.message), e.code) from None
        except BaseException:
            self._finish(cancel, timer)
            raise
        rows: Iterator = itertools.chain.from_iterable(batches)
        if not template.identity and not projected:
            sources = [c.source for c in template.columns]
            if len(sources) == 1:
                index = sources[0]
                rows = ((row[index],) for row in rows)
            else:
                rows = map(operator.itemgetter(*sources), rows)
        if post_offset or post_limit is not None:
            rows = itertools.islice(rows, post_offset, None if post_limit is None else post_offset + post_limit)
        return self._guard(rows, batches, cancel, timer, template.count_rows)

    def _guard(self, rows: Iterator, batches, cancel: Cancel, timer, count_rows: bool) -> Iterator:
        """Rows, with engine errors as BackendErrors and the cancel handle released at the end."""
        try:
            if count_rows:
                n = 0
                for _ in rows:
                    n += 1
                yield (n,)
            else:
                yield from rows
        except EngineError as e:
            raise BackendError(e.message, e.code) from None
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
            self._finish(cancel, timer)

    def _cancellable(self) -> tuple[Cancel, Any]:
        """A Cancel for the statement about to run: a CancelRequest reaches it, and it fires at
        the project's query time-out (catalog statements included)."""
        cancel = Cancel()
        with self._cancel_lock:
            self._cancel = cancel
        service = self.backend.service
        timeout = service.project.query_timeout if service.project is not None else None
        return cancel, cancel.deadline(timeout, "canceling statement due to statement timeout ({:g} s)")

    def _finish(self, cancel: Cancel, timer) -> None:
        if timer is not None:
            timer.cancel()
        with self._cancel_lock:
            if self._cancel is cancel:
                self._cancel = None

    def _explain(self, kind: _Classified, params: list[Any]) -> Outcome:
        state = self.backend.state()
        template = template_for(kind.data, state.model, self.backend.views_for(state, self.user), kind.tree)
        query = template.bind(params if params else [None] * template.param_count, window=self.settings.window, as_of=self.settings.as_of) \
            if params or not template.param_count else None
        if query is None:
            raise QueryError("EXPLAIN of a statement with parameters needs their values", UNSUPPORTED)
        explained = self.backend.service.explain(query, model=state.model)
        from sqlglot import transpile

        pretty = transpile(explained.sql, read=self.backend.service.dialect, write=self.backend.service.dialect, pretty=True)[0]
        lines = [f"-- {self.backend.service.dialect} SQL compiled from the semantic query"]
        lines += [f"-- {line}" for line in explained.lines()] + pretty.splitlines()
        return Outcome([ColumnDesc("QUERY PLAN", 25)], [(line,) for line in lines], command_tag="EXPLAIN")

    # ---- SET / RESET / SHOW -----------------------------------------------------------

    def _set(self, sql: str) -> Outcome:
        match = _SET.match(sql)
        if not match:
            raise QueryError("syntax error in SET; write SET name = value", "42601")
        scope, tz, name, rest = match.groups()
        if tz:
            name = "TimeZone"
        name = name.strip('"')
        lowered = name.lower()
        if lowered in ("session", "transaction") or (lowered == "characteristics") or (
            scope and scope.upper() == "SESSION" and lowered == "characteristics"
        ):
            return Outcome(None, command_tag="SET")  # SET TRANSACTION / SESSION CHARACTERISTICS: read-only anyway
        if lowered in ("names",):
            name = "client_encoding"
        if lowered == "role" or lowered == "session_authorization":
            raise QueryError("SET ROLE / SESSION AUTHORIZATION are not supported", UNSUPPORTED)
        value = _setting_value(rest)
        if tz and value is not None and value.upper() == "LOCAL":
            value = None
        changed = self.settings.set(name, value)
        return Outcome(None, command_tag="SET", parameter_status=changed)

    def _reset(self, sql: str) -> Outcome:
        match = _RESET.match(sql)
        if not match:
            raise QueryError("syntax error in RESET; write RESET name or RESET ALL", "42601")
        name = match.group(1).strip('"')
        changed = self.settings.reset_all() if name.upper() == "ALL" else self.settings.set(name, None)
        return Outcome(None, command_tag="RESET", parameter_status=changed)

    def _show_name(self, sql: str) -> str:
        match = _SHOW.match(sql)
        if not match:
            raise QueryError("syntax error in SHOW; write SHOW name", "42601")
        name = " ".join(match.group(1).split()).strip('"')
        name = _SHOW_ALIASES.get(name.lower(), name)
        if name.lower() == "all":
            return "all"
        key = name.lower()
        return {"timezone": "TimeZone", "datestyle": "DateStyle", "intervalstyle": "IntervalStyle"}.get(key, key)

    def _show(self, sql: str) -> Outcome:
        name = self._show_name(sql)
        if name == "all":
            rows = [(n, v, "") for n, v in self.settings.rows()]
            return Outcome([ColumnDesc("name", 25), ColumnDesc("setting", 25), ColumnDesc("description", 25)], rows,
                           command_tag="SHOW")
        value = self.settings.get(name)
        return Outcome([ColumnDesc(name, 25)], [(value,)], command_tag="SHOW")


def _param_count(tree: exp.Expression) -> int:
    count = 0
    for node in tree.find_all(exp.Parameter, exp.Placeholder):
        try:
            count = max(count, int(str(node.name).lstrip("$")))
        except ValueError:
            pass
    return count


def _inline_params(tree: exp.Expression, params: list[Any]) -> exp.Expression:
    """Catalog statements: $n placeholders replaced by literals of the bound values."""

    def literal(value: Any) -> exp.Expression:
        if value is None:
            return exp.Null()
        if isinstance(value, bool):
            return exp.Boolean(this=value)
        if isinstance(value, (int, float)) or type(value).__name__ == "Decimal":
            return exp.Literal.number(value)
        if isinstance(value, dt.datetime):
            return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), "timestamp")
        if isinstance(value, dt.date):
            return exp.cast(exp.Literal.string(value.isoformat()), "date")
        if isinstance(value, (bytes, bytearray, memoryview)):
            return exp.Literal.string(bytes(value).decode("utf-8", "replace"))
        if isinstance(value, (list, tuple)):
            return exp.Array(expressions=[literal(v) for v in value])
        return exp.Literal.string(str(value))

    def replace(node: exp.Expression) -> exp.Expression:
        if isinstance(node, (exp.Parameter, exp.Placeholder)):
            try:
                index = int(str(node.name).lstrip("$"))
            except ValueError:
                return node
            if 1 <= index <= len(params):
                return literal(params[index - 1])
            raise QueryError(f"there is no parameter ${index}", "42P02")
        return node

    return tree.copy().transform(replace)
