"""Result values as JSON without losing type or precision (shared by REST and GraphQL).

Integers stay integers, timestamps become ISO 8601 text, and a Decimal is written as a JSON
number with exactly its own digits: one with at most 15 significant digits is written through
a float (whose shortest repr gives back the same digits); a longer one is carried as
`ExactNumber` and spliced into the JSON text as it is, so `12345678901234567.89` is never
rounded.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import secrets
from typing import Any

_FLOAT_SAFE_DIGITS = 15


class ExactNumber:
    """A number to be written into JSON text with these exact digits."""

    __slots__ = ("digits",)

    def __init__(self, digits: str):
        self.digits = digits

    def __repr__(self) -> str:
        return self.digits

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ExactNumber):
            return self.digits == other.digits
        if isinstance(other, (int, float, decimal.Decimal)) and not isinstance(other, bool):
            return decimal.Decimal(self.digits) == decimal.Decimal(str(other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.digits)


def decimal_value(value: decimal.Decimal) -> int | float | ExactNumber | None:
    """A Decimal as an int, a float that prints the same digits, or an ExactNumber."""
    if not value.is_finite():
        return None  # NaN / Infinity have no JSON form
    sign, digits, exponent = value.as_tuple()
    if exponent >= 0:
        return int(value)
    leading_zeros = next((i for i, d in enumerate(digits) if d), len(digits))
    significant = max(len(digits) - leading_zeros, 1)
    if significant <= _FLOAT_SAFE_DIGITS:
        return float(value)
    return ExactNumber(format(value, "f"))


def json_value(value: Any) -> Any:
    """A result value as JSON carries it (see the module docstring)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, decimal.Decimal):
        return decimal_value(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


# A marker no user text can contain: the nonce is drawn per process.
_NONCE = secrets.token_hex(8)
_MARK = f"\u0000{_NONCE}:"
_MARKED = re.compile(r'"\\u0000' + _NONCE + r':(-?[0-9]+(?:\.[0-9]+)?)\\u0000"')


def _default(value: Any) -> Any:
    if isinstance(value, ExactNumber):
        return f"{_MARK}{value.digits}\u0000"
    converted = json_value(value)
    if converted is value:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")
    return converted


try:  # several times faster on big results; used when installed, not required
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

_NONCE_BYTES = _NONCE.encode()
_MARKED_BYTES = re.compile(_MARKED.pattern.encode())


def dumps(document: Any) -> bytes:
    """Compact JSON bytes of `document`; Decimal, datetime and ExactNumber handled as above."""
    if _orjson is not None:
        try:
            data = _orjson.dumps(document, default=_default)
        except TypeError:  # e.g. an integer beyond 64 bits: the standard library copes
            pass
        else:
            return _MARKED_BYTES.sub(rb"\1", data) if _NONCE_BYTES in data else data
    return dumps_stdlib(document)


def dumps_stdlib(document: Any) -> bytes:
    try:
        text = json.dumps(document, default=_default, separators=(",", ":"), allow_nan=False)
    except ValueError:  # NaN or an infinity somewhere: write it as null
        text = json.dumps(json_value(document), default=_default, separators=(",", ":"), allow_nan=False)
    if _NONCE in text:
        text = _MARKED.sub(r"\1", text)
    return text.encode("utf-8")
