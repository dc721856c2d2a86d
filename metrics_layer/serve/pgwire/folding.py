"""Constant folding of the value side of a client's condition (or LIMIT), on the sqlglot AST.

BI tools write the bounds of a time range as expressions, not literals: Superset
`TO_TIMESTAMP('2026-11-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')`, Metabase
`CAST(NOW() AS DATE) - INTERVAL '7 day'`, Tableau `DATE '2026-01-01'` and
`DATE_TRUNC('DAY', CURRENT_TIMESTAMP)`, Power BI / ODBC `TIMESTAMPADD(SQL_TSI_DAY, -7, ...)`,
`DATEADD(day, -7, CURRENT_DATE)`. An expression that references no column is evaluated here,
as PostgreSQL would with TimeZone UTC, into a Python value (datetime naive UTC, date, int,
Decimal, float, str, bool, or an `Interval` in between) that becomes a literal of the
SemanticQuery: nothing of the client's text reaches the engine.

"Now" is the statement's time, or the session's `metrics.as_of` when set. An expression that
reads it is checked when the statement is mapped and evaluated again at each execution
(`Deferred`), since mapped statements are cached by their text.

Anything else (a function we cannot evaluate exactly, a column, a parameter inside an
expression) is refused with QueryError 0A000 naming it.
"""

from __future__ import annotations

import calendar
import datetime as dt
import decimal
import re
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from ...query import QueryError, parse_timestamp

UNSUPPORTED = "0A000"
_US = 1_000_000


@dataclass(frozen=True)
class Interval:
    """A PostgreSQL interval: months, days and microseconds are kept apart (calendar units)."""

    months: int = 0
    days: int = 0
    micros: int = 0

    def __neg__(self) -> "Interval":
        return Interval(-self.months, -self.days, -self.micros)

    def __add__(self, other: "Interval") -> "Interval":
        return Interval(self.months + other.months, self.days + other.days, self.micros + other.micros)

    def scaled(self, n: int | decimal.Decimal | float) -> "Interval":
        if isinstance(n, int):
            return Interval(self.months * n, self.days * n, self.micros * n)
        if n == int(n):
            return self.scaled(int(n))
        raise QueryError("multiplying an interval by a fraction cannot be folded exactly; write the interval in smaller units", UNSUPPORTED)


@dataclass(frozen=True)
class Deferred:
    """A constant expression that reads "now": evaluated at each execution."""

    node: exp.Expression

    def value(self, now: dt.datetime) -> Any:
        return _Folder(now).value(self.node)


class _Clock:
    """A "now" that remembers whether it was read."""

    def __init__(self, now: dt.datetime):
        self.now = now
        self.read = False

    def __call__(self) -> dt.datetime:
        self.read = True
        return self.now


_PROBE_NOW = dt.datetime(2000, 1, 1)


def is_constant(node: exp.Expression) -> bool:
    """True when `node` can be a folded value: it names no column and holds no parameter
    (the unit argument of DATEADD(day, ...) parses as a column and is allowed)."""
    node = _strip(node)
    if isinstance(node, (exp.Column, exp.Star, exp.Parameter, exp.Placeholder, exp.Subquery, exp.Select)):
        return False
    if _is_dateadd(node):
        args = _call_args(node)
        return all(is_constant(a) for a in args[1:]) and (_unit_name(args[0]) is not None or is_constant(args[0]))
    return all(is_constant(child) for child in node.iter_expressions()
               if not isinstance(child, (exp.DataType, exp.Var)))


def fold(node: exp.Expression) -> Any:
    """The value of constant `node` (a Python value), or a `Deferred` when it reads "now".

    Errors (an unknown function, a bad timestamp) are raised here, when the statement is mapped."""
    clock = _Clock(_PROBE_NOW)
    value = _Folder(clock).value(node)
    if isinstance(value, Interval):
        raise QueryError(f"{_text(node)!r} is an interval, not a value a column can be compared with", UNSUPPORTED)
    return Deferred(node) if clock.read else value


def evaluate(node: exp.Expression, now: dt.datetime) -> Any:
    """The value of constant `node` with "now" = `now`."""
    return _Folder(now).value(node)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


# ---------------------------------------------------------------------------------------


