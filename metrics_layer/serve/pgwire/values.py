"""Type OIDs and value codecs: Python values to/from PostgreSQL text and binary formats.

Results are encoded in batches of DataRow messages by `RowEncoder`, whose hot loop is
generated per list of column kinds (unrolled, no per-row attribute lookups, integers and
timestamps in text encoded inline): it is the throughput bottleneck of the server. Per-column encoders are chosen once per result from the column's
type OID and format code; a value of an unexpected Python type drops the batch to a slower
path that converts it to the declared type (or fails with a clear error). Arrow results
(`ArrowRows`) are encoded per column by `ColumnarEncoder`, to the same bytes (see below).
"""

from __future__ import annotations

import binascii
import datetime as dt
import functools
import itertools
import json
import math
import re
import struct
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterator, Sequence

from .backend import BackendError


class OID:
    BOOL = 16
    BYTEA = 17
    CHAR = 18
    NAME = 19
    INT8 = 20
    INT2 = 21
    INT4 = 23
    TEXT = 25
    OID = 26
    JSON = 114
    FLOAT4 = 700
    FLOAT8 = 701
    UNKNOWN = 705
    BPCHAR = 1042
    VARCHAR = 1043
    DATE = 1082
    TIME = 1083
    TIMESTAMP = 1114
    TIMESTAMPTZ = 1184
    INTERVAL = 1186
    NUMERIC = 1700
    UUID = 2950
    JSONB = 3802


TYPE_NAMES = {
    16: "boolean", 17: "bytea", 18: "\"char\"", 19: "name", 20: "bigint", 21: "smallint",
    23: "integer", 25: "text", 26: "oid", 114: "json", 700: "real", 701: "double precision",
    705: "unknown", 1042: "character", 1043: "character varying", 1082: "date",
    1083: "time without time zone", 1114: "timestamp without time zone",
    1184: "timestamp with time zone", 1186: "interval", 1700: "numeric", 2950: "uuid",
    3802: "jsonb",
}

# pg_type.typlen, announced in RowDescription.
_TYPE_SIZES = {
    16: 1, 18: 1, 19: 64, 20: 8, 21: 2, 23: 4, 26: 4, 700: 4, 701: 8, 705: -2, 1082: 4,
    1083: 8, 1114: 8, 1184: 8, 1186: 16, 2950: 16,
}

_TEXT_LIKE = (OID.TEXT, OID.VARCHAR, OID.BPCHAR, OID.NAME, OID.CHAR, OID.UNKNOWN, OID.JSON)


def type_name(oid: int) -> str:
    return TYPE_NAMES.get(oid, f"type {oid}")


def type_size(oid: int, declared: int = -1) -> int:
    return declared if declared != -1 else _TYPE_SIZES.get(oid, -1)


_i16 = struct.Struct("!h")
_i32 = struct.Struct("!i")
_i64 = struct.Struct("!q")
_u32 = struct.Struct("!I")
_f32 = struct.Struct("!f")
_f64 = struct.Struct("!d")
_interval = struct.Struct("!qii")
_numeric_head = struct.Struct("!hhHh")

_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_ORDINAL = dt.date(2000, 1, 1).toordinal()
_UTC = dt.timezone.utc
_US = 1_000_000

# ---------------------------------------------------------------------------------------
# Text output (what PostgreSQL prints with DateStyle ISO, IntervalStyle postgres, TimeZone UTC)


def _pg_float_style(shortest: str, sci_from: int) -> bytes:
    """Shortest round-trip digits laid out as PostgreSQL does: exponent notation when the
    decimal exponent is < -4 or >= `sci_from` (15 for double precision, 6 for real)."""
    d = Decimal(shortest).normalize()
    exp = d.adjusted()
    if -4 <= exp < sci_from or not d:
        return format(d, "f").encode()
    sign, digits, _ = d.as_tuple()
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{exp:+03d}".encode()


def _float_text(v: float) -> bytes:
    v = float(v)
    if math.isfinite(v):
        r = repr(v)  # shortest round-trip digits, like PostgreSQL's default output
        if "e" in r or -1e15 < v < 1e15:  # where Python's layout matches PostgreSQL's
            return (r[:-2] if r.endswith(".0") else r).encode()
        return _pg_float_style(r, 15)
    return b"NaN" if v != v else (b"Infinity" if v > 0 else b"-Infinity")


def _float4_text(v: float) -> bytes:
    v = _f32.unpack(_f32.pack(float(v)))[0]
    if not math.isfinite(v):
        return _float_text(v)
    for digits in range(6, 10):  # shortest decimal that survives a float32 round trip
        text = "%.*g" % (digits, v)
        if _f32.unpack(_f32.pack(float(text)))[0] == v:
            break
    return _pg_float_style(text, 6)


def _numeric_text(v: Any) -> bytes:
    if isinstance(v, float):
        v = Decimal(repr(v)) if math.isfinite(v) else Decimal(v)
    elif not isinstance(v, Decimal):
        v = Decimal(v)
    if v.is_finite():
        return format(v, "f").encode()
    return b"NaN" if v.is_nan() else (b"Infinity" if v > 0 else b"-Infinity")


def _bytea_text(v: bytes) -> bytes:
    return b"\\x" + binascii.hexlify(v)


def _date_text(v: dt.date) -> bytes:
    return dt.date.isoformat(v).encode()


def _naive_utc(v: dt.datetime) -> dt.datetime:
    return v.astimezone(_UTC).replace(tzinfo=None) if v.tzinfo is not None else v


# Whole-second naive timestamps, the common case, are assembled from cached pieces:
# "YYYY-MM-DD HH:" per distinct date and hour, "MM:SS" from a table. isoformat() goes through
# printf-style formatting and costs about twice as much; this is the hottest encoder when
# streaming.
_MINUTE_SECOND = [b"%02d:%02d" % divmod(i, 60) for i in range(3600)]
_DATE_HOURS: dict[int, bytes] = {}
_DATETIME = dt.datetime


