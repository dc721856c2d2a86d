"""The embedded DuckDB engine's result cache is exact: a cached result is never returned once
the data could have changed, and queries that read the clock or outside data are never cached."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap

import duckdb
import pytest

from metrics_layer.engines.duckdb_engine import DuckDBEngine
from metrics_layer.project import ProjectError, load_project
from metrics_layer.query import SemanticQuery
from metrics_layer.service import MetricsService

from conftest import make_project

COUNT = "SELECT count(*) AS n, sum(v) AS total FROM items"


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "cache.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE items AS SELECT range AS id, range * 2 AS v FROM range(100)")
    con.close()
    engine = DuckDBEngine(str(path))
    yield path, engine
    engine.close()


def rows(engine, sql):
    return engine.execute(sql).rows


def cached(engine, sql):
    """Rows of `sql` run until they come from the cache (third run: the first run of a text is
    not analysed, the second keeps its rows); each run must give the same rows."""
    hits = engine.result_cache.hits
    results = [rows(engine, sql) for _ in range(3)]
    assert results[0] == results[1] == results[2]
    assert engine.result_cache.hits == hits + 1, "the third run was not answered by the cache"
    return results[0]


def test_repeated_query_is_answered_from_the_cache(db):
    _, engine = db
    assert rows(engine, COUNT) == rows(engine, COUNT) == [(100, 9900)]
    assert engine.result_cache.hits == 0  # a one-off text is not even analysed; the second run keeps it
    assert rows(engine, COUNT) == [(100, 9900)]
    assert engine.result_cache.hits == 1
    columns, batches = engine.stream(COUNT)  # the streaming path too, in batches
    assert [c.name for c in columns] == ["n", "total"] and [r for b in batches for r in b] == [(100, 9900)]
    assert engine.result_cache.hits == 2


def test_a_write_in_this_process_invalidates(db):
    path, engine = db
    assert cached(engine, COUNT) == [(100, 9900)]
    # Another connection of this process (DuckDB shares the open database within a process).
    # Before each write the result is in the cache; the first answer after it must be fresh.
    other = duckdb.connect(str(path))
    other.execute("INSERT INTO items VALUES (100, 1)")
    assert cached(engine, COUNT) == [(101, 9901)]
    other.execute("UPDATE items SET v = 0 WHERE id = 100")  # same row count: only the value changes
    assert cached(engine, COUNT) == [(101, 9900)]
    other.execute("CHECKPOINT")  # the WAL is folded into the file: still a change, still seen
    assert cached(engine, COUNT) == [(101, 9900)]
    other.execute("DELETE FROM items WHERE id = 100")
    other.execute("CHECKPOINT")
    assert cached(engine, COUNT) == [(100, 9900)]
    other.close()


def test_another_process_cannot_write_while_the_engine_holds_the_file(db):
    """The premise of the cache: DuckDB locks the file against writers in other processes."""
    path, engine = db
    rows(engine, COUNT)
    writer = textwrap.dedent(f"""
        import duckdb
        duckdb.connect({str(path)!r}).execute("INSERT INTO items VALUES (1000, 1)")
    """)
    result = subprocess.run([sys.executable, "-c", writer], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "lock" in result.stderr.lower()
    assert rows(engine, COUNT) == [(100, 9900)]


@pytest.mark.parametrize("sql", [
    "SELECT count(*) AS n, now() AS at FROM items",
    "SELECT count(*) AS n FROM items WHERE id < random() * 1000",
    "SELECT current_date AS d, count(*) FROM items",
    "SELECT count(*) FROM range(5)",
    "SELECT uuid() AS u",
])
def test_clock_random_and_table_functions_are_never_cached(db, sql):
    _, engine = db
    for _ in range(4):
        rows(engine, sql)
    assert engine.result_cache.hits == 0


def test_files_read_by_a_query_or_a_view_are_never_cached(db, tmp_path):
    path, engine = db
    csv = tmp_path / "events.csv"
    csv.write_text("x\n1\n2\n")
    other = duckdb.connect(str(path))
    other.execute(f"CREATE VIEW events AS SELECT * FROM read_csv('{csv}')")
    other.execute("CREATE VIEW big_items AS SELECT * FROM items WHERE v > 100")
    other.close()
    direct = f"SELECT count(*) FROM read_csv('{csv}')"
    through_view = "SELECT count(*) FROM events"
    assert rows(engine, direct) == rows(engine, through_view) == [(2,)]
    csv.write_text("x\n1\n2\n3\n")  # outside the database: no signature change
    assert rows(engine, direct) == rows(engine, through_view) == [(3,)]
    assert rows(engine, direct) == rows(engine, through_view) == [(3,)]  # analysed by now: still not kept
    assert engine.result_cache.hits == 0
    # A view over the database's own tables is as exact as the tables.
    assert cached(engine, "SELECT count(*) FROM big_items") == [(49,)]


def test_attached_databases_and_macros_are_never_cached(db, tmp_path):
    path, engine = db
    other_path = tmp_path / "other.duckdb"
    engine.execute(f"ATTACH '{other_path}' AS other")
    engine.execute("CREATE TABLE other.t AS SELECT 1 AS x")
    rows(engine, COUNT)  # functions looked up before the macro exists
    engine.execute("CREATE MACRO stamp() AS now()")
    for sql in ("SELECT count(*) FROM other.t", "SELECT stamp() AS s, count(*) FROM items"):
        for _ in range(4):
            rows(engine, sql)
    assert engine.result_cache.hits == 0


def test_in_memory_database_is_cleared_by_its_own_writes():
    engine = DuckDBEngine(":memory:")
    engine.execute("CREATE TABLE t AS SELECT 1 AS x")
    assert cached(engine, "SELECT sum(x) FROM t") == [(1,)]
    engine.execute("INSERT INTO t VALUES (41)")
    assert rows(engine, "SELECT sum(x) FROM t") == [(42,)]
    engine.close()


def test_large_results_are_not_kept(db):
    _, engine = db
    engine.result_cache.max_rows = 50
    sql = "SELECT id FROM items ORDER BY id"
    assert [len(rows(engine, sql)) for _ in range(4)] == [100] * 4
    assert engine.result_cache.hits == 0
    small = "SELECT id FROM items WHERE id < 10 ORDER BY id"
    rows(engine, small)  # seen once: the next run may keep it
    partial = engine.stream(small)[1]
    next(partial)
    partial.close()  # a stream read only in part is not kept
    assert len(rows(engine, small)) == 10
    assert engine.result_cache.hits == 0


def test_project_setting(tmp_path, demo_duckdb_path):
    on = MetricsService(load_project(make_project(tmp_path / "on", f"duckdb:///{demo_duckdb_path}")))
    off = MetricsService(load_project(make_project(tmp_path / "off", f"duckdb:///{demo_duckdb_path}", "result_cache: false\n")))
    try:
        assert on.engine.result_cache is not None and off.engine.result_cache is None
    finally:
        on.engine.close()
        off.engine.close()
    with pytest.raises(ProjectError, match="result_cache must be true or false, got 'yes'"):
        load_project(make_project(tmp_path / "bad", f"duckdb:///{demo_duckdb_path}", "result_cache: 'yes'\n"))


def test_trailing_window_is_cached_only_with_as_of(tmp_path, demo_duckdb_path):
    """A trailing window without as_of ends at the engine's clock: never cached."""
    service = MetricsService(load_project(make_project(tmp_path, f"duckdb:///{demo_duckdb_path}")))
    try:
        cache = service.engine.result_cache
        live = SemanticQuery(metrics=("accuracy_3h",))
        pinned = SemanticQuery(metrics=("accuracy_3h",), as_of=dt.datetime(2026, 2, 20, 12))
        assert service.run(live).rows == service.run(live).rows == service.run(live).rows
        assert cache.hits == 0
        assert service.run(pinned).rows == service.run(pinned).rows == service.run(pinned).rows
        assert cache.hits == 1
    finally:
        service.engine.close()


def test_unquoted_memory_url_gets_a_hint(tmp_path):
    """`engine: duckdb:///:memory:` is invalid YAML (a value ending in ':'): say how to write it."""
    with pytest.raises(ProjectError, match='must be quoted, e.g. engine: "duckdb:///:memory:"'):
        load_project(make_project(tmp_path, "duckdb:///:memory:"))
    assert load_project(make_project(tmp_path / "ok", '"duckdb:///:memory:"')).engine_url == "duckdb:///:memory:"
