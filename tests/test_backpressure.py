"""Back-pressure with bounded memory over the real SQL endpoint (a server process of its own).

Clients ask for a 1M-row result and do not read it: the server must stop fetching from the
engine once their sockets are full, and hold a bounded amount per connection (not the result).
Then the clients read everything (every row arrives) and the server still answers.
Measured: the server process's resident memory (/proc), never a duration.

Results come ordered by their dimensions (docs/sql.md): over DuckDB, in-process, that ORDER BY is
a sort DuckDB holds in the server's memory whoever reads. The DuckDB test therefore measures
first what DuckDB alone holds for the same number of open sorted results (hand-written SQL, in a
process of its own), and allows the server that plus a bounded amount per connection.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from conftest import PG_URL, REPO, postgres_or_skip

ROWS = 1_000_000
SCHEMA = "ml_wire_backpressure"

MODEL = """
models:
  - name: big
    table: big
    entities: [{name: big_row, type: primary, expr: id}]
    dimensions:
      - {name: id, type: number}
      - {name: name}
      - {name: created_at, type: time}
views:
  - name: big_view
    dimensions: [big.id, big.name, big.created_at]
"""

# The SQL endpoint alone, in a process of its own (serve_until_stdin_closes: prints its port).
SERVER = [sys.executable, "-m", "metrics_layer.serve.pgwire.endpoint"]

QUERY = "SELECT id, name, created_at FROM big_view"
READY = b"Z\0\0\0\x05I"


def _start(folder: Path, engine_url: str):
    (folder / "metrics").mkdir(parents=True, exist_ok=True)
    (folder / "metrics" / "big.yml").write_text(MODEL)
    (folder / "metrics_layer.yml").write_text(f"engine: {engine_url}\n")
    process = subprocess.Popen([*SERVER, str(folder)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    line = process.stdout.readline()
    assert line.strip().isdigit(), f"the server did not start: {line!r}"
    return process, int(line)


def _stop(process) -> None:
    process.stdin.close()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)


def _rss(pid: int) -> int:
    """Resident memory of a process, bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_idle(pid: int, polls: int = 600) -> None:
    """Until the server stops working (every client's socket full, or everything buffered):
    three quiet polls in a row; `polls` (half a second each) only bounds a hang."""
    quiet, last = 0, _cpu(pid)
    for _ in range(polls):
        time.sleep(0.5)
        now = _cpu(pid)
        quiet = quiet + 1 if now - last < 0.02 else 0
        last = now
        if quiet >= 3:
            return
    pytest.fail(f"the server was still using CPU after {polls} polls")


def _client(port: int) -> socket.socket:
    """A raw protocol client, logged in (trust on loopback), with a small receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(300)  # against hangs only
    sock.connect(("127.0.0.1", port))
    body = struct.pack("!i", 196608) + b"user\0bp\0database\0metrics\0\0"
    sock.sendall(struct.pack("!i", len(body) + 4) + body)
    _read_until_ready(sock)
    return sock


def _read_until_ready(sock: socket.socket) -> bytes:
    """Read and discard until ReadyForQuery; the last bytes read (CommandComplete is there)."""
    tail = b""
    while True:
        chunk = sock.recv(1 << 20)
        assert chunk, "the server closed the connection"
        tail = (tail + chunk)[-256:]
        if tail.endswith(READY):
            return tail


def _query(sock: socket.socket, sql: str) -> None:
    q = sql.encode() + b"\0"
    sock.sendall(b"Q" + struct.pack("!i", len(q) + 4) + q)


def _rows_sent(tail: bytes) -> int:
    assert b"E\0" not in tail[-64:], tail
    return int(tail[tail.rindex(b"SELECT ") + 7:tail.rindex(b"\0Z")])


ENGINE_ALONE = """
import sys, time, duckdb
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("SET TimeZone = 'UTC'")
sql = ("SELECT id, name, CAST(created_at AS TEXT) FROM "
       "(SELECT id, name, created_at FROM big ORDER BY id, name, created_at) AS sorted")
warm = con.cursor().sql(sql).to_arrow_reader(16384)
for _ in warm:
    pass
time.sleep(1)
before, open_ = rss(), []
for _ in range(int(sys.argv[2])):
    cur = con.cursor()
    reader = cur.sql(sql).to_arrow_reader(16384)
    reader.read_next_batch()
    open_.append((cur, reader))
time.sleep(1)
print(rss() - before)
"""


def _engine_alone(path: Path, results: int) -> int:
    """Memory DuckDB alone holds for `results` open sorted 1M-row results (one batch read)."""
    out = subprocess.run([sys.executable, "-c", ENGINE_ALONE, str(path), str(results)], capture_output=True,
                         text=True, timeout=600, check=True)
    return int(out.stdout.split()[-1])


def _check(port: int, pid: int, clients: int, bound: int) -> None:
    warm = _client(port)  # warm up: one full read (pools, encoders, the engine's caches)
    _query(warm, QUERY)
    assert _rows_sent(_read_until_ready(warm)) == ROWS
    _wait_idle(pid)
    before = _rss(pid)
    socks = [_client(port) for _ in range(clients)]
    for sock in socks:
        _query(sock, QUERY)
    _wait_idle(pid)
    grown = _rss(pid) - before
    assert grown < bound, (f"{clients} clients not reading made the server grow by {grown / 1e6:.0f} MB "
                           f"(allowed {bound / 1e6:.0f} MB)")
    # the clients read now: everything arrives; one more closes without reading
    for sock in socks[:-1]:
        assert _rows_sent(_read_until_ready(sock)) == ROWS
        sock.close()
    socks[-1].close()
    # the server is healthy: a new query on the same and a new connection
    _query(warm, "SELECT id FROM big_view ORDER BY id LIMIT 3")
    assert _rows_sent(_read_until_ready(warm)) == 3
    warm.close()
    with psycopg.connect(f"host=127.0.0.1 port={port} user=bp dbname=metrics", autocommit=True) as conn:
        assert conn.execute("SELECT id FROM big_view ORDER BY id LIMIT 3").fetchall() == [(0,), (1,), (2,)]


def test_clients_that_do_not_read_hold_bounded_memory_duckdb(tmp_path):
    import duckdb

    path = tmp_path / "big.duckdb"
    con = duckdb.connect(str(path))
    con.execute(f"CREATE TABLE big AS SELECT i AS id, 'row ' || i AS name, "
                f"TIMESTAMP '2020-01-01' + INTERVAL (i) SECOND AS created_at FROM range({ROWS}) t(i)")
    con.close()
    engine = _engine_alone(path, 10)
    process, port = _start(tmp_path / "project", f"duckdb:///{path}")
    try:
        _check(port, process.pid, clients=10, bound=engine + 250_000_000)
    finally:
        _stop(process)


def test_clients_that_do_not_read_hold_bounded_memory_postgres(tmp_path):
    url = postgres_or_skip(PG_URL)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(f"CREATE TABLE {SCHEMA}.big AS SELECT i::bigint AS id, 'row ' || i AS name, "
                     f"TIMESTAMP '2020-01-01' + i * INTERVAL '1 second' AS created_at "
                     f"FROM generate_series(0, {ROWS - 1}) i")
    sep = "&" if "?" in url else "?"
    process, port = _start(tmp_path / "project", f"{url}{sep}options=-csearch_path%3D{SCHEMA}")
    try:
        _check(port, process.pid, clients=2, bound=60_000_000)
    finally:
        _stop(process)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