def _strip(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _text(node: exp.Expression) -> str:
    return node.sql("postgres")[:80]


def _function_name(node: exp.Expression) -> str:
    """The function's name as the client wrote it (sqlglot's own names differ: RAND, TIME_TO_STR)."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).upper()
    return node.sql("postgres").split("(")[0].strip().upper() or type(node).__name__.upper()


def _is_dateadd(node: exp.Expression) -> bool:
    return isinstance(node, exp.Anonymous) and str(node.name).upper() in ("DATEADD", "TIMESTAMPADD")


def _call_args(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.Anonymous):
        return list(node.expressions)
    return [v for k, v in node.args.items() if isinstance(v, exp.Expression)]


# Units of DATEADD / TIMESTAMPADD / DATE_TRUNC, as an Interval of one unit.
_UNITS = {
    "microsecond": Interval(micros=1), "millisecond": Interval(micros=1000), "second": Interval(micros=_US),
    "minute": Interval(micros=60 * _US), "hour": Interval(micros=3600 * _US), "day": Interval(days=1),
    "week": Interval(days=7), "month": Interval(months=1), "quarter": Interval(months=3),
    "year": Interval(months=12), "decade": Interval(months=120), "century": Interval(months=1200),
    "millennium": Interval(months=12000),
}
_UNIT_ALIASES = {
    "us": "microsecond", "usec": "microsecond", "usecs": "microsecond", "mcs": "microsecond",
    "ms": "millisecond", "msec": "millisecond", "msecs": "millisecond",
    "s": "second", "sec": "second", "secs": "second", "ss": "second",
    "m": "minute", "mi": "minute", "min": "minute", "mins": "minute", "n": "minute",
    "h": "hour", "hh": "hour", "hr": "hour", "hrs": "hour",
    "d": "day", "dd": "day", "dy": "day", "dw": "day", "dayofyear": "day", "y": "year", "yy": "year", "yyyy": "year",
    "w": "week", "wk": "week", "ww": "week", "mm": "month", "mon": "month", "mons": "month",
    "q": "quarter", "qq": "quarter", "qtr": "quarter", "yr": "year", "yrs": "year",
    "frac_second": "microsecond",
}


def _unit(text: str) -> str | None:
    u = text.strip().strip("'\"").lower()
    if u.startswith("sql_tsi_"):
        u = u[len("sql_tsi_"):]
    u = _UNIT_ALIASES.get(u, u)
    if u not in _UNITS and u.endswith("s"):
        u = u[:-1]
    return u if u in _UNITS else None


def _unit_name(node: exp.Expression) -> str | None:
    node = _strip(node)
    if isinstance(node, exp.Column) and node.args.get("table") is None:
        return _unit(node.name)
    if isinstance(node, (exp.Var, exp.Identifier)) or (isinstance(node, exp.Literal) and node.is_string):
        return _unit(str(node.this if isinstance(node, exp.Literal) else node.name))
    return None


_INTERVAL_PART = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*([a-z_]+)?\s*,?", re.I)
_CLOCK = re.compile(r"\s*([+-])?(\d+):(\d+)(?::(\d+(?:\.\d*)?))?\s*", re.I)


def parse_interval(text: str) -> Interval:
    """PostgreSQL interval text ('7 days', '1 day 02:00:00', '-3 months', '1 year 2 mons', '2 hours ago')."""
    body = text.strip().lower().lstrip("@").strip()
    ago = body.endswith(" ago")
    body = body.removesuffix(" ago")
    total, pos = Interval(), 0
    while pos < len(body):
        m = _CLOCK.match(body, pos)
        if m and m.end() > pos:
            seconds = int(m[2]) * 3600 + int(m[3]) * 60 + decimal.Decimal(m[4] or 0)
            micros = int(seconds * _US)
            total = total + Interval(micros=-micros if m[1] == "-" else micros)
            pos = m.end()
            continue
        m = _INTERVAL_PART.match(body, pos)
        if not m or m.end() == pos:
            raise QueryError(f"invalid input syntax for type interval: \"{text}\"", "22007")
        unit = _unit(m[2] or "second")
        if unit is None:
            raise QueryError(f"invalid input syntax for type interval: \"{text}\" (unit {m[2]!r})", "22007")
        amount = decimal.Decimal(m[1])
        one = _UNITS[unit]
        if amount == int(amount):
            total = total + one.scaled(int(amount))
        elif one.months or one.days:
            # PostgreSQL spreads fractions of months over 30 days and of days over 24 hours.
            months = amount * one.months
            whole_months = int(months)
            days = (months - whole_months) * 30 + amount * one.days
            whole_days = int(days)
            total = total + Interval(whole_months, whole_days, int((days - whole_days) * 86400 * _US))
        else:
            total = total + Interval(micros=int(amount * one.micros))
        pos = m.end()
    return -total if ago else total


def add_interval(value: dt.datetime | dt.date, interval: Interval) -> dt.datetime:
    """timestamp + interval as PostgreSQL computes it: months first (clamped to the month's
    last day), then days, then the time part. A date is taken as its midnight."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if interval.months:
        month0 = value.year * 12 + value.month - 1 + interval.months
        year, month = divmod(month0, 12)
        month += 1
        if not 1 <= year <= 9999:
            raise QueryError("timestamp out of range", "22008")
        value = value.replace(year=year, month=month, day=min(value.day, calendar.monthrange(year, month)[1]))
    try:
        return value + dt.timedelta(days=interval.days, microseconds=interval.micros)
    except OverflowError:
        raise QueryError("timestamp out of range", "22008") from None


def truncate(value: dt.datetime | dt.date, unit: str) -> dt.datetime:
    """date_trunc(unit, value) (PostgreSQL; weeks start on Monday)."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    u = _unit(unit)
    if u is None:
        raise QueryError(f"unit \"{unit}\" not recognized for date_trunc", "22023")
    if u == "microsecond":
        return value
    if u == "millisecond":
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    if u == "second":
        return value.replace(microsecond=0)
    if u == "minute":
        return value.replace(second=0, microsecond=0)
    if u == "hour":
        return value.replace(minute=0, second=0, microsecond=0)
    day = value.replace(hour=0, minute=0, second=0, microsecond=0)
    if u == "day":
        return day
    if u == "week":
        return day - dt.timedelta(days=day.weekday())
    if u == "month":
        return day.replace(day=1)
    if u == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    if u == "year":
        return day.replace(month=1, day=1)
    if u == "decade":
        return day.replace(year=day.year - day.year % 10, month=1, day=1)
    if u == "century":
        return day.replace(year=(day.year - 1) // 100 * 100 + 1, month=1, day=1)
    return day.replace(year=(day.year - 1) // 1000 * 1000 + 1, month=1, day=1)


def cast_value(value: Any, to: exp.DataType) -> Any:
    """CAST(value AS to) of a folded value (a literal, a timestamp, a date ...)."""
    T = exp.DataType.Type
    t = to.this
    if value is None:
        return None
    try:
        if t in (T.TIMESTAMP, T.TIMESTAMPTZ, T.DATETIME, T.TIMESTAMPNTZ, T.TIMESTAMPLTZ):
            if isinstance(value, dt.datetime):
                return value
            if isinstance(value, dt.date):
                return dt.datetime.combine(value, dt.time())
            text = str(value).strip()
            return parse_timestamp(_pg_timestamp_text(text), "timestamp literal")
        if t == T.DATE:
            if isinstance(value, dt.datetime):
                return value.date()
            if isinstance(value, dt.date):
                return value
            text = str(value).strip()
            return parse_timestamp(_pg_timestamp_text(text), "date literal").date() if len(text) > 10 else dt.date.fromisoformat(text)
        if t == T.INTERVAL:
            return value if isinstance(value, Interval) else parse_interval(str(value))
        if t in (T.INT, T.BIGINT, T.SMALLINT, T.TINYINT):
            if isinstance(value, (float, decimal.Decimal)):
                return int(decimal.Decimal(value).to_integral_value(decimal.ROUND_HALF_EVEN if isinstance(value, float) else decimal.ROUND_HALF_UP))
            return int(str(value).strip())
        if t in (T.DOUBLE, T.FLOAT):
            return float(value)
        if t == T.DECIMAL:
            return decimal.Decimal(str(value).strip())
        if t in (T.TEXT, T.VARCHAR, T.CHAR, T.NCHAR, T.NVARCHAR):
            return value if isinstance(value, str) else _text_of(value)
        if t == T.BOOLEAN:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("t", "true", "1", "yes", "on", "y"):
                return True
            if text in ("f", "false", "0", "no", "off", "n"):
                return False
            raise ValueError(text)
    except QueryError:
        raise
    except (ValueError, decimal.InvalidOperation, OverflowError):
        raise QueryError(f"invalid input syntax for type {to.sql('postgres').lower()}: \"{value}\"", "22007") from None
    raise QueryError(f"a value cast to {to.sql('postgres')} cannot be mapped", UNSUPPORTED)


def _pg_timestamp_text(text: str) -> str:
    """PostgreSQL timestamp text that fromisoformat does not take: '+02' offsets, 'T'/'Z'."""
    m = re.fullmatch(r"(.*\d)\s*([+-]\d{2})$", text)
    return f"{m[1]}{m[2]}:00" if m and len(text) > 10 else text


def _text_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat(" ")
    return str(value)


def _number(text: str) -> int | decimal.Decimal | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return decimal.Decimal(text)
    except decimal.InvalidOperation:
        return float(text)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool)


def _is_time(v: Any) -> bool:
    return isinstance(v, (dt.datetime, dt.date))


class _Folder:
    def __init__(self, now):
        self._now = now if callable(now) else (lambda: now)

    def value(self, node: exp.Expression) -> Any:
        node = _strip(node)
        method = getattr(self, f"_{type(node).__name__.lower()}", None)
        if method is not None:
            return method(node)
        if isinstance(node, exp.Column):
            raise QueryError(
                f"{_text(node)!r} is a column, where a value is expected; compare a column with a constant", UNSUPPORTED
            )
        if isinstance(node, (exp.Parameter, exp.Placeholder)):
            raise QueryError(
                f"a parameter inside an expression ({_text(node)}) cannot be folded; pass the whole value as $n", UNSUPPORTED
            )
        if isinstance(node, exp.Func):
            self._refuse(node)
        raise QueryError(
            f"{_text(node)!r} is not a value; compare columns with literals, $n parameters or constant expressions",
            UNSUPPORTED,
        )

    # ---- literals -------------------------------------------------------------------

    def _literal(self, node: exp.Literal) -> Any:
        return node.this if node.is_string else _number(node.this)

    def _null(self, node) -> None:
        return None

    def _boolean(self, node: exp.Boolean) -> bool:
        return bool(node.this)

    def _neg(self, node: exp.Neg) -> Any:
        v = self.value(node.this)
        if v is None:
            return None
        if _is_number(v) or isinstance(v, Interval):
            return -v
        raise QueryError(f"cannot negate {_text(node.this)!r}", "42883")

    def _interval(self, node: exp.Interval) -> Interval:
        amount = self.value(node.this)
        unit = node.args.get("unit")
        text = str(amount)
        if unit is not None:
            u = _unit_name(unit)
            if u is None:
                raise QueryError(f"interval unit {unit.sql()!r} is not recognized", "22007")
            text = f"{amount} {u}"
        return parse_interval(text)

    def _cast(self, node: exp.Cast) -> Any:
        return cast_value(self.value(node.this), node.to)

    _trycast = _cast

    # ---- now ------------------------------------------------------------------------

    def _currenttimestamp(self, node) -> dt.datetime:
        precision = node.args.get("this")
        now = self._now()
        if precision is not None:
            digits = int(self.value(precision))
            q = 10 ** (6 - min(max(digits, 0), 6))
            now = now.replace(microsecond=(now.microsecond + q // 2) // q * q % _US) if q > 1 else now
        return now

    _localtimestamp = _currenttimestamp
    _currentdatetime = _currenttimestamp

    def _currentdate(self, node) -> dt.date:
        return self._now().date()

    def _attimezone(self, node: exp.AtTimeZone) -> Any:
        zone = self.value(node.args["zone"])
        if not isinstance(zone, str) or zone.strip().upper() not in ("UTC", "GMT", "ETC/UTC", "Z", "+00", "+00:00"):
            raise QueryError(f"AT TIME ZONE {zone!r} cannot be folded; times are UTC (AT TIME ZONE 'UTC')", UNSUPPORTED)
        return self.value(node.this)

    # ---- time functions -------------------------------------------------------------

    def _strtotime(self, node: exp.StrToTime) -> dt.datetime:
        text, fmt = self.value(node.this), self.value(node.args["format"])
        return _strptime(text, fmt, "TO_TIMESTAMP")

    def _strtodate(self, node: exp.StrToDate) -> dt.date:
        text, fmt = self.value(node.this), self.value(node.args["format"])
        return _strptime(text, fmt, "TO_DATE").date()

    def _unixtotime(self, node: exp.UnixToTime) -> dt.datetime:
        seconds = self.value(node.this)
        if not _is_number(seconds) or node.args.get("scale") is not None:
            raise QueryError(f"TO_TIMESTAMP takes epoch seconds here, got {_text(node.this)!r}", "22023")
        return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(decimal.Decimal(str(seconds)) * _US))

    def _timestamptrunc(self, node) -> dt.datetime:
        if node.args.get("zone") is not None:
            raise QueryError("date_trunc with a time zone cannot be folded; times are UTC", UNSUPPORTED)
        unit = node.args.get("unit")
        value = self.value(node.this)
        if value is None:
            return None
        if not _is_time(value):
            value = cast_value(value, exp.DataType.build("timestamp"))
        return truncate(value, unit.name if unit is not None else "")

    _datetrunc = _timestamptrunc

    def _extract(self, node: exp.Extract) -> Any:
        field = _unit(node.this.name) or node.this.name.lower()
        value = self.value(node.expression)
        if not _is_time(value):
            raise QueryError(f"EXTRACT from {_text(node.expression)!r} cannot be folded", UNSUPPORTED)
        if not isinstance(value, dt.datetime):
            value = dt.datetime.combine(value, dt.time())
        parts = {"year": value.year, "month": value.month, "day": value.day, "hour": value.hour,
                 "minute": value.minute, "quarter": (value.month - 1) // 3 + 1,
                 "week": value.isocalendar()[1], "dow": (value.weekday() + 1) % 7, "isodow": value.weekday() + 1,
                 "doy": value.timetuple().tm_yday}
        if field == "epoch":
            delta = value - dt.datetime(1970, 1, 1)
            return decimal.Decimal(delta.days * 86400 + delta.seconds) + decimal.Decimal(delta.microseconds) / _US
        if field == "second":
            return decimal.Decimal(value.second) + decimal.Decimal(value.microsecond) / _US
        if field in parts:
            return parts[field]
        raise QueryError(f"EXTRACT({node.this.name} FROM ...) cannot be folded", UNSUPPORTED)

    def _dateadd(self, node: exp.Expression) -> dt.datetime:
        """DATE_ADD in its forms: (ts, INTERVAL ...) and ('unit', n, ts) (parsed into odd slots)."""
        args = _call_args(node)
        return self._add_parts(_function_name(node), args, 1)

    def _datesub(self, node: exp.Expression) -> dt.datetime:
        return self._add_parts(_function_name(node), _call_args(node), -1)

    _timestampadd = _dateadd
    _timestampsub = _datesub
    _datetimeadd = _dateadd
    _datetimesub = _datesub

    def _anonymous(self, node: exp.Anonymous) -> Any:
        name = str(node.name).upper()
        if name in ("DATEADD", "TIMESTAMPADD"):
            return self._add_parts(name, list(node.expressions), 1)
        if name in ("NOW", "TRANSACTION_TIMESTAMP", "STATEMENT_TIMESTAMP") and not node.expressions:
            return self._now()
        if name == "MAKE_DATE" and len(node.expressions) == 3:
            y, m, d = (self.value(a) for a in node.expressions)
            try:
                return dt.date(int(y), int(m), int(d))
            except (ValueError, TypeError):
                raise QueryError(f"date field value out of range: {y}-{m}-{d}", "22008") from None
        if name == "TIMEZONE" and len(node.expressions) == 2:
            return self._attimezone(exp.AtTimeZone(this=node.expressions[1], zone=node.expressions[0]))
        return self._refuse(node)

    def _refuse(self, node: exp.Expression):
        raise QueryError(
            f"function {_function_name(node)}() cannot be evaluated as a constant value; values may use "
            "TO_TIMESTAMP, TO_DATE, CAST, NOW(), CURRENT_DATE, CURRENT_TIMESTAMP, LOCALTIMESTAMP, INTERVAL "
            "arithmetic, DATE_TRUNC, DATEADD / DATE_ADD / TIMESTAMPADD and arithmetic on numbers", UNSUPPORTED,
        )

    def _add_parts(self, name: str, args: list[exp.Expression], sign: int) -> dt.datetime:
        """The parts of a date-add call in any order: a unit, an amount (or an interval) and a time."""
        unit = None
        values = []
        for a in args:
            u = _unit_name(a) if unit is None and isinstance(_strip(a), (exp.Column, exp.Var, exp.Identifier, exp.Literal)) else None
            if u is not None and not (isinstance(_strip(a), exp.Literal) and _is_time_text(_strip(a))):
                unit = u
                continue
            values.append(self.value(a))
        times = [v for v in values if _is_time(v) or (isinstance(v, str) and _is_time_text(exp.Literal.string(v)))]
        amounts = [v for v in values if _is_number(v) or isinstance(v, Interval)]
        if len(times) != 1 or len(amounts) != 1 or (unit is None) != isinstance(amounts[0], Interval):
            raise QueryError(
                f"{name}(...) takes a unit, a number and a timestamp (e.g. {name}(day, -7, CURRENT_DATE)) or a "
                "timestamp and an interval", UNSUPPORTED,
            )
        when = times[0] if _is_time(times[0]) else cast_value(times[0], exp.DataType.build("timestamp"))
        step = amounts[0] if unit is None else _UNITS[unit].scaled(amounts[0])
        result = add_interval(when, step if sign > 0 else -step)
        return result

    # ---- arithmetic -----------------------------------------------------------------

    def _add(self, node: exp.Add) -> Any:
        return _arith("+", self.value(node.this), self.value(node.expression), node)

    def _sub(self, node: exp.Sub) -> Any:
        return _arith("-", self.value(node.this), self.value(node.expression), node)

    def _mul(self, node: exp.Mul) -> Any:
        return _arith("*", self.value(node.this), self.value(node.expression), node)

    def _div(self, node: exp.Div) -> Any:
        return _arith("/", self.value(node.this), self.value(node.expression), node)

    def _mod(self, node: exp.Mod) -> Any:
        return _arith("%", self.value(node.this), self.value(node.expression), node)

    def _dpipe(self, node: exp.DPipe) -> Any:
        a, b = self.value(node.this), self.value(node.expression)
        return None if a is None or b is None else _text_of(a) + _text_of(b)


def _is_time_text(node: exp.Expression) -> bool:
    return isinstance(node, exp.Literal) and node.is_string and bool(re.match(r"\s*\d{4}-\d{2}-\d{2}", node.this))


def _strptime(text: Any, fmt: Any, function: str) -> dt.datetime:
    if not isinstance(text, str) or not isinstance(fmt, str):
        raise QueryError(f"{function} takes a text and a format, e.g. {function}('2026-11-01', 'YYYY-MM-DD')", "42883")
    try:
        value = dt.datetime.strptime(text.strip(), fmt)
    except ValueError as e:
        raise QueryError(f"{function}({text!r}, ...): {e}", "22007") from None
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo is not None else value


def _arith(op: str, a: Any, b: Any, node: exp.Expression) -> Any:
    if a is None or b is None:
        return None
    if isinstance(a, str) and _is_time(b) or isinstance(a, str) and isinstance(b, Interval):
        a = cast_value(a, exp.DataType.build("timestamp"))  # '2026-01-01' + INTERVAL: an unknown-typed literal
    if isinstance(b, str) and (_is_time(a) or isinstance(a, Interval)):
        b = parse_interval(b) if _is_time(a) else cast_value(b, exp.DataType.build("timestamp"))
    if _is_number(a) and _is_number(b):
        return _numbers(op, a, b)
    if op in "+-" and _is_time(a) and isinstance(b, Interval):
        return add_interval(a, b if op == "+" else -b)
    if op == "+" and isinstance(a, Interval) and _is_time(b):
        return add_interval(b, a)
    if op in "+-" and isinstance(a, Interval) and isinstance(b, Interval):
        return a + (b if op == "+" else -b)
    if op == "*" and isinstance(a, Interval) and _is_number(b):
        return a.scaled(b)
    if op == "*" and _is_number(a) and isinstance(b, Interval):
        return b.scaled(a)
    if op in "+-" and isinstance(a, dt.date) and not isinstance(a, dt.datetime) and isinstance(b, int):
        return a + dt.timedelta(days=b if op == "+" else -b)  # date ± integer days is a date
    if op == "+" and isinstance(b, dt.date) and not isinstance(b, dt.datetime) and isinstance(a, int):
        return b + dt.timedelta(days=a)
    raise QueryError(f"{_text(node)!r}: operator {op} cannot be folded for these values", "42883")


def _numbers(op: str, a, b):
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
    elif isinstance(a, decimal.Decimal) or isinstance(b, decimal.Decimal):
        a, b = decimal.Decimal(a), decimal.Decimal(b)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise QueryError("division by zero", "22012")
    if isinstance(a, int) and isinstance(b, int):  # integer division truncates toward zero
        q = abs(a) // abs(b)
        q = q if (a >= 0) == (b >= 0) else -q
        return q if op == "/" else a - q * b
    if op == "/":
        return a / b
    return a % b if isinstance(a, float) else decimal.Decimal(a) % decimal.Decimal(b)