def _date_hour(v: dt.datetime, key: int) -> bytes:
    if len(_DATE_HOURS) >= 65536:
        _DATE_HOURS.clear()
    head = _DATE_HOURS[key] = v.isoformat(" ")[:14].encode()  # "YYYY-MM-DD HH:"
    return head


def _timestamp_text(v: dt.datetime) -> bytes:
    if v.__class__ is _DATETIME and v.tzinfo is None and not v.microsecond:
        key = v.toordinal() * 24 + v.hour
        return (_DATE_HOURS.get(key) or _date_hour(v, key)) + _MINUTE_SECOND[v.minute * 60 + v.second]
    v = _naive_utc(v)
    text = v.isoformat(" ")
    return (text.rstrip("0") if v.microsecond else text).encode()


def _timestamptz_text(v: dt.datetime) -> bytes:
    return _timestamp_text(v) + b"+00"


def _time_text(v: dt.time) -> bytes:
    text = v.replace(tzinfo=None).isoformat()
    return (text.rstrip("0") if v.microsecond else text).encode()


def _interval_text(v: dt.timedelta) -> bytes:
    total = (v.days * 86400 + v.seconds) * _US + v.microseconds
    sign = "-" if total < 0 else ""
    days, rest = divmod(abs(total), 86400 * _US)
    parts = []
    if days:
        parts.append(f"{sign}{days} day" + ("" if days == 1 and not sign else "s"))
    if rest or not days:
        seconds, micros = divmod(rest, _US)
        hours, seconds = divmod(seconds, 3600)
        clock = f"{sign}{hours:02d}:{seconds // 60:02d}:{seconds % 60:02d}"
        parts.append(clock + (f".{micros:06d}".rstrip("0") if micros else ""))
    return " ".join(parts).encode()


def text_any(v: Any) -> bytes:
    """Text form of any value, chosen by its Python type (for untyped or unknown columns)."""
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, bool):
        return b"t" if v else b"f"
    if isinstance(v, int):
        return b"%d" % v
    if isinstance(v, float):
        return _float_text(v)
    if isinstance(v, Decimal):
        return _numeric_text(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _bytea_text(bytes(v))
    if isinstance(v, dt.datetime):
        return _timestamptz_text(v) if v.tzinfo is not None else _timestamp_text(v)
    if isinstance(v, dt.date):
        return _date_text(v)
    if isinstance(v, dt.time):
        return _time_text(v)
    if isinstance(v, dt.timedelta):
        return _interval_text(v)
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str).encode()
    return str(v).encode()


# Fast encoders: exact Python type expected; anything else raises and takes the slow path.
_TEXT_ENCODERS: dict[int, Callable[[Any], bytes]] = {
    OID.BOOL: (b"f", b"t").__getitem__,
    OID.INT2: b"%d".__mod__,
    OID.INT4: b"%d".__mod__,
    OID.INT8: b"%d".__mod__,
    OID.OID: b"%d".__mod__,
    OID.FLOAT4: _float4_text,
    OID.FLOAT8: _float_text,
    OID.NUMERIC: _numeric_text,
    OID.BYTEA: _bytea_text,
    OID.DATE: _date_text,
    OID.TIME: _time_text,
    OID.TIMESTAMP: _timestamp_text,
    OID.TIMESTAMPTZ: _timestamptz_text,
    OID.INTERVAL: _interval_text,
    OID.UUID: lambda v: str(v).encode(),
    OID.JSONB: str.encode,
    **{oid: str.encode for oid in _TEXT_LIKE},
}

# ---------------------------------------------------------------------------------------
# Binary output


def _numeric_binary(v: Any) -> bytes:
    if not isinstance(v, Decimal):
        v = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
    if v.is_nan():
        return _numeric_head.pack(0, 0, 0xC000, 0)
    if v.is_infinite():
        return _numeric_head.pack(0, 0, 0xD000 if v > 0 else 0xF000, 0)
    sign, digits, exp = v.as_tuple()
    text = "".join(map(str, digits))
    if exp > 0:
        text, exp = text + "0" * exp, 0
    frac = -exp
    text += "0" * (-frac % 4)  # pad the fraction to whole base-10000 digits
    int_len = len(text) - frac - (-frac % 4)
    text = "0" * (-int_len % 4) + text  # and the integer part
    groups = [int(text[i:i + 4]) for i in range(0, len(text), 4)]
    weight = (int_len + (-int_len % 4)) // 4 - 1
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    head = _numeric_head.pack(len(groups), weight, 0x4000 if sign else 0, frac)
    return head + struct.pack(f"!{len(groups)}H", *groups)


def _date_binary(v: dt.date) -> bytes:
    return _i32.pack(dt.date.toordinal(v) - _PG_EPOCH_ORDINAL)


def _timestamp_binary(v: dt.datetime) -> bytes:
    d = _naive_utc(v) - _PG_EPOCH
    return _i64.pack((d.days * 86400 + d.seconds) * _US + d.microseconds)


def _time_binary(v: dt.time) -> bytes:
    return _i64.pack(((v.hour * 60 + v.minute) * 60 + v.second) * _US + v.microsecond)


def _interval_binary(v: dt.timedelta) -> bytes:
    # Days and time with the same sign, as PostgreSQL stores '-1 days -02:00:00'.
    total = (v.days * 86400 + v.seconds) * _US + v.microseconds
    days, micros = divmod(abs(total), 86400 * _US)
    sign = -1 if total < 0 else 1
    return _interval.pack(sign * micros, sign * days, 0)


_BINARY_ENCODERS: dict[int, Callable[[Any], bytes]] = {
    OID.BOOL: (b"\0", b"\1").__getitem__,
    OID.INT2: _i16.pack,
    OID.INT4: _i32.pack,
    OID.INT8: _i64.pack,
    OID.OID: _u32.pack,
    OID.FLOAT4: _f32.pack,
    OID.FLOAT8: _f64.pack,
    OID.NUMERIC: _numeric_binary,
    OID.BYTEA: bytes,
    OID.DATE: _date_binary,
    OID.TIME: _time_binary,
    OID.TIMESTAMP: _timestamp_binary,
    OID.TIMESTAMPTZ: _timestamp_binary,
    OID.INTERVAL: _interval_binary,
    OID.UUID: lambda v: v.bytes,
    OID.JSONB: lambda v: b"\1" + v.encode(),
    **{oid: str.encode for oid in _TEXT_LIKE},
}

