"""Streaming throughput of the pgwire server vs PostgreSQL, fetched by the same client.

    python bench/bench_pgwire_stream.py [--rows 1000000] [--pin] [--pg "host=127.0.0.1 user=postgres dbname=test"]

The pgwire server runs in its own process (as in production: the client does not share its
GIL) in front of a minimal DuckDB backend producing `SELECT i, i*2, 'row ' || i FROM range(N)`.
PostgreSQL answers the same rows from generate_series. psycopg fetches everything (text
format, then binary); a raw socket reader that discards the bytes measures the server alone.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

QUERY = "SELECT i, i * 2, 'row ' || i FROM range({n}) t(i)"
PG_QUERY = "SELECT i, i * 2, 'row ' || i FROM generate_series(0, {last}) i"


def _serve(port_queue: mp.Queue, cpu: int | None, arrow: bool = False) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # the whole server process (loop, workers, DuckDB) on one core
    import duckdb

    from metrics_layer.serve.pgwire import BackgroundServer, ColumnDesc, Described, Outcome
    from metrics_layer.serve.pgwire.values import OID, ArrowRows

    class Session:
        def __init__(self):
            self.con = duckdb.connect()

        def describe(self, sql, param_oids):
            return Described([], [ColumnDesc("i", OID.INT8), ColumnDesc("x", OID.INT8), ColumnDesc("s", OID.TEXT)])

        def execute(self, sql, params, param_oids, result_formats):
            cur = self.con.cursor()
            if arrow:  # record batches, encoded column-wise by the server (as the DuckDB engine does)
                relation = cur.sql(sql)
                columns = [ColumnDesc(n, OID.INT8 if str(t) == "BIGINT" else OID.TEXT)
                           for n, t in zip(relation.columns, relation.types)]
                reader = relation.to_arrow_reader(16384)

                def batches():
                    try:
                        while True:
                            try:
                                yield reader.read_next_batch()
                            except StopIteration:
                                return
                    finally:
                        reader.close()
                        cur.close()

                return Outcome(columns, ArrowRows(reader.schema, batches()))
            cur.execute(sql)

            def rows():
                try:
                    while batch := cur.fetchmany(8192):
                        yield from batch
                finally:
                    cur.close()

            columns = [ColumnDesc(d[0], OID.INT8 if str(d[1]) == "BIGINT" else OID.TEXT) for d in cur.description]
            return Outcome(columns, rows())

        def cancel(self):
            self.con.interrupt()

        def close(self):
            self.con.close()

    class Backend:
        def open_session(self, user, database, params):
            return Session()

    server = BackgroundServer(Backend(), port=0, auth_method="trust").start()
    port_queue.put(server.port)
    port_queue.get()  # wait for "stop"
    server.stop()


def _fetch_psycopg(conninfo: str, query: str, binary: bool) -> tuple[float, int]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.cursor(binary=binary)
        start = time.perf_counter()
        cur.execute(query)
        n = len(cur.fetchall())
        return time.perf_counter() - start, n


def _fetch_raw(port: int, query: str) -> tuple[float, int]:
    """Server throughput alone: send a simple Query and read until ReadyForQuery, decoding
    nothing but the final CommandComplete ("SELECT n")."""
    sock = socket.create_connection(("127.0.0.1", port))
    body = struct.pack("!i", 196608) + b"user\0bench\0database\0bench\0\0"
    sock.sendall(struct.pack("!i", len(body) + 4) + body)
    ready = b"Z\0\0\0\x05I"

    def read_until_ready() -> bytes:
        tail = b""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            tail = (tail + chunk)[-64:]
            if tail.endswith(ready):
                return tail

    read_until_ready()
    q = query.encode() + b"\0"
    start = time.perf_counter()
    sock.sendall(b"Q" + struct.pack("!i", len(q) + 4) + q)
    tail = read_until_ready()
    elapsed = time.perf_counter() - start
    sock.close()
    return elapsed, int(tail[tail.rindex(b"SELECT ") + 7:tail.rindex(b"\0Z")])


def best(fn, repeat: int) -> tuple[float, int]:
    runs = [fn() for _ in range(repeat)]
    return min(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pg", default="host=127.0.0.1 port=5432 user=postgres dbname=test")
    ap.add_argument("--pin", action="store_true", help="server on CPU 0, this client on CPU 1")
    ap.add_argument("--path", choices=["rows", "arrow", "both"], default="both",
                    help="the backend hands out rows (fetchmany) or Arrow batches (columnar encoding)")
    args = ap.parse_args()
    if args.pin:
        os.sched_setaffinity(0, {1})

    ctx = mp.get_context("spawn")
    query, pg_query = QUERY.format(n=args.rows), PG_QUERY.format(last=args.rows - 1)
    paths = ["rows", "arrow"] if args.path == "both" else [args.path]
    servers = {}
    for path in paths:
        queue = ctx.Queue()
        proc = ctx.Process(target=_serve, args=(queue, 0 if args.pin else None, path == "arrow"), daemon=True)
        proc.start()
        servers[path] = (queue, proc, queue.get(timeout=60))
    try:
        results, raw = {}, {}
        for binary in (False, True):
            fmt = "binary" if binary else "text"
            t_pg, n2 = best(lambda: _fetch_psycopg(args.pg, pg_query, binary), args.repeat)
            for path, (_, _, port) in servers.items():
                ours = f"host=127.0.0.1 port={port} user=bench dbname=bench"
                t_ours, n1 = best(lambda: _fetch_psycopg(ours, query, binary), args.repeat)
                assert n1 == n2 == args.rows, (n1, n2)
                results[path, fmt] = (args.rows / t_ours, args.rows / t_pg)
        for path, (_, _, port) in servers.items():
            t_raw, n = best(lambda: _fetch_raw(port, query), args.repeat)
            assert n == args.rows
            raw[path] = args.rows / t_raw
    finally:
        for queue, proc, _ in servers.values():
            queue.put("stop")
            proc.join(30)

    import duckdb

    pinned = " (server pinned to one core)" if args.pin else ""
    print(f"{args.rows:,} rows x 3 columns (int8, int8, text), best of {args.repeat}{pinned}, "
          f"psycopg {psycopg.__version__}, DuckDB {duckdb.__version__}")
    for (path, fmt), (ours_rate, pg_rate) in results.items():
        print(f"  {path:5} psycopg {fmt:6}: pgwire {ours_rate:>12,.0f} rows/s   postgresql {pg_rate:>12,.0f} rows/s"
              f"   ratio {ours_rate / pg_rate:.2f}")
    for path, rate in raw.items():
        print(f"  {path:5} server alone (raw reader, text): pgwire {rate:,.0f} rows/s")
    print(f"  load average {os.getloadavg()[0]:.1f} at the end of the run")


if __name__ == "__main__":
    main()
