"""Benchmark of the HTTP doors (GraphQL and REST) against running the same SQL on the engine.

    python bench/bench_http.py [--leads 100000] [--rounds 60] [--seconds 5] [--clients 16] [--write-docs]

For the mission queries (accuracy by model version per hour; fraud_loss by merchant category;
accuracy_3h as of a moment) it measures, in one run:

  * p50 / p95 latency through GraphQL and through REST, each as a ratio to executing the very
    SQL the server compiles (fetched from /api/v1/compile) directly on a DuckDB engine over a
    copy of the same data, in this process; the three are interleaved round by round so that
    noise from other processes hits them alike;
  * requests/s with N concurrent clients (threads, one keep-alive connection each), against
    the direct engine with the same number of threads;
  * start-up time of `metrics-layer serve` (process start to the first answer of /health),
    and its resident memory (VmRSS) at ready and after the warm-up and load.

The server is a real subprocess; clients are keep-alive http.client connections with
TCP_NODELAY (as curl and browsers set it) that also decode the JSON they receive.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from metrics_layer.demo_data import generate_duckdb  # noqa: E402
from metrics_layer.engines.duckdb_engine import DuckDBEngine  # noqa: E402

AS_OF = "2026-02-25T12:00:00"
QUERIES = {
    "accuracy by model version per hour": (
        "{ conversion_monitoring { model_version created_at { hour } accuracy } }",
        {"metrics": ["accuracy"], "dimensions": ["predictions.model_version", {"name": "leads.created_at", "grain": "hour"}]},
    ),
    "fraud_loss by merchant category": (
        "{ fraud_monitoring { merchant_category fraud_loss } }",
        {"metrics": ["fraud_loss"], "dimensions": ["transactions.merchant_category"]},
    ),
    "accuracy_3h as of a moment": (
        f'{{ conversion_monitoring(asOf: "{AS_OF}") {{ accuracy_3h }} }}',
        {"metrics": ["accuracy_3h"], "as_of": AS_OF},
    ),
}


class Client:
    """A lean keep-alive HTTP/1.1 client (http.client, TCP_NODELAY as curl and browsers set it),
    so that the figures show what the server adds rather than the cost of a Python client."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=60)
        self.connection.connect()
        self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, path: str, document) -> tuple[int, bytes]:
        body = json.dumps(document).encode()
        self.connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, response.read()

    def get(self, path: str) -> tuple[int, bytes]:
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.connection.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, project: Path):
        self.http_port, self.sql_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        t0 = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "metrics_layer.cli", "serve", "--project", str(project),
             "--http-port", str(self.http_port), "--sql-port", str(self.sql_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(REPO),
        )
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code in (200, 503):
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with {self.process.returncode}")
            if time.perf_counter() - t0 > 60:
                raise SystemExit("the server did not start within 60 s")
            time.sleep(0.005)
        self.startup = time.perf_counter() - t0
        self.rss_ready = rss_mb(self.process.pid)
        self.cpu_ready = cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: start-up cost independent of other load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latency(server: Server, engine: DuckDBEngine, rounds: int) -> list[dict]:
    rows = []
    c = Client(server.url)
    try:
        for name, (graphql, body) in QUERIES.items():
            sql = json.loads(_ok(c.post("/api/v1/compile", body)))["sql"]
            paths = {
                "direct": lambda: engine.execute(sql),
                "graphql": lambda: json.loads(_ok(c.post("/graphql", {"query": graphql}))),
                "rest": lambda: json.loads(_ok(c.post("/api/v1/query", body))),
            }
            for run in paths.values():  # warm-up: caches, cursors, the OS page cache
                for _ in range(5):
                    run()
            times: dict[str, list[float]] = {k: [] for k in paths}
            order = list(paths)
            for i in range(rounds):
                for key in order[i % 3:] + order[: i % 3]:
                    t0 = time.perf_counter()
                    paths[key]()
                    times[key].append(time.perf_counter() - t0)
            result_rows = len(engine.execute(sql).rows)
            direct50, direct95 = pct(times["direct"], 0.5), pct(times["direct"], 0.95)
            for door in ("graphql", "rest"):
                p50, p95 = pct(times[door], 0.5), pct(times[door], 0.95)
                rows.append({
                    "query": name, "door": door, "rows": result_rows,
                    "direct_p50": direct50 * 1000, "direct_p95": direct95 * 1000,
                    "p50": p50 * 1000, "p95": p95 * 1000, "added_p50": (p50 - direct50) * 1000,
                    "ratio_p50": p50 / direct50, "ratio_p95": p95 / direct95,
                })
    finally:
        c.close()
    return rows


def _ok(answer: tuple[int, bytes]) -> bytes:
    status, body = answer
    if status != 200 or b'"errors"' in body[:20]:
        raise SystemExit(f"request failed: {status} {body[:300]!r}")
    return body