# ---------------------------------------------------------------------------------------
# One-dimensional arrays (catalog columns: pg_constraint.conkey, array_agg(attname)...); lists
# of other types travel as their text (catalog.py).

ARRAY_ELEMENTS = {1009: OID.TEXT, 1028: OID.OID, 1000: OID.BOOL, 1005: OID.INT2, 1007: OID.INT4, 1016: OID.INT8}


def array_text(items: Sequence[Any]) -> str:
    """PostgreSQL's text form of a one-dimensional array: {a,"b c",NULL}."""
    parts = []
    for item in items:
        if item is None:
            parts.append("NULL")
        elif isinstance(item, bool):
            parts.append("t" if item else "f")
        elif isinstance(item, (int, float, Decimal)):
            parts.append(str(item))
        else:
            text = str(item)
            if text == "" or re.search(r'[\s,{}"\\]', text) or text.upper() == "NULL":
                text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
            parts.append(text)
    return "{" + ",".join(parts) + "}"


def _array_binary(element: int) -> Callable[[Sequence[Any]], bytes]:
    encode = _BINARY_ENCODERS[element]

    def pack(items: Sequence[Any]) -> bytes:
        if not items:
            return _i32.pack(0) + _i32.pack(0) + _u32.pack(element)
        out = [_i32.pack(1), _i32.pack(int(any(i is None for i in items))), _u32.pack(element),
               _i32.pack(len(items)), _i32.pack(1)]
        for item in items:
            if item is None:
                out.append(_i32.pack(-1))
            else:
                data = encode(item)
                out += [_i32.pack(len(data)), data]
        return b"".join(out)

    return pack


for _oid, _element in ARRAY_ELEMENTS.items():
    _TEXT_ENCODERS[_oid] = lambda v: array_text(v).encode()
    _BINARY_ENCODERS[_oid] = _array_binary(_element)
TYPE_NAMES.update({1009: "text[]", 1028: "oid[]", 1000: "boolean[]", 1005: "smallint[]", 1007: "integer[]", 1016: "bigint[]"})

# ---------------------------------------------------------------------------------------
# Text input (parameters)

_TRUE = {"t", "true", "y", "yes", "on", "1"}
_FALSE = {"f", "false", "n", "no", "off", "0"}
_INT_RANGES = {OID.INT2: 1 << 15, OID.INT4: 1 << 31, OID.INT8: 1 << 63}


def _bool_from_text(s: str) -> bool:
    s = s.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(s)


def _int_from_text(oid: int) -> Callable[[str], int]:
    bound = _INT_RANGES.get(oid, 1 << 32)

    def parse(s: str) -> int:
        value = int(s.strip())
        if not (-bound <= value < bound) or (oid == OID.OID and value < 0):
            raise BackendError(f"value \"{s}\" is out of range for type {type_name(oid)}", "22003")
        return value

    return parse


def _bytea_from_text(s: str) -> bytes:
    if s.startswith("\\x"):
        return binascii.unhexlify(s[2:])
    out = bytearray()  # escape format: \\ and \ooo octal escapes
    i = 0
    while i < len(s):
        if s[i] != "\\":
            out += s[i].encode()
            i += 1
        elif s.startswith("\\\\", i):
            out += b"\\"
            i += 2
        else:
            out.append(int(s[i + 1:i + 4], 8))
            i += 4
    return bytes(out)


def _timestamp_from_text(s: str) -> dt.datetime:
    return _naive_utc(dt.datetime.fromisoformat(s.strip()))


def _timestamptz_from_text(s: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(s.strip())
    return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)


def _date_from_text(s: str) -> dt.date:
    s = s.strip()
    return dt.datetime.fromisoformat(s).date() if len(s) > 10 else dt.date.fromisoformat(s)


_INTERVAL_UNITS = {  # microseconds per unit; None = calendar unit a timedelta cannot hold
    "microsecond": 1, "us": 1, "usec": 1, "millisecond": 1000, "ms": 1000, "msec": 1000,
    "second": _US, "sec": _US, "s": _US, "minute": 60 * _US, "min": 60 * _US, "m": 60 * _US,
    "hour": 3600 * _US, "hr": 3600 * _US, "h": 3600 * _US, "day": 86400 * _US, "d": 86400 * _US,
    "week": 7 * 86400 * _US, "w": 7 * 86400 * _US, "month": None, "mon": None, "year": None,
    "yr": None, "y": None, "decade": None, "century": None, "millennium": None,
}
_INTERVAL_TOKEN = re.compile(
    r"\s*(?:(?P<clock>[+-]?\d+:\d+(?::\d+(?:\.\d*)?)?)"
    r"|(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[a-z]+)?)\s*,?",
    re.I,
)


def _interval_from_text(s: str) -> dt.timedelta | str:
    """Postgres-style intervals ('1 day 02:00:00', '3 hours', '-1 days +01:30') as timedelta.

    Calendar units (months, years) have no fixed length, and other syntaxes (ISO 8601, SQL
    standard) are rare: such values are passed on as the original text for the backend.
    """
    text = s.strip().lower()
    ago = text.endswith(" ago")
    text = text.removesuffix(" ago").lstrip("@ ")
    micros, pos = 0, 0
    while pos < len(text):
        m = _INTERVAL_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            return s
        pos = m.end()
        if m["clock"]:
            sign = -1 if m["clock"].startswith("-") else 1
            fields = m["clock"].lstrip("+-").split(":")
            seconds = int(fields[0]) * 3600 + int(fields[1]) * 60 + Decimal(fields[2] if len(fields) > 2 else 0)
            micros += sign * int(seconds * _US)
            continue
        unit = m["unit"] or "second"
        if unit not in _INTERVAL_UNITS and unit.endswith("s"):
            unit = unit[:-1]  # plural
        if unit not in _INTERVAL_UNITS or _INTERVAL_UNITS[unit] is None:
            return s
        micros += int(Decimal(m["num"]) * _INTERVAL_UNITS[unit])
    return dt.timedelta(microseconds=-micros if ago else micros)


