"""Timestamps and dates printed by DuckDB for text-format results (compile/pg_text.py).

The SQL endpoint asks DuckDB to print timestamp and date columns the client reads as text,
instead of formatting Python datetimes. The text must be byte for byte what the Python path
(values.RowEncoder over the values DuckDB returns) sends, and PostgreSQL's text where that path
cannot send a right one (BC, infinity). Checked value by value on real DuckDB, then end to end
through the real server with text (psycopg) and binary (asyncpg) clients.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re

import pytest
from sqlglot import exp

from conftest import postgres_or_skip
from metrics_layer.engines.duckdb_engine import DuckDBEngine
from metrics_layer.compile.pg_text import pg_text_expression, pg_text_select
from metrics_layer.serve.pgwire.values import _timestamp_text, row_encoder

EPOCH = dt.datetime(1970, 1, 1)
US = 1_000_000
MIN_US = (dt.datetime(1, 1, 1) - EPOCH) // dt.timedelta(microseconds=1)
MAX_US = (dt.datetime(9999, 12, 31, 23, 59, 59, 999999) - EPOCH) // dt.timedelta(microseconds=1)
MIN_NS, MAX_NS = -(2 ** 63) + 10 ** 9, 2 ** 63 - 10 ** 9  # TIMESTAMP_NS: 1677-09-21 .. 2262-04-11


def _micros(rng: random.Random, n: int) -> list[int | None]:
    """Epoch microseconds across years 1..9999: random, whole seconds, fractions with trailing
    zeros (.1, .12, .000001...), NULLs, the ends of the range."""
    out: list[int | None] = [MIN_US, MAX_US, 0, -1, 1, None]
    for k in range(n):
        us = rng.randrange(MIN_US, MAX_US)
        shape = k % 5
        if shape == 1:
            us -= us % US  # whole second
        elif shape == 2:
            us -= us % 10 ** rng.randrange(1, 6)  # a fraction with trailing zeros
        elif shape == 3:
            us = us - us % US + rng.choice([1, 10, 100000, 120000, 500000, 999999, 999990])
        elif shape == 4 and k % 20 == 4:
            us = None
        out.append(us)
    return out


def _nanos(rng: random.Random, n: int) -> list[int | None]:
    """Epoch nanoseconds across TIMESTAMP_NS's range, many with digits below the microsecond,
    before and after 1970 (DuckDB's Python conversion truncates toward zero on the epoch)."""
    out: list[int | None] = [-500, -1500, -1000, 500, 999, -999, -1_000_000_001, 999_999_999, None, MIN_NS, MAX_NS]
    for k in range(n):
        ns = rng.randrange(MIN_NS, MAX_NS)
        if k % 4 == 1:
            ns -= ns % 1000  # whole microseconds
        elif k % 4 == 2:
            ns -= ns % 10 ** 9  # whole seconds
        out.append(None if k % 25 == 3 else ns)
    return out


# Values the Python path cannot send right (DuckDB returns datetime.max for infinity, its own
# text '0044-03-15 (BC) 12:00:00' for BC), with PostgreSQL's text for each (checked against a
# real PostgreSQL below). Years > 9999 come back from DuckDB as text equal to PostgreSQL's.
SPECIAL_TIMESTAMPS = {
    "infinity": "infinity",
    "-infinity": "-infinity",
    "0044-03-15 (BC) 12:00:00.5": "0044-03-15 12:00:00.5 BC",
    "0001-12-31 (BC) 23:59:59.999999": "0001-12-31 23:59:59.999999 BC",
    "4713-01-01 (BC) 00:00:00": "4713-01-01 00:00:00 BC",
}
SPECIAL_DATES = {
    "infinity": "infinity",
    "-infinity": "-infinity",
    "0044-03-15 (BC)": "0044-03-15 BC",
    "4713-01-01 (BC)": "4713-01-01 BC",
}
PG_TIMESTAMPS = {"0044-03-15 12:00:00.5 BC", "0001-12-31 23:59:59.999999 BC", "4713-01-01 00:00:00 BC"}
BEYOND_9999 = ["10000-01-01 00:00:00", "12345-06-07 08:09:10.25", "294247-01-10 04:00:54.775806"]


@pytest.fixture(scope="module")
def engine():
    """The endpoint's own engine over a table of every temporal type DuckDB may return for a
    column announced as timestamp or date."""
    eng = DuckDBEngine(":memory:", result_cache=False)
    rng = random.Random(20260101)
    micros, nanos = _micros(rng, 4000), _nanos(rng, 4000)
    days = [None if us is None else us // (86400 * US) for us in _micros(rng, 4000)]
    n = max(len(micros), len(nanos), len(days))
    pad = lambda xs: xs + [None] * (n - len(xs))  # noqa: E731
    con = eng._connection
    con.execute(
        "CREATE TABLE t AS SELECT i, make_timestamp(us) AS ts, CAST(make_timestamp(us) AS TIMESTAMPTZ) AS tz, "
        "make_timestamp_ns(ns) AS ns, CAST(DATE '1970-01-01' + CAST(d AS INTEGER) AS DATE) AS d "
        "FROM (SELECT unnest(range(?)) AS i, unnest(?::BIGINT[]) AS us, unnest(?::BIGINT[]) AS ns, "
        "unnest(?::BIGINT[]) AS d)",
        [n, pad(micros), pad(nanos), pad(days)])
    # The special values, one row each (a NULL in the other columns).
    i = n
    for text in list(SPECIAL_TIMESTAMPS) + BEYOND_9999:
        con.execute("INSERT INTO t (i, ts, tz) VALUES (?, CAST(? AS TIMESTAMP), CAST(? AS TIMESTAMP))", [i, text, text])
        i += 1
    for text in ("infinity", "-infinity"):
        con.execute("INSERT INTO t (i, ns) VALUES (?, CAST(? AS TIMESTAMP_NS))", [i, text])
        i += 1
    for text in list(SPECIAL_DATES) + ["10000-01-01", "12345-06-07"]:
        con.execute("INSERT INTO t (i, d) VALUES (?, CAST(? AS DATE))", [i, text])
        i += 1
    yield eng
    eng.close()


def _fetch(eng: DuckDBEngine, sql: str) -> list[tuple]:
    _, batches = eng.stream(sql)
    return [row for batch in batches for row in batch]


def _python_path(eng: DuckDBEngine, column: str, oid: int) -> dict[int, bytes]:
    """DataRow bytes per row as sent before: the encoder over the values DuckDB returns."""
    encoder = row_encoder((oid,), (0,))
    return {i: encoder.encode([(v,)]) for i, v in _fetch(eng, f"SELECT i, {column} FROM t")}


def _printed(eng: DuckDBEngine, column: str, oid: int, expression=None) -> tuple[dict[int, bytes], dict[int, str]]:
    """DataRow bytes per row as sent now: DuckDB prints the column (as the endpoint's SQL does,
    pg_text_select over the query; `expression` replaces pg_text_expression to check that the
    comparison catches a wrong rendering), the encoder sends the text."""
    sql = f"SELECT i, {column} FROM t"
    if expression is None:
        sql = pg_text_select(sql, ((0, None), (1, oid)))
    else:
        sql = exp.select("i", exp.alias_(expression(exp.column(column), oid), "v")).from_("t").sql("duckdb")
    rows = _fetch(eng, sql)
    assert all(v is None or isinstance(v, str) for _, v in rows)
    encoder = row_encoder((oid,), (0,), (True,))
    return {i: encoder.encode([(v,)]) for i, v in rows}, {i: v for i, v in rows}


def _data_row(text: str) -> bytes:
    value = text.encode()
    return b"D" + (4 + 2 + 4 + len(value)).to_bytes(4, "big") + b"\x00\x01" + len(value).to_bytes(4, "big") + value


def _mismatches(eng, column: str, oid: int, expression=None) -> list:
    """(row, expected, got) for every value whose text differs from the Python path's, or from
    PostgreSQL's text for the special values."""
    before = _python_path(eng, column, oid)
    after, texts = _printed(eng, column, oid, expression)
    assert before.keys() == after.keys()
    special = _special_texts(eng, column, oid)
    bad = []
    for i, old in before.items():
        want = _data_row(special[i]) if i in special else old
        if after[i] != want:
            bad.append((i, want, after[i]))
    return bad


def _special_texts(eng, column: str, oid: int) -> dict[int, str]:
    """Rows the Python path cannot send right -> PostgreSQL's text for them as type `oid`:
    infinity, BC, and years > 9999 when DuckDB's text for them is not the type's (a
    TIMESTAMPTZ's '+00', the time of a timestamp sent as a date)."""
    as_ts = f"CAST({column} AS TIMESTAMP)"
    rows = _fetch(eng, f"SELECT i, CAST({as_ts} AS VARCHAR), CAST(CAST({as_ts} AS DATE) AS VARCHAR) FROM t "
                       f"WHERE NOT isfinite({as_ts}) OR {as_ts} < TIMESTAMP '0001-01-01' "
                       f"OR {as_ts} >= TIMESTAMP '10000-01-01'")
    out = {}
    for i, ts_text, date_text in rows:
        if ts_text in ("infinity", "-infinity"):
            out[i] = ts_text
        elif "(BC)" in ts_text:
            out[i] = SPECIAL_TIMESTAMPS[ts_text] if oid == 1114 else date_text.replace(" (BC)", "") + " BC"
        else:
            out[i] = ts_text if oid == 1114 else date_text  # DuckDB's text: PostgreSQL's (checked below)
    return out


CASES = [("ts", 1114), ("tz", 1114), ("ns", 1114), ("d", 1082),
         # a column announced as date may hold timestamps (CAST(x AS DATE) over a time dimension)
         ("ts", 1082), ("tz", 1082), ("ns", 1082)]


@pytest.mark.parametrize("column,oid", CASES, ids=[f"{c}-as-{o}" for c, o in CASES])
def test_printed_text_equals_the_python_path_byte_for_byte(engine, column, oid):
    rows = _fetch(engine, f"SELECT count({column}) FROM t")[0][0]
    assert rows > 3000
    bad = _mismatches(engine, column, oid)
    assert not bad, f"{len(bad)} values differ, e.g. {bad[:5]}"


def test_special_values_come_out_as_postgresql_prints_them(engine):
    _, texts = _printed(engine, "ts", 1114)
    printed = set(texts.values())
    assert set(SPECIAL_TIMESTAMPS.values()) <= printed
    assert set(BEYOND_9999) <= printed  # DuckDB's text for years > 9999 is PostgreSQL's, as before
    _, texts = _printed(engine, "d", 1082)
    assert set(SPECIAL_DATES.values()) | {"10000-01-01", "12345-06-07"} <= set(texts.values())
    _, texts = _printed(engine, "ns", 1114)
    assert {"infinity", "-infinity"} <= set(texts.values())
    # what the Python path sent for some of them: wrong, hence PostgreSQL's text now
    before = dict(_fetch(engine, "SELECT CAST(ts AS VARCHAR), ts FROM t "
                                 "WHERE NOT isfinite(ts) OR CAST(ts AS VARCHAR) LIKE '%(BC)%'"))
    assert before["infinity"] == dt.datetime.max
    assert before["0044-03-15 (BC) 12:00:00.5"] == "0044-03-15 (BC) 12:00:00.5"


def test_special_texts_are_what_postgresql_prints():
    import psycopg

    with psycopg.connect(postgres_or_skip()) as conn:
        for text in PG_TIMESTAMPS | {"infinity", "-infinity"} | set(BEYOND_9999[:2]):
            assert conn.execute("SELECT CAST(CAST(%s AS timestamp) AS text)", [text]).fetchone()[0] == text
        for text in set(SPECIAL_DATES.values()) | {"10000-01-01"}:
            assert conn.execute("SELECT CAST(CAST(%s AS date) AS text)", [text]).fetchone()[0] == text
        conn.execute("SET DateStyle = 'ISO, MDY'")
        got = conn.execute("SELECT CAST(CAST('2026-01-01 00:00:00.120' AS timestamp) AS text)")
        assert got.fetchone()[0] == "2026-01-01 00:00:00.12"


def _plain_cast(value, oid):
    return exp.cast(exp.cast(value, "DATE" if oid == 1082 else "TIMESTAMP"), "VARCHAR")


def _untrimmed(value, oid):
    return exp.func("strftime", exp.cast(value, "TIMESTAMP"), exp.Literal.string("%Y-%m-%d %H:%M:%S.%f"))


def _rounded_ns(value, oid):
    return pg_text_expression(exp.cast(value, "TIMESTAMP"), oid)  # CAST rounds nanoseconds


@pytest.mark.parametrize("column,oid,wrong", [
    ("ts", 1114, _untrimmed),  # the fraction's trailing zeros kept
    ("ts", 1114, _plain_cast),  # BC printed as DuckDB does
    ("ns", 1114, _rounded_ns),  # nanoseconds rounded, not truncated toward zero as before
    ("ns", 1082, _rounded_ns),
    ("d", 1082, _plain_cast),
])
def test_the_comparison_catches_a_wrong_rendering(engine, column, oid, wrong):
    assert _mismatches(engine, column, oid, wrong)


# ---------------------------------------------------------------------------------------
# End to end: the real server, text and binary clients

MODEL_YAML = """
models:
  - name: moments
    table: moments
    entities: [{name: moment, type: primary, expr: i}]
    dimensions:
      - {name: i, type: number}
      - {name: ts, type: time}
      - {name: tz, type: time}
      - {name: ns, type: time}
      - {name: d, type: time}
    measures:
      - {name: moment_count, agg: count}
views:
  - name: moments_view
    dimensions: [moments.i, moments.ts, moments.tz, moments.ns, moments.d]
    metrics: [moments.moment_count]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The endpoint in process (its engine instrumented) over a DuckDB file of timestamps;
    yields (port, expected rows by i as DuckDB returns them to Python, recorded engine calls)."""
    import duckdb

    from metrics_layer.project import load_project
    from metrics_layer.serve.pgwire import BackgroundServer
    from metrics_layer.serve.pgwire.semantic import SemanticBackend
    from metrics_layer.service import MetricsService

    folder = tmp_path_factory.mktemp("render")
    path = folder / "moments.duckdb"
    rng = random.Random(7)
    n = 3000
    lo, hi = ((dt.datetime(year, 1, 1) - EPOCH) // dt.timedelta(microseconds=1) for year in (1900, 2200))
    micros = [None if k % 50 == 7 else rng.randrange(lo, hi) for k in range(n)]
    micros = [None if us is None else (us - us % US if k % 3 == 0 else us) for k, us in enumerate(micros)]
    nanos = [None if k % 40 == 5 else rng.randrange(lo * 1000, hi * 1000) for k in range(n)]
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        "CREATE TABLE moments AS SELECT i, make_timestamp(us) AS ts, CAST(make_timestamp(us) AS TIMESTAMPTZ) AS tz, "
        "make_timestamp_ns(ns) AS ns, CAST(make_timestamp(us) AS DATE) AS d "
        "FROM (SELECT unnest(range(?)) AS i, unnest(?::BIGINT[]) AS us, unnest(?::BIGINT[]) AS ns)",
        [n, micros, nanos])
    expected = {row[0]: row for row in con.execute("SELECT i, ts, tz, ns, d FROM moments").fetchall()}
    con.close()
    (folder / "metrics").mkdir()
    (folder / "metrics" / "moments.yml").write_text(MODEL_YAML)
    (folder / "metrics_layer.yml").write_text(f"engine: duckdb:///{path}\n")

    service = MetricsService(load_project(folder))
    calls: list[dict] = []
    stream = service.engine.stream

    def recording_stream(sql, *args, **kwargs):
        columns, batches = stream(sql, *args, **kwargs)
        call = {"sql": sql, "types": set()}
        calls.append(call)

        def watched():
            for batch in batches:
                for row in batch[:1]:
                    call["types"].add(tuple(type(v).__name__ for v in row))
                yield batch

        return columns, watched()

    stream_arrow = service.engine.stream_arrow

    def recording_stream_arrow(sql, *args, **kwargs):
        # large or first-run results come as Arrow batches: a string column is ready text
        arrow = stream_arrow(sql, *args, **kwargs)
        if arrow is not None:
            import pyarrow as pa

            calls.append({"sql": sql, "types": {tuple("str" if pa.types.is_string(f.type) else str(f.type)
                                                      for f in arrow[1])}})
        return arrow

    service.engine.stream = recording_stream  # instance attribute: what the endpoint calls
    service.engine.stream_arrow = recording_stream_arrow
    srv = BackgroundServer(SemanticBackend(service), host="127.0.0.1", port=0, auth_method="trust").start()
    yield srv.port, expected, calls, service
    srv.stop()
    service.engine.close()


def _utc(v):
    return None if v is None else v.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _want(expected: dict, i: int) -> tuple:
    _, ts, tz, ns, d = expected[i]
    return (i, ts, _utc(tz), ns, d)


def _rendered_calls(calls: list[dict], start: int) -> list[dict]:
    return [c for c in calls[start:] if "moments" in c["sql"] and "TYPEOF(" in c["sql"]]


def _printed_columns(sql: str) -> set[str]:
    return set(re.findall(r"TYPEOF\((q\.c\d+)\)", sql))


Q = "SELECT i, ts, tz, ns, d FROM moments_view"


def test_psycopg_text_results_are_printed_by_duckdb(server):
    import psycopg

    port, expected, calls, _ = server
    start = len(calls)
    with psycopg.connect(host="127.0.0.1", port=port, user="me", dbname="metrics", autocommit=True) as conn:
        cur = conn.execute(Q)
        assert [d.type_code for d in cur.description] == [20, 1114, 1114, 1114, 1082]
        rows = cur.fetchall()
        assert len(rows) == len(expected)
        assert sorted(rows, key=lambda r: r[0]) == [_want(expected, i) for i in sorted(expected)]
        # the fast path: DuckDB printed the four columns, the rows reached the encoder as text
        rendered = _rendered_calls(calls, start)
        assert len(rendered) == 1 and _printed_columns(rendered[0]["sql"]) == {"q.c1", "q.c2", "q.c3", "q.c4"}
        assert rendered[0]["types"] and all(set(t[1:]) <= {"str", "NoneType"} for t in rendered[0]["types"])

        # ordering, LIMIT and a projection of part of the columns survive the wrapping
        rows = conn.execute("SELECT ns, i FROM moments_view WHERE ns IS NOT NULL ORDER BY ns DESC LIMIT 25").fetchall()
        want = sorted(((e[3], i) for i, e in expected.items() if e[3] is not None), reverse=True)[:25]
        assert rows == want
        rows = conn.execute(
            "SELECT CAST(ts AS DATE) AS day, moment_count FROM moments_view GROUP BY 1 ORDER BY 1").fetchall()
        days: dict = {}
        for e in expected.values():
            days[None if e[1] is None else e[1].date()] = days.get(None if e[1] is None else e[1].date(), 0) + 1
        assert rows == sorted(days.items(), key=lambda kv: (kv[0] is None, kv[0] or dt.date.min))
        assert len(_rendered_calls(calls, start)) == 3

        # the simple protocol is text as well
        rows = conn.execute("SELECT i, ts, tz, ns, d FROM moments_view WHERE i = 11", prepare=False).fetchall()
        assert rows == [_want(expected, 11)]


def test_binary_results_are_not_printed(server):
    asyncpg = pytest.importorskip("asyncpg")
    import psycopg

    port, expected, calls, _ = server
    start = len(calls)

    async def go():
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="me", database="metrics")
        try:
            return await conn.fetch(Q)
        finally:
            await conn.close()

    rows = [tuple(r) for r in asyncio.run(go())]
    assert sorted(rows, key=lambda r: r[0]) == [_want(expected, i) for i in sorted(expected)]
    with psycopg.connect(host="127.0.0.1", port=port, user="me", dbname="metrics", autocommit=True) as conn:
        rows = conn.cursor(binary=True).execute(Q).fetchall()
        assert sorted(rows, key=lambda r: r[0]) == [_want(expected, i) for i in sorted(expected)]
        ours = [c for c in calls[start:] if "moments" in c["sql"] and "LIMIT 0" not in c["sql"]]
        assert ours and not _rendered_calls(calls, start)
        assert all("datetime" in t for c in ours for t in c["types"])


def test_mixed_formats_print_only_the_text_columns(server):
    """One format per column (libpq asks one for all: the session is asked directly)."""
    from metrics_layer.serve.pgwire.semantic import SemanticBackend

    _, expected, calls, service = server
    session = SemanticBackend(service).open_session("me", "metrics", {})
    start = len(calls)
    outcome = session.execute("SELECT i, ts, d, tz FROM moments_view WHERE i = $1", [12], [20], [0, 1, 0, 1])
    rows = list(outcome.rows)
    assert [(c.type_oid, c.text_values) for c in outcome.columns] == [
        (20, False), (1114, False), (1082, True), (1114, False)]
    _, ts, tz, _, d = expected[12]
    assert rows == [(12, ts, None if d is None else d.isoformat(), tz)]
    rendered = _rendered_calls(calls, start)
    assert len(rendered) == 1 and _printed_columns(rendered[0]["sql"]) == {"q.c2"}
    outcome = session.execute("SELECT i, ts FROM moments_view WHERE i = $1", [12], [20], [1])  # all binary
    assert list(outcome.rows) == [(12, ts)] and not any(c.text_values for c in outcome.columns)
    outcome = session.execute("SELECT i, ts FROM moments_view WHERE i = $1", [12], [20], [])  # all text
    assert [c.text_values for c in outcome.columns] == [False, True]
    assert list(outcome.rows) == [(12, None if ts is None else _timestamp_text(ts).decode())]


def test_cursors_print_text_and_still_fetch_binary(server):
    import psycopg

    port, expected, calls, _ = server
    with psycopg.connect(host="127.0.0.1", port=port, user="me", dbname="metrics") as conn:
        start = len(calls)
        with conn.cursor(name="text_cursor") as cur:  # DECLARE, then FETCH in text
            cur.itersize = 700
            cur.execute(Q)
            rows = list(cur)
        assert sorted(rows, key=lambda r: r[0]) == [_want(expected, i) for i in sorted(expected)]
        assert len(_rendered_calls(calls, start)) == 1
        conn.rollback()
        # A cursor declared for text, fetched in binary: the printed text is parsed back.
        conn.execute("DECLARE c CURSOR WITH HOLD FOR SELECT i, ts, tz, ns, d FROM moments_view")
        rows = conn.cursor(binary=True).execute("FETCH ALL FROM c").fetchall()
        conn.execute("CLOSE c")
        assert sorted(rows, key=lambda r: r[0]) == [_want(expected, i) for i in sorted(expected)]


def test_printed_columns_take_the_text_fast_path(server, monkeypatch):
    """The server encodes printed columns as text columns: the unrolled loop, never the slow
    path that converts values of unexpected types."""
    import psycopg

    from metrics_layer.serve.pgwire import connection

    asked = []

    def recording(oids, formats, text_values=()):
        encoder = row_encoder(oids, formats, text_values)
        asked.append((oids, formats, text_values))
        if any(text_values):
            def refuse(*args):
                raise AssertionError("a printed column took the slow path")
            monkeypatch.setattr(encoder, "_safe_loop", refuse)
        return encoder

    monkeypatch.setattr(connection, "row_encoder", recording)
    port, expected, _, _ = server
    with psycopg.connect(host="127.0.0.1", port=port, user="me", dbname="metrics", autocommit=True) as conn:
        assert len(conn.execute(Q).fetchall()) == len(expected)
    assert ((20, 1114, 1114, 1114, 1082), (0,) * 5, (False, True, True, True, True)) in asked
    row_encoder.cache_clear()  # drop the encoders made to refuse the slow path


def test_row_encoder_sends_ready_text_as_it_is():
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 120000)
    plain, ready = row_encoder((1114, 1082), (0, 0)), row_encoder((1114, 1082), (0, 0), (True, True))
    assert ready.encode([("2026-01-02 03:04:05.12", "2026-01-02"), (None, None)]) == \
        plain.encode([(when, when.date()), (None, None)])
    binary, ready_binary = row_encoder((1114,), (1,)), row_encoder((1114,), (1,), (True,))  # parsed back
    assert ready_binary.encode([("2026-01-02 03:04:05.12",)]) == binary.encode([(when,)])