def throughput(work, clients: int, seconds: float) -> float:
    """Requests per second of `work(state)` run by `clients` threads for `seconds`."""
    counts = [0] * clients
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        state: dict = {}
        try:
            while not stop.is_set():
                work(state, counts[i])
                counts[i] += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            if "client" in state:
                state["client"].close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"throughput run failed: {errors[0]!r}")
    return sum(counts) / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=60, help="latency samples per query and door")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each throughput run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--starts", type=int, default=3, help="server start-ups to time (median reported)")
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/http.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_http_"))
    try:
        print(f"generating {args.leads:,} leads ...", file=sys.stderr)
        db = work / "demo.duckdb"
        generate_duckdb(str(db), leads=args.leads, end=dt.datetime(2026, 3, 1), progress=None)
        baseline_db = work / "baseline.duckdb"
        shutil.copy(db, baseline_db)
        project = work / "project"
        shutil.copytree(REPO / "metrics", project / "metrics")
        # The result cache is off on both sides: this measures the doors over real execution
        # (bench_pgwire.py measures repeated queries with and without the cache).
        (project / "metrics_layer.yml").write_text(f"engine: duckdb:///{db}\nresult_cache: false\n")

        startups, startup_cpu = [], []
        for _ in range(max(args.starts - 1, 0)):
            server = Server(project)
            startups.append(server.startup)
            startup_cpu.append(server.cpu_ready)
            server.stop()
        server = Server(project)
        startups.append(server.startup)
        startup_cpu.append(server.cpu_ready)
        try:
            engine = DuckDBEngine(str(baseline_db), result_cache=False)
            print("latency ...", file=sys.stderr)
            rows = latency(server, engine, args.rounds)
            rss_warm = rss_mb(server.process.pid)
            print("throughput ...", file=sys.stderr)
            bodies = list(QUERIES.values())
            c = Client(server.url)
            sqls = [json.loads(_ok(c.post("/api/v1/compile", body)))["sql"] for _, body in bodies]
            c.close()

            def via_graphql(state, n):
                if "client" not in state:
                    state["client"] = Client(server.url)
                json.loads(_ok(state["client"].post("/graphql", {"query": bodies[n % 3][0]})))

            def via_rest(state, n):
                if "client" not in state:
                    state["client"] = Client(server.url)
                json.loads(_ok(state["client"].post("/api/v1/query", bodies[n % 3][1])))

            def direct(state, n):
                engine.execute(sqls[n % 3])

            # Three short slices per path, interleaved, so that load from elsewhere hits all alike.
            totals = {"direct": 0.0, "graphql": 0.0, "rest": 0.0}
            for _ in range(3):
                for key, work in (("direct", direct), ("graphql", via_graphql), ("rest", via_rest)):
                    totals[key] += throughput(work, args.clients, args.seconds / 3)
            rps = {key: total / 3 for key, total in totals.items()}
            rss_after = rss_mb(server.process.pid)
            peak = rss_mb(server.process.pid, "VmHWM")
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = render(args, rows, rps, startups, startup_cpu, server.rss_ready, rss_warm, rss_after, peak)
    print(report)
    if args.write_docs:
        write_docs(report)
    return 0


def render(args, rows, rps, startups, startup_cpu, rss_ready, rss_warm, rss_after, peak) -> str:
    cpu = os.cpu_count()
    load = os.getloadavg()[0]
    from metrics_layer import json_values

    encoder = "orjson" if json_values._orjson is not None else "the standard library's json"
    lines = [
        f"Run: {dt.date.today()}, {args.leads:,} leads (and transactions), DuckDB, {cpu} CPUs, "
        f"load average {load:.1f} at the end; {args.rounds} interleaved samples per query and door; "
        f"python {sys.version.split()[0]}; JSON written with {encoder}.",
        "",
        "| query | door | rows | direct p50 ms | door p50 ms | added p50 ms | p50 ratio | direct p95 ms | door p95 ms | p95 ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['query']} | {r['door']} | {r['rows']} | {r['direct_p50']:.2f} | {r['p50']:.2f} | {r['added_p50']:.2f} | "
            f"{r['ratio_p50']:.2f} | {r['direct_p95']:.2f} | {r['p95']:.2f} | {r['ratio_p95']:.2f} |"
        )
    lines += [
        "",
        f"| {args.clients} concurrent clients, mixed mission queries | requests/s | ratio to direct |",
        "|---|---:|---:|",
    ]
    for door in ("direct", "graphql", "rest"):
        lines.append(f"| {door} | {rps[door]:.0f} | {rps[door] / rps['direct']:.2f} |")
    lines += [
        "",
        "| server | value |",
        "|---|---:|",
        f"| start-up to ready (process start to first /health answer), median of {len(startups)} | "
        f"{statistics.median(startups):.2f} s (min {min(startups):.2f}, max {max(startups):.2f}) |",
        f"| CPU time of the server process at ready (user + system; what start-up costs without other load), median | "
        f"{statistics.median(startup_cpu):.2f} s |",
        f"| RSS at ready | {rss_ready:.0f} MB |",
        f"| RSS after warm-up (latency runs) | {rss_warm:.0f} MB |",
        f"| RSS after the concurrency runs (peak) | {rss_after:.0f} MB ({peak:.0f} MB) |",
    ]
    return "\n".join(lines)


def write_docs(report: str) -> None:
    path = REPO / "docs" / "http.md"
    text = path.read_text() if path.exists() else "# HTTP: GraphQL and REST\n"
    marker = "## Benchmarks"
    section = (
        f"{marker}\n\nMeasured by `python bench/bench_http.py --write-docs` (numbers from one run; "
        "the ratios are to the same SQL run directly on the engine in the same run, interleaved). "
        "\"direct\" is DuckDB in the benchmark's own process, on a copy of the same file. The load average "
        "says how busy the machine was with other work: on a busy machine wall-clock start-up grows and "
        "single runs vary by several ms, so the start-up CPU time is the steadier figure, and the "
        "requests/s compare doors that share two CPUs with their 16 client threads.\n\n" + report + "\n"
    )
    if marker in text:
        head, _, tail = text.partition(marker)
        rest = tail.split("\n## ", 1)
        text = head + section + ("\n## " + rest[1] if len(rest) > 1 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