def _uuid_from_text(s: str) -> str:
    return str(uuid.UUID(s.strip()))


_TEXT_DECODERS: dict[int, Callable[[str], Any]] = {
    OID.BOOL: _bool_from_text,
    OID.INT2: _int_from_text(OID.INT2),
    OID.INT4: _int_from_text(OID.INT4),
    OID.INT8: _int_from_text(OID.INT8),
    OID.OID: _int_from_text(OID.OID),
    OID.FLOAT4: float,
    OID.FLOAT8: float,
    OID.NUMERIC: lambda s: Decimal(s.strip()),
    OID.BYTEA: _bytea_from_text,
    OID.DATE: _date_from_text,
    OID.TIME: lambda s: dt.time.fromisoformat(s.strip()),
    OID.TIMESTAMP: _timestamp_from_text,
    OID.TIMESTAMPTZ: _timestamptz_from_text,
    OID.INTERVAL: _interval_from_text,
    OID.UUID: _uuid_from_text,
}

# ---------------------------------------------------------------------------------------
# Binary input (parameters)


def _numeric_from_binary(data: bytes) -> Decimal:
    ndigits, weight, sign, dscale = _numeric_head.unpack(data[:8])
    if sign in (0xC000, 0xD000, 0xF000):
        return Decimal({0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}[sign])
    if sign not in (0, 0x4000) or len(data) != 8 + 2 * ndigits:
        raise ValueError("invalid numeric")
    groups = struct.unpack(f"!{ndigits}H", data[8:])
    text = "".join("%04d" % g for g in groups) or "0"
    exp = 4 * (weight + 1 - ndigits)  # value = int(text) * 10**exp
    if exp > -dscale:
        text, exp = text + "0" * (exp + dscale), -dscale
    elif exp < -dscale:
        text, exp = text[:exp + dscale] or "0", -dscale  # the dropped digits are padding zeros
    return Decimal((1 if sign else 0, tuple(map(int, text)), exp))


def _unpack1(s: struct.Struct) -> Callable[[bytes], Any]:
    return lambda data: s.unpack(data)[0]


def _interval_from_binary(data: bytes) -> dt.timedelta | str:
    micros, days, months = _interval.unpack(data)
    if months:
        return f"{months} mons {days} days" + (" " + _interval_text(dt.timedelta(microseconds=micros)).decode())
    return dt.timedelta(days=days, microseconds=micros)


def _jsonb_from_binary(data: bytes) -> str:
    if data[:1] != b"\1":
        raise ValueError("unsupported jsonb version")
    return data[1:].decode()


def _bool_from_binary(data: bytes) -> bool:
    if len(data) != 1:
        raise ValueError("invalid bool")
    return data != b"\0"


_BINARY_DECODERS: dict[int, Callable[[bytes], Any]] = {
    OID.BOOL: _bool_from_binary,
    OID.INT2: _unpack1(_i16),
    OID.INT4: _unpack1(_i32),
    OID.INT8: _unpack1(_i64),
    OID.OID: _unpack1(_u32),
    OID.FLOAT4: _unpack1(_f32),
    OID.FLOAT8: _unpack1(_f64),
    OID.NUMERIC: _numeric_from_binary,
    OID.BYTEA: bytes,
    OID.DATE: lambda d: dt.date.fromordinal(_i32.unpack(d)[0] + _PG_EPOCH_ORDINAL),
    OID.TIME: lambda d: (dt.datetime.min + dt.timedelta(microseconds=_i64.unpack(d)[0])).time(),
    OID.TIMESTAMP: lambda d: _PG_EPOCH + dt.timedelta(microseconds=_i64.unpack(d)[0]),
    OID.TIMESTAMPTZ: lambda d: (_PG_EPOCH + dt.timedelta(microseconds=_i64.unpack(d)[0])).replace(tzinfo=_UTC),
    OID.INTERVAL: _interval_from_binary,
    OID.UUID: lambda d: str(uuid.UUID(bytes=d)),
    OID.JSONB: _jsonb_from_binary,
    **{oid: lambda d: d.decode() for oid in _TEXT_LIKE},
}


def _int_array_from_binary(data: bytes) -> list[int | None]:
    """A one-dimensional bigint[] / oid[] parameter in binary (asyncpg's type introspection sends one)."""
    ndim, _, element = struct.unpack_from("!iiI", data)
    if ndim == 0:
        return []
    if ndim != 1:
        raise BackendError("only one-dimensional array parameters are supported", "0A000")
    count, _ = struct.unpack_from("!ii", data, 12)
    decode = _BINARY_DECODERS[element]
    items, at = [], 20
    for _ in range(count):
        (length,) = struct.unpack_from("!i", data, at)
        at += 4
        items.append(None if length < 0 else decode(data[at:at + length]))
        at += max(length, 0)
    return items


def _int_array_from_text(s: str) -> list[int | None]:
    body = s.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError(s)
    return [None if x.strip().upper() == "NULL" else int(x) for x in body[1:-1].split(",") if x.strip()]


for _oid in (1016, 1028):
    _BINARY_DECODERS[_oid] = _int_array_from_binary
    _TEXT_DECODERS[_oid] = _int_array_from_text


