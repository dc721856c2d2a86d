"""Engine faults on a PostgreSQL instance of the test's own (tests/throwaway_pg.py):
bounded connections that never leak, stale connections after a restart retried, time-outs
that hold against a frozen engine, and /health that never waits on a query.

Numbers are checked against hand-written SQL run directly on the throwaway instance.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from http_server import project_over, serve_project
from throwaway_pg import ThrowawayPostgres

httpx = pytest.importorskip("httpx")
psycopg = pytest.importorskip("psycopg")

DEMO_END = dt.datetime(2026, 3, 1)
LEAD_COUNT_QUERY = {"metrics": ["leads.lead_count"], "dimensions": ["leads.utm_source"], "order_by": ["leads.utm_source"]}


@pytest.fixture(scope="module")
def pg():
    from metrics_layer.demo_data import generate_postgres

    instance = ThrowawayPostgres(max_connections=30).create()
    try:
        generate_postgres(instance.url, leads=1500, end=DEMO_END, progress=lambda _: None)
        yield instance
    finally:
        instance.destroy()


@pytest.fixture(scope="module")
def expected_leads(pg):
    rows = pg.sql("SELECT utm_source, count(DISTINCT id) FROM leads GROUP BY utm_source ORDER BY utm_source")
    return [{"leads.utm_source": source, "leads.lead_count": count} for source, count in rows]


def _query(client: httpx.Client, url: str) -> httpx.Response:
    return client.post(f"{url}/api/v1/query", json=LEAD_COUNT_QUERY)


def _burst(url: str, clients: int, queries: int) -> list[httpx.Response]:
    def one_client(_):
        with httpx.Client(timeout=60) as client:
            return [_query(client, url) for _ in range(queries)]

    with ThreadPoolExecutor(clients) as pool:
        return [r for rs in pool.map(one_client, range(clients)) for r in rs]


def test_connections_are_bounded_and_survive_idle_gaps(pg, expected_leads, tmp_path):
    """16 clients on a pool of 3; an idle gap longer than the HTTP worker threads live (10 s)
    must not leave their connections behind (they used to leak ~3 per gap)."""
    live = serve_project(project_over(tmp_path, pg.url, "pool_size: 3\n"))
    try:
        peak = [0]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], pg.client_connections())
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        for cycle in range(2):
            responses = _burst(live.url, clients=16, queries=5)
            assert [r.status_code for r in responses] == [200] * 80, responses[0].text
            assert all(r.json()["rows"] == expected_leads for r in responses)
            if cycle == 0:
                time.sleep(11)  # anyio's worker threads end after 10 s idle
        stop.set()
        watcher.join()
        open_now = pg.client_connections()
        assert open_now <= 3 and peak[0] <= 3, (open_now, peak[0])
        assert live.service.engine.pool.open_connections <= 3
    finally:
        live.stop()
        live.service.engine.close()
    assert pg.client_connections() == 0


def test_connection_returned_on_error_cancel_timeout_and_unread(pg):
    from metrics_layer.engines import Cancel, EngineError, connect

    engine = connect(pg.url, pool_size=2)
    try:
        for _ in range(5):
            with pytest.raises(EngineError) as e:
                engine.execute("SELECT no_such_column FROM leads")
            assert e.value.code == "42703"
        for _ in range(3):
            with pytest.raises(EngineError) as e:
                engine.execute("SELECT pg_sleep(60)", timeout=0.3)
            assert e.value.code == "57014"
        for _ in range(3):
            cancel = Cancel()
            threading.Timer(0.3, cancel.cancel).start()
            with pytest.raises(EngineError) as e:
                engine.execute("SELECT pg_sleep(60)", cancel=cancel)
            assert e.value.code == "57014" and "user request" in e.value.message
        for _ in range(5):  # streams dropped unread, before and after their first batch
            columns, batches = engine.stream("SELECT generate_series(1, 100)", batch_size=10)
            del batches
            columns, batches = engine.stream("SELECT generate_series(1, 100)", batch_size=10)
            next(batches)
            del batches
        assert engine.pool._in_use == 0
        assert engine.pool.open_connections <= 2
        assert engine.execute("SELECT count(*) FROM leads").rows == [(1500,)]
        assert pg.client_connections() <= 2
    finally:
        engine.close()


def test_all_connections_busy_is_a_clear_503(pg, tmp_path):
    from metrics_layer.engines import EngineError, connect

    engine = connect(pg.url, pool_size=1)
    engine.pool.wait = 0.5
    try:
        _, held = engine.stream("SELECT generate_series(1, 10)", batch_size=1)
        next(held)
        with pytest.raises(EngineError) as e:
            engine.execute("SELECT 1")
        assert e.value.code == "53300" and "pool_size" in e.value.message
        held.close()
        assert engine.execute("SELECT 1").rows == [(1,)]
    finally:
        engine.close()


def test_first_requests_after_an_engine_restart_succeed(pg, expected_leads, tmp_path):
    live = serve_project(project_over(tmp_path, pg.url, "pool_size: 4\n"))
    try:
        assert all(r.status_code == 200 for r in _burst(live.url, clients=8, queries=3))
        assert live.service.engine.pool.open_connections >= 2  # idle connections the restart will close
        pg.restart()
        responses = _burst(live.url, clients=16, queries=1)
        assert [r.status_code for r in responses] == [200] * 16, [r.text for r in responses if r.status_code != 200]
        assert all(r.json()["rows"] == expected_leads for r in responses)
    finally:
        live.stop()
        live.service.engine.close()


def test_a_read_on_a_connection_the_engine_closed_is_retried_once(pg):
    """A connection that looks healthy but whose backend was terminated (pg_terminate_backend):
    the read fails with 57P01 and is run again on a fresh connection."""
    from metrics_layer.engines import connect

    engine = connect(pg.url, pool_size=1)
    try:
        pid = engine.execute("SELECT pg_backend_pid()").rows[0][0]
        pg.sql(f"SELECT pg_terminate_backend({pid})")
        # make the dead connection look idle and healthy: the check before reuse cannot see it
        import metrics_layer.engines.postgres_engine as pe

        healthy, pe._healthy = pe._healthy, lambda c: not c.closed
        try:
            rows = engine.execute("SELECT pg_backend_pid()").rows
        finally:
            pe._healthy = healthy
        assert rows[0][0] != pid
    finally:
        engine.close()


def test_timeouts_hold_against_a_frozen_engine(pg, expected_leads, tmp_path):
    """PostgreSQL stopped with SIGSTOP: the query time-out (2 s) answers 504 without waiting for
    the engine, /health answers (unreachable) at once, and all recovers once it runs again.
    The httpx time-outs (30 s) only keep a broken build from hanging."""
    live = serve_project(project_over(tmp_path, pg.url, "pool_size: 4\nquery_timeout: 2\n"))
    pids = []
    try:
        # no keep-alive: uvicorn closes idle connections after 5 s, racing a reused one
        with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            assert _query(client, live.url).status_code == 200
            pids = pg.freeze()
            t0 = time.monotonic()
            with ThreadPoolExecutor(6) as pool:
                futures = [pool.submit(_query, client, live.url) for _ in range(6)]
                health = client.get(f"{live.url}/health")
                responses = [f.result() for f in futures]
            print(f"frozen: health {health.elapsed.total_seconds():.2f} s, queries answered after {time.monotonic() - t0:.2f} s")
            assert health.status_code == 503
            assert health.json()["engine"]["reachable"] is False
            statuses = [r.status_code for r in responses]
            assert set(statuses) <= {503, 504} and 504 in statuses, [r.text for r in responses]
            for r in responses:
                assert r.json()["error"]["code"] in ("57014", "08006", "53300"), r.text
            pg.thaw(pids)
            pids = []
            responses = [_query(client, live.url) for _ in range(6)]
            assert [r.status_code for r in responses] == [200] * 6, responses[0].text
            assert responses[0].json()["rows"] == expected_leads
            assert client.get(f"{live.url}/health").status_code == 200
    finally:
        pg.thaw(pids)
        live.stop()
        live.service.engine.close()


SLOW_MODEL = """
models:
  - name: slow
    sql: SELECT g AS id, pg_sleep(0.5) IS NULL AS slept FROM generate_series(1, 8) AS g
    entities: [{name: slow_row, type: primary, expr: id}]
    measures:
      - {name: rows, agg: count, expr: id}
