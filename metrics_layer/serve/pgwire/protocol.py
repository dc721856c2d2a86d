"""PostgreSQL frontend/backend protocol v3: message framing, parsing and building.

Frontend messages are parsed from their body (the bytes after type and length); backend
messages are built as complete `bytes` ready to write. Nothing here does I/O.
"""

from __future__ import annotations

import struct
from typing import Sequence

from .backend import BackendError, ColumnDesc

# Startup packet codes (the int32 after the length in the untyped first message).
PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

MAX_STARTUP_LENGTH = 10_000  # same limit as PostgreSQL
MAX_MESSAGE_LENGTH = 1 << 30  # the protocol's own bound (PostgreSQL's MaxAllocSize)
MAX_AUTH_MESSAGE_LENGTH = 10_000  # before authentication: password, SASL messages (PostgreSQL: 65,535 at most)
DEFAULT_MAX_MESSAGE_BYTES = 16 << 20  # after authentication (`sql: {max_message_bytes: N}`)
DEFAULT_MAX_STATEMENT_LENGTH = 1_000_000  # characters of one query string (`sql: {max_statement_length: N}`)

_i16 = struct.Struct("!h")
_i32 = struct.Struct("!i")
_u32 = struct.Struct("!I")
_header = struct.Struct("!ci")


class ProtocolViolation(BackendError):
    """Malformed or unexpected message: reported as FATAL 08P01, then the connection closes."""

    def __init__(self, message: str):
        super().__init__(message, "08P01", severity="FATAL")


# ---------------------------------------------------------------------------------------
# Parsing frontend messages