def decode_param(oid: int, fmt: int, data: bytes | None, index: int) -> Any:
    """A Bind parameter (1-based `index`) as a Python value; unknown types stay text (or bytes)."""
    if data is None:
        return None
    if fmt == 1:
        decoder = _BINARY_DECODERS.get(oid)
        if decoder is None:
            return data
        try:
            return decoder(data)
        except BackendError:
            raise
        except Exception:
            raise BackendError(f"incorrect binary data format in bind parameter {index}", "22P03") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BackendError("invalid byte sequence for encoding \"UTF8\"", "22021") from None
    decoder = _TEXT_DECODERS.get(oid)
    if decoder is None:
        return text
    try:
        return decoder(text)
    except BackendError:
        raise
    except (ValueError, ArithmeticError, InvalidOperation, binascii.Error):
        code = "22007" if oid in (OID.DATE, OID.TIME, OID.TIMESTAMP, OID.TIMESTAMPTZ) else "22P02"
        raise BackendError(f"invalid input syntax for type {type_name(oid)}: \"{text}\"", code) from None


# ---------------------------------------------------------------------------------------
# Result rows


def _coerce(oid: int, v: Any) -> Any:
    """Convert a value of an unexpected Python type to what the fast encoder of `oid` takes."""
    if oid == OID.BOOL:
        return bool(v)
    if oid in (OID.INT2, OID.INT4, OID.INT8, OID.OID):
        return int(v)
    if oid in (OID.FLOAT4, OID.FLOAT8):
        return float(v)
    if oid == OID.NUMERIC:
        return v if isinstance(v, (int, float)) else Decimal(str(v))
    if oid in _TEXT_LIKE or oid == OID.JSONB:
        return text_any(v).decode()
    if oid == OID.BYTEA:
        return bytes(v)
    if oid == OID.DATE and isinstance(v, dt.datetime):
        return v.date()
    if oid in (OID.TIMESTAMP, OID.TIMESTAMPTZ) and isinstance(v, dt.date):
        return dt.datetime.combine(v, dt.time())
    if oid == OID.TIME and isinstance(v, dt.datetime):
        return v.time()
    if oid == OID.INTERVAL and isinstance(v, (int, float, Decimal)):
        return dt.timedelta(seconds=float(v))
    if oid == OID.UUID:
        return uuid.UUID(str(v))
    raise TypeError(type(v).__name__)


def _safe_encoder(oid: int, fmt: int) -> Callable[[Any], bytes]:
    """The slow path: accept any value that converts sensibly to the column's type."""
    fast = (_BINARY_ENCODERS if fmt else _TEXT_ENCODERS).get(oid)
    parse = _TEXT_DECODERS.get(oid)

    def convert(v: Any) -> bytes:
        if isinstance(v, str):
            if not fmt:
                return v.encode()  # text is always accepted as the value's text form
            if parse is not None:
                v = parse(v)
        try:
            return fast(v)
        except Exception:
            return fast(_coerce(oid, v))

    def encode(v: Any) -> bytes:
        if fast is None:
            return text_any(v)  # a type we have no codec for: its text form, in both formats
        try:
            return convert(v)
        except Exception:
            raise BackendError(
                f"cannot send {type(v).__name__} value {str(v)[:40]!r} as {type_name(oid)}", "XX000"
            ) from None

    return encode


_INT32 = [_i32.pack(n) for n in range(4096)]  # length prefixes of short values, prebuilt
_NULL = _i32.pack(-1)
_ROW_HEADER = struct.Struct("!cih").pack


# How the unrolled loop encodes a non-null value of a column: "call" its encoder, or inline
# the encoder's fast path for the hottest text encodings (a call costs as much as the work):
#   "int"  b"%d" % v, exactly what the int encoders (b"%d".__mod__) do;
#   "ts"   _timestamp_text's whole-second path, other values going to the encoder.
_INLINE_KINDS = {(OID.INT2, 0): "int", (OID.INT4, 0): "int", (OID.INT8, 0): "int", (OID.OID, 0): "int",
                 (OID.TIMESTAMP, 0): "ts"}


@functools.lru_cache(maxsize=256)
def _compiled_row_loop(kinds: tuple[str, ...]) -> Callable[..., bytes]:
    """An unrolled DataRow loop for columns of `kinds`: encode(rows, enc0, enc1, ...) -> bytes.

    Per row it unpacks the values, encodes each non-null one, prefixes its length and
    prepends the message header; the batch is joined once.
    """
    ncols = len(kinds)
    names = [f"v{i}" for i in range(ncols)]
    lines = [
        f"def encode(rows, {''.join(f'e{i}, ' for i in range(ncols))}):",
        "    parts = []",
        "    append = parts.append",
    ]
    if ncols == 0:
        lines += ["    for _ in rows:", "        append(HEADER(b'D', 6, 0))"]
    else:
        lines += [f"    for {', '.join(names)}, in rows:", "        size = 6"]
        for i, kind in enumerate(kinds):
            v = f"v{i}"
            lines += [
                f"        if {v} is None:",
                f"            b{i} = NULL",
                "            size += 4",
                "        else:",
            ]
            if kind == "int":
                lines.append(f"            b = b'%d' % {v}")
            elif kind == "ts":
                lines += [
                    f"            if {v}.__class__ is DATETIME and {v}.tzinfo is None and not {v}.microsecond:",
                    f"                k = {v}.toordinal() * 24 + {v}.hour",
                    f"                b = (DATE_HOURS_GET(k) or DATE_HOUR({v}, k)) + MINUTE_SECOND[{v}.minute * 60 + {v}.second]",
                    "            else:",
                    f"                b = e{i}({v})",
                ]
            else:
                lines.append(f"            b = e{i}({v})")
            lines += [
                "            n = len(b)",
                "            size += 4 + n",
                f"            b{i} = (INT32[n] if n < 4096 else PACK(n)) + b",
            ]
        lines.append(f"        append(HEADER(b'D', size, {ncols}) + {' + '.join(f'b{i}' for i in range(ncols))})")
    lines.append("    return b''.join(parts)")
    namespace = {"HEADER": _ROW_HEADER, "NULL": _NULL, "INT32": _INT32, "PACK": _i32.pack, "DATETIME": _DATETIME,
                 "DATE_HOURS_GET": _DATE_HOURS.get, "DATE_HOUR": _date_hour, "MINUTE_SECOND": _MINUTE_SECOND}
    exec("\n".join(lines), namespace)
    return namespace["encode"]