"""


def test_bad_text_values_on_postgresql_are_400_and_a_lost_connection_is_503(pg, expected_leads, tmp_path):
    folder = project_over(tmp_path, pg.url, "pool_size: 2\n")
    (folder / "metrics" / "slow.yml").write_text(SLOW_MODEL)
    live = serve_project(folder)
    try:
        with httpx.Client(timeout=60) as client:
            for value in ("\ud800", "a\x00b"):
                body = {"metrics": ["leads.lead_count"], "filters": [{"field": "leads.utm_source", "op": "=", "value": value}]}
                import json

                response = client.post(f"{live.url}/api/v1/query", content=json.dumps(body), headers={"content-type": "application/json"})
                assert response.status_code == 400 and response.json()["error"]["code"] == "22021", response.text
            assert _query(client, live.url).json()["rows"] == expected_leads

            stop = threading.Event()

            def terminator():  # ends every backend that runs the slow model's SQL, again and again
                while not stop.is_set():
                    pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE query ILIKE '%pg_sleep(0.5)%' AND pid <> pg_backend_pid()")
                    time.sleep(0.05)

            killer = threading.Thread(target=terminator, daemon=True)
            killer.start()
            try:
                response = client.post(f"{live.url}/api/v1/query", json={"metrics": ["slow.rows"]})
            finally:
                stop.set()
                killer.join()
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] in ("57P01", "08006"), response.text
            assert response.json()["error"]["code"] != "XX000"
            assert _query(client, live.url).json()["rows"] == expected_leads
            assert client.post(f"{live.url}/api/v1/query", json={"metrics": ["slow.rows"]}).json()["rows"] == [{"slow.rows": 8}]
    finally:
        live.stop()
        live.service.engine.close()
