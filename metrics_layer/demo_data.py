"""Deterministic synthetic demo data: lead conversions and card fraud, in DuckDB or PostgreSQL.

Six tables, all timestamps naive ``TIMESTAMP`` in UTC, spread over the 30 days before ``end``
(no row is at or after ``end``):

- ``leads(id, created_at, utm_source)``: daily and hourly seasonality, five sources with skewed
  frequencies and ~2% NULL, and a 5-hour outage with no leads at all about 10 days before ``end``.
- ``prediction_events(event_id, lead_id, predicted_at, model_version, label, score)``: ~90% of
  leads predicted seconds to minutes after creation, ~8% of those predicted a second time
  (strictly later, maybe with another label and model version); 'v2' replaces 'v1' halfway.
- ``conversions(id, lead_id, converted_at, revenue)``: ~20% of leads, minutes to ~5 days after
  creation (so many arrive late), ~3% with a second, strictly later duplicate row.
- ``transactions(id, created_at, merchant_category, amount, merchant_id)``: as many as leads, six
  categories; ``_MERCHANTS_PER_CATEGORY`` merchants in each (ids ``100 * category + 1..``), a few
  much busier than the rest.
- ``fraud_scores(id, transaction_id, scored_at, model_version, score, is_fraud)``: ~97% of
  transactions scored, ~5% rescored later; 'fraud-v2' canaries from day 10 and takes over on day 20.
- ``chargebacks(id, transaction_id, charged_back_at, amount)``: ~2% of transactions (mostly the
  truly fraudulent ones), 1-30 days later, ~3% with a strictly later duplicate.

Everything is computed in DuckDB SQL from a counter-based hash (murmur3's 32-bit finaliser, two
rounds, keyed by row key, stream name and seed) using only integer arithmetic and exactly
rounded float operations, so the same ``(leads, seed, end)`` gives identical contents on every run,
thread count and machine. Within each dedupe key the event timestamps are strictly distinct.
PostgreSQL gets the very same rows: they are built in an in-memory DuckDB and streamed with COPY.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
import time
from typing import Callable

Progress = Callable[[str], None] | None

PERIOD_DAYS = 30
_T = PERIOD_DAYS * 86400  # length of the period, in seconds
_M32 = 0xFFFFFFFF

# Column name, DuckDB type, PostgreSQL type; tables in creation order.
TABLES: dict[str, list[tuple[str, str, str]]] = {
    "leads": [
        ("id", "BIGINT", "BIGINT"),
        ("created_at", "TIMESTAMP", "TIMESTAMP"),
        ("utm_source", "VARCHAR", "VARCHAR"),
    ],
    "prediction_events": [
        ("event_id", "BIGINT", "BIGINT"),
        ("lead_id", "BIGINT", "BIGINT"),
        ("predicted_at", "TIMESTAMP", "TIMESTAMP"),
        ("model_version", "VARCHAR", "VARCHAR"),
        ("label", "INTEGER", "INTEGER"),
        ("score", "DOUBLE", "DOUBLE PRECISION"),
    ],
    "conversions": [
        ("id", "BIGINT", "BIGINT"),
        ("lead_id", "BIGINT", "BIGINT"),
        ("converted_at", "TIMESTAMP", "TIMESTAMP"),
        ("revenue", "DECIMAL(12,2)", "NUMERIC(12,2)"),
    ],
    "transactions": [
        ("id", "BIGINT", "BIGINT"),
        ("created_at", "TIMESTAMP", "TIMESTAMP"),
        ("merchant_category", "VARCHAR", "VARCHAR"),
        ("amount", "DECIMAL(12,2)", "NUMERIC(12,2)"),
        ("merchant_id", "BIGINT", "BIGINT"),
    ],
    "fraud_scores": [
        ("id", "BIGINT", "BIGINT"),
        ("transaction_id", "BIGINT", "BIGINT"),
        ("scored_at", "TIMESTAMP", "TIMESTAMP"),
        ("model_version", "VARCHAR", "VARCHAR"),
        ("score", "DOUBLE", "DOUBLE PRECISION"),
        ("is_fraud", "INTEGER", "INTEGER"),
    ],
    "chargebacks": [
        ("id", "BIGINT", "BIGINT"),
        ("transaction_id", "BIGINT", "BIGINT"),
        ("charged_back_at", "TIMESTAMP", "TIMESTAMP"),
        ("amount", "DECIMAL(12,2)", "NUMERIC(12,2)"),
    ],
}

# PostgreSQL indexes on the join keys (and the time columns that series slice by).
_PG_INDEXES = [
    ("leads", "id"),
    ("leads", "created_at"),
    ("prediction_events", "lead_id"),
    ("conversions", "lead_id"),
    ("transactions", "id"),
    ("transactions", "created_at"),
    ("transactions", "merchant_id"),
    ("fraud_scores", "transaction_id"),
    ("chargebacks", "transaction_id"),
]

# Seasonality: relative weight of each hour of the day (UTC) and of each weekday (Monday first).
_LEAD_HOUR_W = [3, 2, 2, 1, 1, 2, 4, 7, 10, 12, 14, 15, 15, 14, 13, 12, 12, 13, 14, 15, 13, 10, 7, 5]
_LEAD_DOW_W = [10, 11, 11, 10, 9, 6, 5]
_TX_HOUR_W = [4, 3, 2, 2, 2, 3, 5, 8, 11, 13, 14, 16, 18, 16, 14, 13, 14, 16, 18, 19, 17, 13, 9, 6]
_TX_DOW_W = [9, 9, 9, 10, 12, 14, 12]

# utm_source: (value, share of the non-NULL leads, base conversion propensity).
_SOURCES = [
    ("google", 0.40, 0.20),
    ("facebook", 0.25, 0.13),
    ("newsletter", 0.15, 0.32),
    ("partner", 0.10, 0.26),
    ("direct", 0.10, 0.22),
]
_NULL_SOURCE_SHARE = 0.02
_NULL_SOURCE_PROPENSITY = 0.12

# P(label = 1) by model version and true outcome: (if the lead will convert, if it will not).
_LABEL_P = {"v1": (0.62, 0.20), "v2": (0.72, 0.12)}

# merchant_category: (value, share, probability that a transaction is truly fraudulent).
_CATEGORIES = [
    ("grocery", 0.30, 0.006),
    ("restaurants", 0.22, 0.007),
    ("fashion", 0.15, 0.018),
    ("electronics", 0.13, 0.042),
    ("travel", 0.10, 0.036),
    ("gaming", 0.10, 0.054),
]
# Merchants per category: merchant_id = 100 * (category's position) + 1 + a skewed draw below this.
_MERCHANTS_PER_CATEGORY = 40
# P(is_fraud = 1) by fraud model version: (if truly fraudulent, if legitimate).
_FLAG_P = {"fraud-v1": (0.60, 0.010), "fraud-v2": (0.80, 0.006)}


# --------------------------------------------------------------------------------------------
# Counter-based hashing in SQL
# --------------------------------------------------------------------------------------------

def _fmix32(h: int) -> int:
    """murmur3's 32-bit finaliser (a bijection on 32-bit integers)."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def _stream_constants(seed: int, name: str) -> tuple[int, int]:
    """Two 32-bit constants for one named random stream under one seed."""
    digest = hashlib.sha256(f"metrics-layer-demo:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:8], "little")


def stream_hash(seed: int, name: str, key: int) -> int:
    """The 32-bit hash that the SQL of `_hashed` computes for (seed, name, key); for tests."""
    c, d = _stream_constants(seed, name)
    k = key & 0xFFFFFFFFFFFFFFFF
    h = _fmix32(((k & _M32) ^ (k >> 32)) ^ c)
    return _fmix32((h + d) & _M32)


def _hashed(src: str, key: str, names: list[str], seed: int) -> str:
    """SQL selecting every column of `src` plus `h_<name>`, a 32-bit UBIGINT hash per name.

    Each step references the previous hash column at most twice, in its own nested SELECT,
    so the expression never blows up however many rounds are applied.
    """
    m = f"{_M32}::UBIGINT"
    consts = {n: _stream_constants(seed, n) for n in names}
    init = ", ".join(
        f"xor(xor(_k & {m}, _k >> 32), {consts[n][0]}::UBIGINT) AS h_{n}" for n in names
    )
    sql = f"SELECT *, {init} FROM (SELECT *, CAST({key} AS UBIGINT) AS _k FROM ({src}) _s0) _s1"

    def step(exprs: dict[str, str]) -> None:
        nonlocal sql
        repl = ", ".join(f"{exprs[n]} AS h_{n}" for n in names)
        sql = f"SELECT * REPLACE ({repl}) FROM ({sql}) _s"

    def xorshift(inner: str, shift: int) -> str:
        return f"xor({inner}, ({inner}) >> {shift})"

    for rnd in range(2):
        if rnd == 0:
            step({n: xorshift(f"h_{n}", 16) for n in names})
        else:
            step({n: xorshift(f"((h_{n} + {consts[n][1]}::UBIGINT) & {m})", 16) for n in names})
        step({n: xorshift(f"((h_{n} * 2246822507::UBIGINT) & {m})", 13) for n in names})
        step({n: xorshift(f"((h_{n} * 3266489909::UBIGINT) & {m})", 16) for n in names})
    return f"SELECT * EXCLUDE (_k) FROM ({sql}) _s"


def _u(name: str) -> str:
    """Uniform DOUBLE in [0, 1) from hash column h_<name> (exact: h * 2**-32)."""
    return f"(h_{name} * {2.0 ** -32!r})"


def _lt(name: str, p: float) -> str:
    """A boolean that is true with probability p (integer comparison, exact)."""
    return f"(h_{name} < {int(round(p * 2 ** 32))})"


def _uint(name: str, n: int) -> str:
    """Uniform BIGINT in [0, n), for 0 < n < 2**32 (integer arithmetic, exact)."""
    return f"CAST((h_{name} * {n}::UBIGINT) >> 32 AS BIGINT)"


def _skewed(name: str, n: int, power: int) -> str:
    """BIGINT in [0, n) distributed as floor(n * u**power): small values much more likely."""
    u = _u(name)
    return f"CAST(floor({n} * {' * '.join([u] * power)}) AS BIGINT)"


def _pick(name: str, options: list[tuple[str, float]]) -> str:
    """A CASE picking one SQL expression per option, with the given (relative) shares."""
    total = sum(w for _, w in options)
    parts, cum = [], 0.0
    for expr, w in options[:-1]:
        cum += w / total
        parts.append(f"WHEN {_lt(name, cum)} THEN {expr}")
    return f"CASE {' '.join(parts)} ELSE {options[-1][0]} END"


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------

def _default_end(end: dt.datetime | dt.date | None) -> dt.datetime:
    if end is None:
        now = dt.datetime.now(dt.timezone.utc)
        return dt.datetime(now.year, now.month, now.day)
    if not isinstance(end, dt.datetime):
        return dt.datetime(end.year, end.month, end.day)
    if end.tzinfo is not None:
        end = end.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return end.replace(microsecond=0)


def outage_window(end: dt.datetime | dt.date | None = None) -> tuple[dt.datetime, dt.datetime]:
    """The [start, end) of the 5 hours without leads: 09:00-14:00 UTC on the day 10 days before end."""
    end = _default_end(end)
    day = (end - dt.timedelta(days=10)).replace(hour=0, minute=0, second=0)
    return day + dt.timedelta(hours=9), day + dt.timedelta(hours=14)


def _cells_sql(start: dt.datetime, end: dt.datetime, hour_w: list[int], dow_w: list[int],
               gap: tuple[dt.datetime, dt.datetime] | None) -> tuple[str, int]:
    """A VALUES list of clock-hour cells (start second, length, cumulative weight) and the total."""
    rows, cum = [], 0
    hour = start.replace(minute=0, second=0)
    while hour < end:
        lo, hi = max(hour, start), min(hour + dt.timedelta(hours=1), end)
        length = int((hi - lo).total_seconds())
        in_gap = gap is not None and gap[0] <= hour < gap[1]
        weight = 0 if in_gap else hour_w[hour.hour] * dow_w[hour.weekday()] * length
        if weight > 0:
            rows.append(f"({int((lo - start).total_seconds())}, {length}, {cum})")
            cum += weight
        hour += dt.timedelta(hours=1)
    return "VALUES " + ", ".join(rows), cum


def _ts(seconds_col: str, start_us: int) -> str:
    """TIMESTAMP from whole seconds since the period start."""
    return f"make_timestamp({start_us} + {seconds_col} * 1000000)"


def _decimal(cents_expr: str) -> str:
    return f"CAST(CAST({cents_expr} AS DECIMAL(14,0)) * 0.01::DECIMAL(3,2) AS DECIMAL(12,2))"


def _create_final(con, schema: str, table: str, select_sql: str, order_by: str) -> None:
    cols = TABLES[table]
    con.execute(f'DROP TABLE IF EXISTS "{schema}"."{table}"')
    ddl = ", ".join(f"{c} {t}" for c, t, _ in cols)
    con.execute(f'CREATE TABLE "{schema}"."{table}" ({ddl})')
    names = ", ".join(c for c, _, _ in cols)
    con.execute(f'INSERT INTO "{schema}"."{table}" ({names}) SELECT {names} FROM ({select_sql}) _f ORDER BY {order_by}')


def _build(con, schema: str, leads: int, seed: int, end: dt.datetime, progress: Progress) -> dict[str, int]:
    """Create the six tables in `schema` of the DuckDB connection `con`; return their row counts."""
    if leads < 1:
        raise ValueError("leads must be at least 1")
    start = end - dt.timedelta(days=PERIOD_DAYS)
    start_us = int((start - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    half = _T // 2
    counts: dict[str, int] = {}

    def done(table: str, t0: float) -> None:
        n = con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0]
        counts[table] = n
        if progress:
            progress(f"demo: {table} {n:,} rows ... {time.perf_counter() - t0:.1f}s")

    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')

    # ---------------- leads
    t0 = time.perf_counter()
    cells, total_w = _cells_sql(start, end, _LEAD_HOUR_W, _LEAD_DOW_W, outage_window(end))
    con.execute(f"CREATE OR REPLACE TEMP TABLE _demo_lcells AS SELECT col0 AS cell_start, col1 AS len, col2 AS cum FROM ({cells})")
    src_opts = [(_q(v), share * (1 - _NULL_SOURCE_SHARE)) for v, share, _ in _SOURCES]
    src_opts.insert(0, ("NULL", _NULL_SOURCE_SHARE))
    draws = _hashed(f"SELECT range AS k FROM range(1, {leads + 1})", "k", ["cell", "off", "src"], seed)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _demo_lead AS
        SELECT row_number() OVER (ORDER BY s, k) AS id, s, utm_source FROM (
            SELECT d.k, c.cell_start + CAST((d.h_off * c.len::UBIGINT) >> 32 AS BIGINT) AS s,
                   d.utm_source
            FROM (SELECT k, h_off, {_uint('cell', total_w)} AS r, CAST({_pick('src', src_opts)} AS VARCHAR) AS utm_source
                  FROM ({draws}) _d) d
            ASOF JOIN _demo_lcells c ON d.r >= c.cum
        ) _x
    """)
    _create_final(con, schema, "leads",
                  f"SELECT id, {_ts('s', start_us)} AS created_at, utm_source FROM _demo_lead", "id")
    done("leads", t0)

    # Hidden per-lead state and every draw that the lead's events need.
    t0 = time.perf_counter()
    base = "CASE utm_source " + " ".join(f"WHEN {_q(v)} THEN {p!r}" for v, _, p in _SOURCES) + f" ELSE {_NULL_SOURCE_PROPENSITY!r} END"
    lead_draws = _hashed("SELECT id, s, utm_source FROM _demo_lead", "id",
                         ["prop", "conv", "pred", "pdelay", "plabel", "pscore", "pdup", "pdelay2",
                          "plabel2", "pscore2", "cdelay", "rev", "cdup", "cdelay2"], seed)

    def label(t: str, u: str) -> str:
        def p(v: str) -> str:
            return f"CASE WHEN will_convert THEN {_LABEL_P[v][0]!r} ELSE {_LABEL_P[v][1]!r} END"
        return f"CASE WHEN {_u(u)} < (CASE WHEN {t} < {half} THEN {p('v1')} ELSE {p('v2')} END) THEN 1 ELSE 0 END"

    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _demo_lstate AS
        SELECT *,
               CASE WHEN {_lt('pdup', 0.08)} THEN t1 + 60 + {_skewed('pdelay2', 2 * 86400, 2)} END AS t2,
               c1 + 1 + {_uint('cdelay2', 86400)} AS c2
        FROM (
            SELECT *,
                   {_u('conv')} < ({base}) * (0.5 + {_u('prop')}) AS will_convert,
                   s + 1 + {_skewed('pdelay', 599, 2)} AS t1,
                   s + 120 + {_skewed('cdelay', 5 * 86400 - 120, 3)} AS c1
            FROM ({lead_draws}) _d
        ) _x
    """)

    def score(lab: str, u: str) -> str:
        return f"CAST({lab} * 500000 + {_uint(u, 500000)} AS DOUBLE) / CAST(1000000 AS DOUBLE)"

    events = f"""
        SELECT id AS lead_id, 1 AS seq, t1 AS t, {label('t1', 'plabel')} AS label, h_pscore AS h_sc
        FROM _demo_lstate WHERE {_lt('pred', 0.90)} AND t1 < {_T}
        UNION ALL
        SELECT id, 2, t2, {label('t2', 'plabel2')}, h_pscore2
        FROM _demo_lstate WHERE {_lt('pred', 0.90)} AND t2 IS NOT NULL AND t2 < {_T}
    """
    _create_final(con, schema, "prediction_events", f"""
        SELECT row_number() OVER (ORDER BY t, lead_id, seq) AS event_id, lead_id,
               {_ts('t', start_us)} AS predicted_at,
               CASE WHEN t < {half} THEN 'v1' ELSE 'v2' END AS model_version,
               label, {score('label', 'sc')} AS score
        FROM ({events}) _e""", "event_id")
    done("prediction_events", t0)

    t0 = time.perf_counter()
    conv = f"""
        SELECT id AS lead_id, 1 AS seq, c1 AS t, h_rev FROM _demo_lstate WHERE will_convert AND c1 < {_T}
        UNION ALL
        SELECT id, 2, c2, h_rev FROM _demo_lstate WHERE will_convert AND {_lt('cdup', 0.03)} AND c2 < {_T}
    """
    _create_final(con, schema, "conversions", f"""
        SELECT row_number() OVER (ORDER BY t, lead_id, seq) AS id, lead_id,
               {_ts('t', start_us)} AS converted_at,
               {_decimal('1000 + ' + _skewed('rev', 99001, 3))} AS revenue
        FROM ({conv}) _c""", "id")
    done("conversions", t0)

    # ---------------- transactions
    t0 = time.perf_counter()
    cells, total_w = _cells_sql(start, end, _TX_HOUR_W, _TX_DOW_W, None)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _demo_tcells AS SELECT col0 AS cell_start, col1 AS len, col2 AS cum FROM ({cells})")
    cat_opts = [(_q(v), share) for v, share, _ in _CATEGORIES]
    draws = _hashed(f"SELECT range AS k FROM range(1, {leads + 1})", "k", ["cell", "off", "cat"], seed + 1_000_003)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _demo_tx AS
        SELECT row_number() OVER (ORDER BY s, k) AS id, s, merchant_category FROM (
            SELECT d.k, c.cell_start + CAST((d.h_off * c.len::UBIGINT) >> 32 AS BIGINT) AS s, d.merchant_category
            FROM (SELECT k, h_off, {_uint('cell', total_w)} AS r, CAST({_pick('cat', cat_opts)} AS VARCHAR) AS merchant_category
                  FROM ({draws}) _d) d
            ASOF JOIN _demo_tcells c ON d.r >= c.cum
        ) _x
    """)
    fraud_p = "CASE merchant_category " + " ".join(f"WHEN {_q(v)} THEN {p!r}" for v, _, p in _CATEGORIES) + " END"
    tx_draws = _hashed("SELECT id, s, merchant_category FROM _demo_tx", "id",
                       ["fraud", "amt", "scored", "sdelay", "canary", "flag", "fscore", "sdup", "sdelay2",
                        "canary2", "flag2", "fscore2", "cb", "cbdelay", "cbdup", "cbdelay2", "merchant"], seed + 1_000_003)
    # Its own hash stream: the merchant draw leaves every other column of the demo unchanged.
    category_index = "CASE merchant_category " + " ".join(f"WHEN {_q(v)} THEN {i}" for i, (v, _, _) in enumerate(_CATEGORIES)) + " END"
    merchant = f"100 * ({category_index}) + 1 + {_skewed('merchant', _MERCHANTS_PER_CATEGORY, 2)}"
    u_amt = _u("amt")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _demo_tstate AS
        SELECT *,
               CASE WHEN {_lt('sdup', 0.05)} THEN f1 + 60 + {_uint('sdelay2', 3 * 86400)} END AS f2,
               b1 + 3600 + {_uint('cbdelay2', 5 * 86400)} AS b2
        FROM (
            SELECT *,
                   {_u('fraud')} < ({fraud_p}) AS true_fraud,
                   100 + CAST(floor(199900 * CASE
                       WHEN {_u('fraud')} < ({fraud_p}) THEN {u_amt} * {u_amt}
                       WHEN merchant_category IN ('electronics', 'travel') THEN {u_amt} * {u_amt} * {u_amt}
                       ELSE {u_amt} * {u_amt} * {u_amt} * {u_amt} * {u_amt} END) AS BIGINT) AS cents,
                   s + 1 + {_uint('sdelay', 30)} AS f1,
                   s + 86400 + {_skewed('cbdelay', 29 * 86400, 2)} AS b1
            FROM ({tx_draws}) _d
        ) _x
    """)
    _create_final(con, schema, "transactions", f"""
        SELECT id, {_ts('s', start_us)} AS created_at, merchant_category, {_decimal('cents')} AS amount,
               {merchant} AS merchant_id
        FROM _demo_tstate""", "id")
    done("transactions", t0)

    t0 = time.perf_counter()

    def version(t: str, u: str) -> str:
        return (f"CASE WHEN {t} < {10 * 86400} THEN 'fraud-v1' WHEN {t} < {20 * 86400} "
                f"THEN CASE WHEN {_lt(u, 0.2)} THEN 'fraud-v2' ELSE 'fraud-v1' END ELSE 'fraud-v2' END")

    def flag(ver: str, u: str) -> str:
        def p(v: str) -> str:
            return f"CASE WHEN true_fraud THEN {_FLAG_P[v][0]!r} ELSE {_FLAG_P[v][1]!r} END"
        return f"CASE WHEN {_u(u)} < (CASE WHEN {ver} = 'fraud-v1' THEN {p('fraud-v1')} ELSE {p('fraud-v2')} END) THEN 1 ELSE 0 END"

    scores = f"""
        SELECT transaction_id, seq, t, model_version, {flag('model_version', 'fl')} AS is_fraud, h_fs, true_fraud FROM (
            SELECT id AS transaction_id, 1 AS seq, f1 AS t, {version('f1', 'canary')} AS model_version,
                   h_flag AS h_fl, h_fscore AS h_fs, true_fraud
            FROM _demo_tstate WHERE {_lt('scored', 0.97)} AND f1 < {_T}
            UNION ALL
            SELECT id, 2, f2, {version('f2', 'canary2')}, h_flag2, h_fscore2, true_fraud
            FROM _demo_tstate WHERE {_lt('scored', 0.97)} AND f2 IS NOT NULL AND f2 < {_T}
        ) _v
    """
    fscore = (f"CAST(CASE WHEN is_fraud = 1 THEN 500000 + {_uint('fs', 500000)} "
              f"ELSE {_skewed('fs', 500000, 2)} END AS DOUBLE) / CAST(1000000 AS DOUBLE)")
    _create_final(con, schema, "fraud_scores", f"""
        SELECT row_number() OVER (ORDER BY t, transaction_id, seq) AS id, transaction_id,
               {_ts('t', start_us)} AS scored_at, model_version, {fscore} AS score, is_fraud
        FROM ({scores}) _s""", "id")
    done("fraud_scores", t0)

    t0 = time.perf_counter()
    cbs = f"""
        SELECT id AS transaction_id, 1 AS seq, b1 AS t, cents FROM _demo_tstate
        WHERE (CASE WHEN true_fraud THEN {_lt('cb', 0.80)} ELSE {_lt('cb', 0.015)} END) AND b1 < {_T}
        UNION ALL
        SELECT id, 2, b2, cents FROM _demo_tstate
        WHERE (CASE WHEN true_fraud THEN {_lt('cb', 0.80)} ELSE {_lt('cb', 0.015)} END)
          AND {_lt('cbdup', 0.03)} AND b2 < {_T}
    """
    _create_final(con, schema, "chargebacks", f"""
        SELECT row_number() OVER (ORDER BY t, transaction_id, seq) AS id, transaction_id,
               {_ts('t', start_us)} AS charged_back_at, {_decimal('cents')} AS amount
        FROM ({cbs}) _b""", "id")
    done("chargebacks", t0)

    for tmp in ("_demo_lcells", "_demo_lead", "_demo_lstate", "_demo_tcells", "_demo_tx", "_demo_tstate"):
        con.execute(f"DROP TABLE IF EXISTS {tmp}")
    return counts