class RowEncoder:
    """Encodes batches of rows as DataRow messages for fixed column types and formats.

    `text_values` flags columns whose values arrive as ready PostgreSQL text (`str`, see
    `ColumnDesc.text_values`): in text format they are encoded as text columns are (str.encode),
    whatever the declared type; in binary format they take the usual path (parsed first).
    """

    def __init__(self, oids: Sequence[int], formats: Sequence[int], text_values: Sequence[bool] = ()):
        self.ncols = len(oids)
        ready = tuple(text_values) + (False,) * (self.ncols - len(text_values))
        self._loop = _compiled_row_loop(tuple(
            "call" if ready_text and not fmt else _INLINE_KINDS.get((oid, fmt), "call")
            for oid, fmt, ready_text in zip(oids, formats, ready)))
        self._safe_loop = _compiled_row_loop(("call",) * self.ncols)
        self._fast = tuple(
            str.encode if ready_text and not fmt else (_BINARY_ENCODERS if fmt else _TEXT_ENCODERS).get(oid, text_any)
            for oid, fmt, ready_text in zip(oids, formats, ready)
        )
        self._safe = tuple(_safe_encoder(oid, fmt) for oid, fmt in zip(oids, formats))
        self._key = (tuple(oids), tuple(formats), ready)

    def columnar(self) -> ColumnarEncoder:
        """The ColumnarEncoder of these columns (for Arrow results)."""
        return columnar_encoder(*self._key)

    def encode(self, rows: list) -> bytes:
        try:
            return self._loop(rows, *self._fast)
        except Exception:
            pass  # some value needs converting (or a row has the wrong length)
        for row in rows:
            if len(row) != self.ncols:
                raise BackendError(f"backend returned a row of {len(row)} values for {self.ncols} columns", "XX000")
        return self._safe_loop(rows, *self._safe)


@functools.lru_cache(maxsize=512)
def row_encoder(oids: tuple[int, ...], formats: tuple[int, ...], text_values: tuple[bool, ...] = ()) -> RowEncoder:
    """A shared RowEncoder for these column types and formats (encoders hold no state)."""
    return RowEncoder(oids, formats, text_values)


# ---------------------------------------------------------------------------------------
# Columnar results: Arrow record batches encoded column by column
#
# A backend whose engine hands out Arrow record batches (DuckDB) returns them as `ArrowRows`.
# Each column is turned into one Arrow binary array of its wire form, vectorised (pyarrow
# casts for integers, decimals, dates, text; numpy byte swaps for binary fixed-width types),
# the 4-byte length prefixes and the 7-byte DataRow headers are computed with numpy, and one
# `take` over all pieces interleaves them row by row: Python runs per batch, not per row.
# Values whose vectorised form could differ from the row encoders' (floats outside the range
# where Arrow's and PostgreSQL's layouts agree, timestamps with fractions...) are encoded by the
# row encoders themselves, so the bytes are identical to `RowEncoder`'s. A column type with no
# columnar form makes the whole batch go through `RowEncoder` (rows converted from Arrow).

_PG_EPOCH_DAYS = 10_957  # 2000-01-01 - 1970-01-01
_PG_EPOCH_MICROS = _PG_EPOCH_DAYS * 86_400 * _US
_COLUMNAR_MIN_ROWS = 64  # smaller batches go through the row encoder
_BINARY_INTS = {OID.INT2: "int16", OID.INT4: "int32", OID.INT8: "int64", OID.OID: "uint32"}


def _pa():
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa, pc


class ArrowRows:
    """A result as Arrow record batches, iterable as rows too (tuples, as a DB-API cursor gives).

    `batches` yields `pyarrow.RecordBatch`es of `schema`; `columns` optionally selects and
    orders their columns (indexes, repeats allowed); `offset`/`limit` keep a slice of the rows.
    `on_error(exc)` may map an exception raised while reading to another (raised instead);
    `on_close()` runs once when the rows are exhausted, fail or are closed.
    """

    def __init__(self, schema, batches, columns: Sequence[int] | None = None, offset: int = 0,
                 limit: int | None = None, on_error: Callable[[BaseException], BaseException | None] | None = None,
                 on_close: Callable[[], None] | None = None):
        pa, _ = _pa()
        self._columns = None if columns is None or list(columns) == list(range(len(schema))) else list(columns)
        self.schema = schema if self._columns is None else pa.schema([schema.field(i) for i in self._columns])
        self._batches = batches
        self._skip, self._left = offset, limit
        self._on_error, self._on_close = on_error, on_close
        self._pending = None  # a RecordBatch not yet handed out
        self._rows: Iterator | None = None  # rows of a batch converted for row iteration
        self._done = False

    def _next_batch(self):
        """The next non-empty batch (projected, sliced), or None at the end."""
        if self._pending is not None:
            batch, self._pending = self._pending, None
            return batch
        while not self._done:
            if self._left is not None and self._left <= 0:
                self.close()
                return None
            try:
                batch = next(self._batches)
            except StopIteration:
                self.close()
                return None
            except BaseException as e:
                self.close()
                mapped = self._on_error(e) if self._on_error is not None else None
                if mapped is not None:
                    raise mapped from None
                raise
            if self._skip:
                cut = min(self._skip, batch.num_rows)
                self._skip -= cut
                batch = batch.slice(cut)
            if self._left is not None:
                batch = batch.slice(0, self._left)
                self._left -= batch.num_rows
            if batch.num_rows:
                if self._columns is not None:
                    pa, _ = _pa()
                    batch = pa.RecordBatch.from_arrays([batch.column(i) for i in self._columns], schema=self.schema)
                return batch
        return None

    def take(self, want: int) -> list:
        """Up to `want` rows as pieces: RecordBatches, or a list of row tuples (rows already
        converted for row iteration come first). Fewer than `want` only at the end."""
        pieces: list = []
        if self._rows is not None:
            rows = list(itertools.islice(self._rows, want))
            if len(rows) < want:
                self._rows = None
            if rows:
                pieces.append(rows)
                want -= len(rows)
        while want > 0:
            batch = self._next_batch()
            if batch is None:
                break
            if batch.num_rows > want:
                batch, self._pending = batch.slice(0, want), batch.slice(want)
            pieces.append(batch)
            want -= batch.num_rows
        return pieces

    def __iter__(self) -> ArrowRows:
        return self

    def __next__(self) -> tuple:
        while True:
            if self._rows is not None:
                row = next(self._rows, None)
                if row is not None:
                    return row
                self._rows = None
            batch = self._next_batch()
            if batch is None:
                raise StopIteration
            self._rows = iter(arrow_rows(batch))

    def close(self) -> None:
        if self._done:
            return
        self._done, self._pending, self._rows = True, None, None
        try:
            close = getattr(self._batches, "close", None)
            if close is not None:
                close()
        finally:
            if self._on_close is not None:
                self._on_close()


