"""The DuckDB engine's cursor pool and prepared statements: same rows, same errors, cancellable.

The engine reuses cursors and runs hot SELECTs as prepared statements (see the module
docstring of metrics_layer/engines/duckdb_engine.py); none of that may show in results.
The result cache is off here: it would answer repeated queries before they reach DuckDB
(tests/test_result_cache.py covers it).
"""

from __future__ import annotations

import threading

import pytest

from metrics_layer.engines.base import Cancel, EngineError
from metrics_layer.engines.duckdb_engine import DuckDBEngine


@pytest.fixture()
def engine():
    eng = DuckDBEngine(":memory:", result_cache=False)
    eng._connection.execute("CREATE TABLE t AS SELECT range AS i, 'x' || range AS s FROM range(100)")
    yield eng
    eng.close()


def _plain_error(sql: str, setup: str) -> str:
    """The message of `sql` on an engine that never prepares."""
    eng = DuckDBEngine(":memory:", result_cache=False)
    eng.prepare_threshold = 0
    try:
        eng._connection.execute(setup)
        with pytest.raises(EngineError) as e:
            eng.execute(sql)
        return e.value.message
    finally:
        eng.close()


def test_hot_select_is_prepared_and_returns_the_same_rows(engine):
    sql = "SELECT i % 7 AS k, count(*) AS n FROM t GROUP BY 1 ORDER BY 1"
    expected = engine._connection.execute(sql).fetchall()
    for _ in range(engine.prepare_threshold + 3):
        assert engine.execute(sql).rows == expected
    assert [list(p.prepared) for p in engine._idle] == [[sql]]  # one warm cursor, statement prepared


def test_one_off_queries_are_not_prepared(engine):
    for i in range(10):
        engine.execute(f"SELECT count(*) FROM t WHERE i > {i}")
    assert all(not p.prepared for p in engine._idle)


def test_writes_and_multiple_statements_are_never_prepared(engine):
    for _ in range(engine.prepare_threshold + 1):
        engine.execute("SELECT 1; SELECT 2")
        engine.execute("WITH x AS (SELECT 1 AS a) SELECT * FROM x")
    prepared = [sql for p in engine._idle for sql in p.prepared]
    assert prepared == ["WITH x AS (SELECT 1 AS a) SELECT * FROM x"]
    assert engine.execute("SELECT 1; SELECT 2").rows == [(2,)]


def test_a_paused_stream_keeps_its_cursor(engine):
    columns, batches = engine.stream("SELECT i FROM t ORDER BY i", batch_size=10)
    first = next(batches)
    # Other queries meanwhile (the SQL endpoint's portals and cursors do this) get other cursors.
    for _ in range(engine.prepare_threshold + 2):
        assert engine.execute("SELECT max(i) FROM t").rows == [(99,)]
    rest = [row for batch in batches for row in batch]
    assert [r[0] for r in first + rest] == list(range(100))
    assert len(engine._idle) == 2  # both cursors back once exhausted


def test_a_stream_closed_early_closes_its_cursor(engine):
    _, batches = engine.stream("SELECT i FROM t", batch_size=10)
    next(batches)
    batches.close()
    assert engine._idle == []


def test_errors_match_the_plain_query_when_prepared(engine):
    setup = "CREATE TABLE t AS SELECT range AS i, 'x' || range AS s FROM range(100)"
    runtime = "SELECT CAST(s AS INTEGER) FROM t WHERE i >= 0"
    for _ in range(engine.prepare_threshold + 1):
        with pytest.raises(EngineError) as e:
            engine.execute(runtime)
        assert e.value.message == _plain_error(runtime, setup)

    sql = "SELECT max(i) FROM t"
    for _ in range(engine.prepare_threshold + 1):
        engine.execute(sql)
    engine._connection.execute("ALTER TABLE t RENAME TO t_old")  # behind the prepared statement
    with pytest.raises(EngineError) as e:
        engine.execute(sql)
    assert "Table with name t does not exist" in e.value.message and "LINE 1" in e.value.message
    engine._connection.execute("ALTER TABLE t_old RENAME TO t")
    assert engine.execute(sql).rows == [(99,)]


def test_cancel_interrupts_a_prepared_query(engine):
    slow = "SELECT count(*) FROM range(5000000000) r WHERE r.range % 7 = 1"
    engine._seen[slow] = engine.prepare_threshold  # already hot: this run prepares it
    cancel = Cancel()
    threading.Timer(0.3, cancel.cancel).start()
    with pytest.raises(EngineError) as e:  # uncancelled, the query would return a count instead
        engine.execute(slow, cancel=cancel)
    assert e.value.code == "57014"
    assert engine.execute("SELECT count(*) FROM t").rows == [(100,)]  # the engine goes on


def test_a_file_another_process_holds_is_a_clear_error(tmp_path):
    """DuckDB lets one process write a file or several read it: the error names the holder and what to do."""
    import subprocess
    import sys

    import duckdb

    path = tmp_path / "held.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True); "
                               "print('open', flush=True); sys.stdin.read()", str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(EngineError) as e:
            DuckDBEngine(str(path))
        assert f"process {holder.pid}" in str(e.value) and "deploy: {refresh: true}" in str(e.value)
        reader = DuckDBEngine(str(path), read_only=True)  # readers share the file
        reader.close()
    finally:
        holder.communicate("", timeout=60)
