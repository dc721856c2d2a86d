"""The contract between the wire-protocol server and whatever answers SQL.

The server owns everything that is protocol: startup, authentication, the simple and extended
query flows, prepared statements and portals, value encoding, cancellation and flow control.
These statements are implemented by the server and never reach the backend:
  BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK, ABORT, SAVEPOINT, RELEASE, ROLLBACK TO
    (no-ops with the right tags and ReadyForQuery status; the backend is read-only),
  DECLARE name CURSOR FOR <query> (the backend describes/executes <query>; the server keeps its
    row iterator), FETCH, MOVE, CLOSE, DEALLOCATE, DISCARD.
Everything else (SELECT, SET, SHOW, EXPLAIN...) goes to the backend.

A backend only answers two questions about one SQL statement (never a multi-statement string,
the server splits those): "what would it take and return?" (`describe`) and "run it"
(`execute`).

Threading: `open_session`, `describe`, `execute`, iteration of `Outcome.rows` and `close` run in
worker threads, so they may block. For one session they are never called concurrently, though
successive calls may come from different threads. `cancel` is the exception: it is called from
another thread while `execute` (or row iteration) is running and must make it stop soon.

Values are plain Python objects, in both directions:
    None, bool, int, float, Decimal, str, bytes, date, datetime, time, timedelta.
Parameters arrive decoded according to their type OID (the described one; text and binary
formats alike): bool; int2/int4/int8/oid -> int; float4/float8 -> float; numeric -> Decimal;
text/varchar/name/char/json/jsonb/unknown -> str; bytea -> bytes; date; time; timestamp ->
naive datetime; timestamptz -> aware datetime in UTC; interval -> timedelta (str when it has
months/years or an unusual syntax); uuid -> str; any other type -> str (text) or bytes (binary).
Result values are converted to the declared column type; a `str` is always accepted and sent as
the value's text (in binary format it is parsed as that type's text first). A backend that
produces a column's values as ready text (e.g. asks its engine to print timestamps) marks the
column `text_values`: the server then sends them without looking at them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Sequence


@dataclass
class ColumnDesc:
    """One result column as RowDescription announces it.

    `type_oid` is a PostgreSQL type OID (`values.OID` has the common ones). `type_size` -1 lets
    the server fill in the standard size of the type (4 for int4, -1 for text...).

    `text_values` (results only, never announced): every non-null value of the column is a `str`
    holding exactly what PostgreSQL prints for the value in text format (DateStyle ISO...). In
    text format the server sends it as is, as fast as a text column; in binary format it still
    parses it as the type's text first (correct, slower: set it only for columns the client
    asked in text format, see `Session.execute`).
    """

    name: str
    type_oid: int
    type_size: int = -1
    type_modifier: int = -1
    text_values: bool = False


@dataclass
class Described:
    """The answer to `describe`: parameter types and result shape of one statement.

    `param_oids` has one entry per `$n` placeholder. Entries the client specified (non-zero in
    the `param_oids` passed to `describe`) must be kept; zeros should be replaced by inferred
    types (25 text when unsure). `columns` is None for statements that return no rows (SET...).
    """

    param_oids: list[int]
    columns: list[ColumnDesc] | None


@dataclass
class Notice:
    """A NoticeResponse to send alongside a result (e.g. a deprecation warning)."""

    message: str
    severity: str = "NOTICE"  # WARNING, NOTICE, INFO, LOG, DEBUG
    sqlstate: str = "00000"
    detail: str | None = None
    hint: str | None = None


@dataclass
class Outcome:
    """The answer to `execute`.

    `rows` may be a list or a generator (rows are then streamed to the client in batches, with
    flow control; a generator that is abandoned early is `close()`d, so its `finally` runs).
    Each row is a sequence with one value per column.

    `command_tag` is what CommandComplete reports. For row-returning statements leave it as
    "SELECT": the server appends the number of rows it actually sent ("SELECT 42"). Other tags
    ("SET", "SHOW", "EXPLAIN") are sent as given.

    `parameter_status` lists session parameters the statement changed (e.g. after
    `SET application_name = 'x'`); the server reports them to the client with ParameterStatus.
    """

    columns: list[ColumnDesc] | None
    rows: Iterable[Sequence[Any]] = ()
    command_tag: str = "SELECT"
    notices: list[Notice] = field(default_factory=list)
    parameter_status: dict[str, str] = field(default_factory=dict)


class BackendError(Exception):
    """An error to report to the client as ErrorResponse; the connection stays usable.

    `sqlstate` is the five-character PostgreSQL error code (42601 syntax error, 42P01 undefined
    table, 42703 undefined column, 22023 invalid parameter value, 0A000 not supported, 57014
    canceled...). `position` is a 1-based character offset into the SQL text the backend was
    given; the server shifts it to the client's whole query string.
    """

    def __init__(
        self,
        message: str,
        sqlstate: str = "XX000",
        position: int | None = None,
        detail: str | None = None,
        hint: str | None = None,
        severity: str = "ERROR",
    ):
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.position = position
        self.detail = detail
        self.hint = hint
        self.severity = severity  # ERROR; FATAL closes the connection

    def __repr__(self) -> str:
        return f"BackendError({self.sqlstate}: {self.message})"


class Session(Protocol):
    """The backend's state for one client connection."""

    def describe(self, sql: str, param_oids: list[int]) -> Described:
        """Types of the parameters and result columns of `sql`, without running it.

        Called once per Parse (prepared statement), before any `execute` of it. Raise
        BackendError for invalid statements (errors surface at Parse, as in PostgreSQL).
        """
        ...

    # Optional: `cached_describe(sql, param_oids) -> Described | None`, what `describe` would
    # return if the backend already knows it, answered without blocking (it runs on the event
    # loop, before `describe` would be sent to a worker thread); None when it does not know.

    def execute(self, sql: str, params: list[Any], param_oids: list[int], result_formats: list[int]) -> Outcome:
        """Run `sql` with `params` ($1.. placeholders), decoded according to `param_oids`.

        Simple-query statements arrive with no parameters and were not described first. For
        prepared statements the result columns must match what `describe` announced (the
        client decodes rows with the described types).

        `result_formats` are the format codes the client asked for the result columns, as in
        Bind: empty = all text, one code = for every column, else one per column (0 text, 1
        binary). The backend may ignore them; they let it produce ready text for text-format
        columns (`ColumnDesc.text_values`). A cursor (DECLARE) gets its declared format, but a
        FETCH may ask another one later.
        """
        ...

    def cancel(self) -> None:
        """Interrupt the running `execute` or row iteration (called from another thread).

        Any exception the interrupted call raises is reported to the client as 57014
        "canceling statement due to user request". A cancel with nothing running is ignored.
        """
        ...

    def close(self) -> None:
        """The connection ended; release resources. Never called while `execute` runs."""
        ...


class Backend(Protocol):
    def open_session(self, user: str, database: str, startup_params: dict[str, str]) -> Session:
        """A new session for an authenticated user. Raise BackendError (e.g. 3D000 unknown
        database) to refuse the connection; the error is sent as FATAL."""
        ...