def generate_duckdb(path: str, leads: int = 100_000, seed: int = 42, end: dt.datetime | None = None,
                    progress: Progress = print, schema: str = "main") -> None:
    """(Re)create the six demo tables in `schema` of the DuckDB database file at `path`."""
    import duckdb

    end = _default_end(end)
    t0 = time.perf_counter()
    con = duckdb.connect(path)
    try:
        _build(con, schema, leads, seed, end, progress)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    if progress:
        progress(f"demo: duckdb {path} done in {time.perf_counter() - t0:.1f}s")


def generate_postgres(url: str, leads: int = 100_000, seed: int = 42, end: dt.datetime | None = None,
                      progress: Progress = print, schema: str = "public") -> None:
    """(Re)create the six demo tables in `schema` of the PostgreSQL database at `url`.

    The rows are built in an in-memory DuckDB (so they are identical to `generate_duckdb`'s) and
    streamed with COPY, in one transaction; then indexes on the join keys, and ANALYZE.
    """
    import duckdb
    import psycopg

    end = _default_end(end)
    t_all = time.perf_counter()
    duck = duckdb.connect()
    try:
        _build(duck, "main", leads, seed, end, progress)
        with tempfile.TemporaryDirectory(prefix="metrics-layer-demo-") as tmp, psycopg.connect(url) as pg:
            s = _pg_ident(schema)
            pg.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            for table, cols in TABLES.items():
                t0 = time.perf_counter()
                csv_path = os.path.join(tmp, f"{table}.csv")
                duck.execute(f"COPY (SELECT * FROM main.{table} ORDER BY 1) TO '{csv_path}' (FORMAT csv, HEADER false)")
                pg.execute(f"DROP TABLE IF EXISTS {s}.{table}")
                pg.execute(f"CREATE TABLE {s}.{table} ({', '.join(f'{c} {t}' for c, _, t in cols)})")
                with pg.cursor() as cur, cur.copy(f"COPY {s}.{table} FROM STDIN (FORMAT csv)") as copy, \
                        open(csv_path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        copy.write(chunk)
                os.remove(csv_path)
                if progress:
                    n = duck.execute(f"SELECT count(*) FROM main.{table}").fetchone()[0]
                    progress(f"demo: postgres {table} {n:,} rows copied ... {time.perf_counter() - t0:.1f}s")
            t0 = time.perf_counter()
            for table, col in _PG_INDEXES:
                pg.execute(f"CREATE INDEX {table}_{col}_idx ON {s}.{table} ({col})")
            pg.commit()
            for table in TABLES:
                pg.execute(f"ANALYZE {s}.{table}")
            pg.commit()
            if progress:
                progress(f"demo: postgres indexes + ANALYZE ... {time.perf_counter() - t0:.1f}s")
    finally:
        duck.close()
    if progress:
        progress(f"demo: postgres schema {schema} done in {time.perf_counter() - t_all:.1f}s")


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