class Reader:
    """Sequential reader over a message body; every overrun is a protocol violation."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise ProtocolViolation("insufficient data left in message")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def int16(self) -> int:
        return _i16.unpack(self._take(2))[0]

    def int32(self) -> int:
        return _i32.unpack(self._take(4))[0]

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolViolation("invalid string in message")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BackendError("invalid byte sequence for encoding \"UTF8\"", "22021") from None

    def bytes(self, n: int) -> bytes:
        return self._take(n)

    def rest(self) -> bytes:
        chunk = self.data[self.pos:]
        self.pos = len(self.data)
        return chunk

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolViolation("invalid message format")


def parse_startup(body: bytes) -> dict[str, str]:
    """Key/value pairs of a StartupMessage (body after the protocol version)."""
    r = Reader(body)
    params: dict[str, str] = {}
    while True:
        key = r.cstring()
        if not key:
            break
        params[key] = r.cstring()
    r.end()
    return params


def parse_parse(body: bytes) -> tuple[str, str, list[int]]:
    r = Reader(body)
    name, query = r.cstring(), r.cstring()
    n = r.int16()
    if n < 0:
        raise ProtocolViolation("invalid number of parameter types")
    oids = [r.int32() & 0xFFFFFFFF for _ in range(n)]
    r.end()
    return name, query, oids


def parse_bind(body: bytes) -> tuple[str, str, list[int], list[bytes | None], list[int]]:
    """(portal, statement, parameter format codes, raw parameter values, result format codes)."""
    r = Reader(body)
    portal, statement = r.cstring(), r.cstring()
    param_formats = [r.int16() for _ in range(r.int16())]
    values: list[bytes | None] = []
    for _ in range(r.int16()):
        n = r.int32()
        values.append(None if n == -1 else r.bytes(n))
    result_formats = [r.int16() for _ in range(r.int16())]
    r.end()
    for code in param_formats + result_formats:
        if code not in (0, 1):
            raise ProtocolViolation(f"unsupported format code: {code}")
    return portal, statement, param_formats, values, result_formats


def parse_target(body: bytes) -> tuple[str, str]:
    """Describe and Close: (b'S' statement | b'P' portal, name)."""
    r = Reader(body)
    kind = r.bytes(1).decode("latin-1")
    name = r.cstring()
    r.end()
    if kind not in ("S", "P"):
        raise ProtocolViolation(f"invalid DESCRIBE/CLOSE message subtype {kind!r}")
    return kind, name


def parse_execute(body: bytes) -> tuple[str, int]:
    r = Reader(body)
    portal, max_rows = r.cstring(), r.int32()
    r.end()
    return portal, max(max_rows, 0)


def expand_formats(codes: Sequence[int], n: int, mismatch: str) -> list[int]:
    """Format codes as sent (none = all text, one = applies to all) expanded to n entries.

    `mismatch` is the error message for a wrong count, formatted with `got` and `n`.
    """
    if not codes:
        return [0] * n
    if len(codes) == 1:
        return [codes[0]] * n
    if len(codes) != n:
        raise BackendError(mismatch.format(got=len(codes), n=n), "08P01")  # an ERROR, as in PostgreSQL
    return list(codes)


# ---------------------------------------------------------------------------------------
# Building backend messages


def message(kind: bytes, body: bytes = b"") -> bytes:
    return _header.pack(kind, len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode("utf-8") + b"\0"


PARSE_COMPLETE = message(b"1")
BIND_COMPLETE = message(b"2")
CLOSE_COMPLETE = message(b"3")
NO_DATA = message(b"n")
PORTAL_SUSPENDED = message(b"s")
EMPTY_QUERY_RESPONSE = message(b"I")
AUTH_OK = message(b"R", _i32.pack(0))


def authentication(code: int, data: bytes = b"") -> bytes:
    """AuthenticationXXX: 0 ok, 3 cleartext, 5 md5 (data = salt), 10 SASL, 11 continue, 12 final."""
    return message(b"R", _i32.pack(code) + data)


NAMEDATALEN = 64  # PostgreSQL's: names (application_name included) hold at most 63 bytes


def clip_name(value: str) -> str:
    """`value` cut to 63 UTF-8 bytes at a character boundary, as PostgreSQL truncates names."""
    data = value.encode("utf-8", "replace")
    if len(data) < NAMEDATALEN:
        return value
    return data[:NAMEDATALEN - 1].decode("utf-8", "ignore")


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", _i32.pack(pid) + _i32.pack(secret))


def ready_for_query(status: str) -> bytes:
    return message(b"Z", status.encode("ascii"))


def command_complete(tag: str) -> bytes:
    return message(b"C", cstr(tag))


def negotiate_protocol_version(newest_minor: int, unsupported: Sequence[str]) -> bytes:
    body = _i32.pack(newest_minor) + _i32.pack(len(unsupported))
    return message(b"v", body + b"".join(cstr(name) for name in unsupported))


def parameter_description(oids: Sequence[int]) -> bytes:
    return message(b"t", _i16.pack(len(oids)) + b"".join(_u32.pack(o) for o in oids))


_field = struct.Struct("!ihihih")


def row_description(columns: Sequence[ColumnDesc], formats: Sequence[int], sizes: Sequence[int]) -> bytes:
    """RowDescription; `sizes` are the resolved type sizes (see values.type_size)."""
    parts = [_i16.pack(len(columns))]
    for col, fmt, size in zip(columns, formats, sizes):
        # table OID 0 and attribute number 0: results are not columns of a stored table.
        parts.append(cstr(col.name) + _field.pack(0, 0, col.type_oid, size, col.type_modifier, fmt))
    return message(b"T", b"".join(parts))


def error_fields(err: BackendError, position_offset: int = 0) -> bytes:
    fields = [
        b"S" + cstr(err.severity),
        b"V" + cstr(err.severity),  # non-localized severity (protocol 3, PostgreSQL >= 9.6)
        b"C" + cstr(err.sqlstate),
        b"M" + cstr(err.message),
    ]
    if err.detail:
        fields.append(b"D" + cstr(err.detail))
    if err.hint:
        fields.append(b"H" + cstr(err.hint))
    if err.position:
        fields.append(b"P" + cstr(str(err.position + position_offset)))
    return b"".join(fields) + b"\0"


def error_response(err: BackendError, position_offset: int = 0) -> bytes:
    return message(b"E", error_fields(err, position_offset))


def notice_response(err: BackendError) -> bytes:
    return message(b"N", error_fields(err))