def arrow_rows(batch) -> list[tuple]:
    """The rows of a RecordBatch as tuples of Python values."""
    return list(zip(*(column.to_pylist() for column in batch.columns)))


def _binary_of(n: int, width: int, data):
    """A binary array of n values of `width` bytes each from a numpy buffer."""
    pa, _ = _pa()
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(data)]).cast(pa.binary())


def _with_nulls(values, column):
    """`values` (binary) with the nulls of `column`."""
    pa, pc = _pa()
    if not column.null_count:
        return values
    return pc.if_else(pc.is_valid(column), values, pa.scalar(None, pa.binary()))


def _numbers(column, arrow_type=None):
    """A column as a numpy array (cast to `arrow_type` first), nulls as zeros."""
    pa, pc = _pa()
    if arrow_type is not None:
        column = pc.cast(column, arrow_type)
    if column.null_count:
        column = pc.fill_null(column, pa.scalar(False if pa.types.is_boolean(column.type) else 0, column.type))
    return column.to_numpy(zero_copy_only=False)


def _per_value(encode: Callable[[Any], bytes]):
    """A column encoder that runs a row encoder on each non-null value."""
    def convert(column):
        pa, _ = _pa()
        return pa.array([None if v is None else encode(v) for v in column.to_pylist()], pa.binary())
    return convert


def _replace_where(values, mask, column, encode: Callable[[Any], bytes]):
    """`values` with the entries where `mask` (numpy bool) is set encoded by `encode` instead."""
    import numpy as np

    pa, pc = _pa()
    where = np.flatnonzero(mask)
    if not len(where):
        return values
    fixed = pa.array([encode(v) for v in column.take(pa.array(where)).to_pylist()], pa.binary())
    return pc.replace_with_mask(values, pa.array(mask), fixed)


def _columnar_converter(oid: int, fmt: int, text_values: bool, arrow_type, safe: Callable[[Any], bytes]):
    """A function Arrow column -> binary array of the values' wire form (nulls stay null),
    or None when this column takes the row path. `safe` is the row path's encoder."""
    import numpy as np

    pa, pc = _pa()
    t = pa.types
    is_string = (t.is_string(arrow_type) or t.is_large_string(arrow_type)
                 or getattr(t, "is_string_view", lambda _: False)(arrow_type))
    if is_string and (oid in _TEXT_LIKE or (not fmt and (text_values or oid == OID.JSONB))):
        return lambda c: c.cast(pa.binary())  # UTF-8 as it is
    if t.is_dictionary(arrow_type) or t.is_nested(arrow_type):
        return None
    if not fmt:
        if t.is_integer(arrow_type) and oid in (OID.INT2, OID.INT4, OID.INT8, OID.OID, OID.NUMERIC):
            return lambda c: pc.cast(c, pa.string()).cast(pa.binary())
        if t.is_decimal(arrow_type) and oid == OID.NUMERIC:
            return lambda c: pc.cast(c, pa.string()).cast(pa.binary())
        if t.is_boolean(arrow_type) and oid == OID.BOOL:
            return lambda c: pc.if_else(c, pa.scalar(b"t"), pa.scalar(b"f"))
        if t.is_float64(arrow_type) and oid == OID.FLOAT8:
            def float8(c):
                # Arrow's shortest digits are laid out as PostgreSQL's in [1e-4, 1e13) and for
                # zero; other values (and NaN, infinities) are laid out by _float_text.
                values = pc.cast(c, pa.string()).cast(pa.binary())
                v = np.abs(c.to_numpy(zero_copy_only=False))
                with np.errstate(invalid="ignore"):
                    odd = ~(((v >= 1e-4) & (v < 1e13)) | (v == 0))
                if c.null_count:
                    odd &= c.is_valid().to_numpy(zero_copy_only=False)
                return _replace_where(values, odd, c, _float_text)
            return float8
        if t.is_date32(arrow_type) and oid == OID.DATE:
            return lambda c: pc.cast(c, pa.string()).cast(pa.binary())
        if t.is_timestamp(arrow_type) and arrow_type.unit == "us" and oid in (OID.TIMESTAMP, OID.TIMESTAMPTZ) \
                and (arrow_type.tz is None) == (oid == OID.TIMESTAMP):
            suffix = b"+00" if oid == OID.TIMESTAMPTZ else b""

            def timestamp(c):
                micros = _numbers(c, pa.int64())
                if (micros % _US).any():
                    return _per_value(safe)(c)  # fractions: trailing zeros trimmed per value
                text = pc.utf8_slice_codeunits(pc.cast(c.cast(pa.timestamp("us")), pa.string()), 0, 19)
                if suffix:
                    text = pc.binary_join_element_wise(text, pa.scalar(suffix.decode()), "")
                return text.cast(pa.binary())
            return timestamp
        return _per_value(safe) if _PER_VALUE_OK(arrow_type) else None
    # binary format
    if t.is_integer(arrow_type) and oid in _BINARY_INTS:
        width = np.dtype(_BINARY_INTS[oid]).itemsize

        def binary_int(c):
            try:
                cast = pc.cast(c, _BINARY_INTS[oid])  # raises on overflow: then per value (its error)
            except pa.ArrowInvalid:
                return _per_value(safe)(c)
            data = _numbers(cast).astype(np.dtype(_BINARY_INTS[oid]).newbyteorder(">"))
            return _with_nulls(_binary_of(len(c), width, data), c)
        return binary_int
    if oid in (OID.FLOAT8, OID.FLOAT4) and (t.is_float64(arrow_type) or t.is_float32(arrow_type)):
        if oid == OID.FLOAT4 and not t.is_float32(arrow_type):
            return _per_value(safe)  # struct rounds (and refuses overflows) as it does
        dtype = ">f8" if oid == OID.FLOAT8 else ">f4"
        width = 8 if oid == OID.FLOAT8 else 4
        return lambda c: _with_nulls(_binary_of(len(c), width, _numbers(c).astype(dtype)), c)
    if t.is_boolean(arrow_type) and oid == OID.BOOL:
        return lambda c: _with_nulls(_binary_of(len(c), 1, _numbers(c).astype(np.uint8)), c)
    if t.is_date32(arrow_type) and oid == OID.DATE:
        def date(c):
            days = _numbers(c, pa.int32()).astype(np.int64) - _PG_EPOCH_DAYS
            return _with_nulls(_binary_of(len(c), 4, days.astype(">i4")), c)
        return date
    if t.is_timestamp(arrow_type) and arrow_type.unit == "us" and oid in (OID.TIMESTAMP, OID.TIMESTAMPTZ):
        def timestamp_binary(c):
            micros = _numbers(c, pa.int64()) - _PG_EPOCH_MICROS
            return _with_nulls(_binary_of(len(c), 8, micros.astype(">i8")), c)
        return timestamp_binary
    return _per_value(safe) if _PER_VALUE_OK(arrow_type) else None


def _PER_VALUE_OK(arrow_type) -> bool:
    """Types whose Python values (to_pylist) are what a DB-API cursor gives, so that the row
    encoders produce the same bytes from them."""
    pa, _ = _pa()
    t = pa.types
    return (t.is_integer(arrow_type) or t.is_floating(arrow_type) or t.is_decimal(arrow_type)
            or t.is_boolean(arrow_type) or t.is_string(arrow_type) or t.is_large_string(arrow_type)
            or t.is_date32(arrow_type) or (t.is_timestamp(arrow_type) and arrow_type.unit == "us"))


class ColumnarEncoder:
    """Encodes Arrow record batches as DataRow messages, the same bytes as `RowEncoder`."""

    def __init__(self, rows: RowEncoder, oids: Sequence[int], formats: Sequence[int], text_values: Sequence[bool]):
        self.rows = rows
        self._columns = tuple(zip(oids, formats, tuple(text_values) + (False,) * (len(oids) - len(text_values))))
        self._plans: dict = {}  # schema -> per-column converters, or None (row path)
        self._index_cache: dict = {}

    def plan(self, schema):
        """Converters for a schema, or None when some column has no columnar form."""
        try:
            return self._plans[schema]
        except KeyError:
            pass
        plan = None
        if len(schema) == len(self._columns) and self._columns:
            converters = [
                _columnar_converter(oid, fmt, ready, field.type, self.rows._safe[i])
                for i, ((oid, fmt, ready), field) in enumerate(zip(self._columns, schema))]
            plan = None if any(c is None for c in converters) else converters
        if len(self._plans) > 64:
            self._plans.clear()
        self._plans[schema] = plan
        return plan

    def accepts(self, schema) -> bool:
        return self.plan(schema) is not None

    def _interleave(self, n: int, m: int):
        """Indexes that take piece j of row r from position j * n + r: row-major order."""
        import numpy as np

        pa, _ = _pa()
        key = (n, m)
        index = self._index_cache.get(key)
        if index is None:
            if len(self._index_cache) > 16:
                self._index_cache.clear()
            index = self._index_cache[key] = pa.array(
                ((np.arange(m, dtype=np.int64) * n)[None, :] + np.arange(n, dtype=np.int64)[:, None]).ravel())
        return index

    def encode(self, batch) -> bytes:
        import numpy as np

        pa, pc = _pa()
        n = batch.num_rows
        if not n:
            return b""
        plan = self.plan(batch.schema)
        if plan is None or n < _COLUMNAR_MIN_ROWS:
            return self.rows.encode(arrow_rows(batch))  # (a few rows: converting them costs less)
        pieces = []
        size = np.full(n, 6, dtype=np.int64)  # the length field itself and the column count
        for convert, column in zip(plan, batch.columns):
            values = convert(column)
            lengths = pc.binary_length(values)
            if values.null_count:
                lengths = pc.fill_null(lengths, -1)
            lengths = lengths.to_numpy(zero_copy_only=False).astype(np.int64)
            size += 4 + np.maximum(lengths, 0)
            pieces.append(_binary_of(n, 4, lengths.astype(">i4")))
            pieces.append(values)
        header = np.empty(n, dtype=[("t", "S1"), ("size", ">i4"), ("ncols", ">i2")])
        header["t"], header["size"], header["ncols"] = b"D", size, len(plan)
        pieces.insert(0, _binary_of(n, 7, header.view(np.uint8)))
        joined = pc.take(pa.concat_arrays(pieces), self._interleave(n, len(pieces)))
        _, offsets, data = joined.buffers()
        start, end = np.frombuffer(offsets, dtype=np.int32, count=n * len(pieces) + 1, offset=4 * joined.offset)[[0, -1]]
        return data.slice(int(start), int(end - start)).to_pybytes()


@functools.lru_cache(maxsize=512)
def columnar_encoder(oids: tuple[int, ...], formats: tuple[int, ...], text_values: tuple[bool, ...] = ()) -> ColumnarEncoder:
    """A shared ColumnarEncoder (its plans are per schema, the same for everyone)."""
    return ColumnarEncoder(row_encoder(oids, formats, text_values), oids, formats, text_values)
