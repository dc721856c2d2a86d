"""Load test: many clients at once over the SQL endpoint and over GraphQL/REST (issue 13).

    python bench/bench_load.py [--leads 100000] [--clients 50] [--queries 200] [--rounds 3] [--quick]

Starts a real `metrics-layer serve` subprocess on a demo DuckDB (the SQL endpoint in trust mode
on loopback), then for each round runs `--clients` client threads x `--queries` queries over
the SQL endpoint (psycopg, one connection per client), then the same over HTTP (httpx, one
keep-alive connection per client, GraphQL and REST alternating). The mix per door: semantic
queries, catalog queries (SQL) or the catalog/health endpoints (HTTP), and parameterised
queries (psycopg parameters, GraphQL variables, REST filter values) over a set of values.

First, the same mix from one client alone (the same-run baseline for the p50 ratio). Reported
per round and door: queries, errors, wrong answers (an answer that differs from the
first answer to the same query and parameters: the data does not change during the run),
p50 / p99 latency, queries/s, and the server's resident memory (VmRSS) after the round. The
run fails (exit 1) on any error or wrong answer, or when RSS after the last round is more than
10 % above RSS after the one before (growth under a steady load).

`--quick`: 10 clients x 20 queries, 3 rounds, 20k leads (a smoke run, about half a minute).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
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
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from metrics_layer.demo_data import generate_duckdb  # noqa: E402

SOURCES = ["google", "newsletter", "facebook", "direct", "partner", "nowhere"]
CATEGORIES = ["grocery", "electronics", "travel", "fashion", "gaming", "none-such"]

SQL_SEMANTIC = [
    "SELECT model_version, accuracy, precision FROM conversion_monitoring GROUP BY 1 ORDER BY 1",
    "SELECT merchant_category, fraud_loss FROM fraud_monitoring GROUP BY 1 ORDER BY 1",
    "SELECT utm_source, lead_count FROM conversion_monitoring GROUP BY 1 ORDER BY 1",
]
SQL_CATALOG = [
    "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = 'public' ORDER BY 1",
    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'conversion_monitoring' ORDER BY ordinal_position",
    "SELECT version()",
]
SQL_PARAM = [
    ("SELECT lead_count, accuracy FROM conversion_monitoring WHERE utm_source = %s", SOURCES),
    ("SELECT fraud_loss FROM fraud_monitoring WHERE merchant_category = %s", CATEGORIES),
]
GQL_SEMANTIC = [
    "{ conversion_monitoring { model_version accuracy precision } }",
    "{ fraud_monitoring { merchant_category fraud_loss } }",
]
GQL_PARAM = ("query($s: [String!]) { conversion_monitoring(where: {utm_source: {in: $s}}) { utm_source lead_count accuracy } }",
             SOURCES)
REST_SEMANTIC = [{"metrics": ["leads.lead_count", "accuracy"], "dimensions": ["leads.utm_source"]}]
REST_PARAM = ({"metrics": ["fraud_loss"], "dimensions": ["transactions.merchant_category"]}, CATEGORIES)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, project: Path):
        self.http_port, self.sql_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "metrics_layer.cli", "serve", "--project", str(project),
             "--http-port", str(self.http_port), "--sql-port", str(self.sql_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(REPO))
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                        conn.execute("SELECT 1")
                    break
            except (httpx.TransportError, psycopg.OperationalError):
                pass
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start within 120 s")
            time.sleep(0.2)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.sql_port} user=bench dbname=metrics"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.wrong: list[str] = []
        self.answers: dict[str, str] = {}  # query + parameters -> first answer

    def record(self, key: str, seconds: float, answer: str | None, error: str | None) -> None:
        with self.lock:
            self.latencies.append(seconds)
            if error is not None:
                self.errors.append(f"{key}: {error}"[:300])
                return
            first = self.answers.setdefault(key, answer)
            if first != answer:
                self.wrong.append(key)


def sql_client(server: Server, tally: Tally, queries: int, seed: int, answers: dict) -> None:
    rng = random.Random(seed)
    with psycopg.connect(server.dsn, autocommit=True, connect_timeout=60) as conn:
        for i in range(queries):
            kind = i % 3
            if kind == 0:
                sql, params = rng.choice(SQL_SEMANTIC), None
            elif kind == 1:
                sql, params = rng.choice(SQL_CATALOG), None
            else:
                sql, values = rng.choice(SQL_PARAM)
                params = [rng.choice(values)]
            key = f"sql {sql} {params}"
            t0 = time.perf_counter()
            try:
                rows = conn.execute(sql, params).fetchall()
                answer, error = repr(rows), None
            except psycopg.Error as e:
                answer, error = None, f"{e.sqlstate}: {e}"
            tally.record(key, time.perf_counter() - t0, answer, error)


def http_client(server: Server, tally: Tally, queries: int, seed: int, answers: dict) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for i in range(queries):
            kind = i % 5
            if kind == 0:
                method, path, body = "POST", "/graphql", {"query": rng.choice(GQL_SEMANTIC)}
            elif kind == 1:
                query, values = GQL_PARAM
                method, path, body = "POST", "/graphql", {"query": query, "variables": {"s": rng.sample(values, 2)}}
            elif kind == 2:
                method, path, body = "POST", "/api/v1/query", rng.choice(REST_SEMANTIC)
            elif kind == 3:
                template, values = REST_PARAM
                body = {**template, "filters": [{"field": "transactions.merchant_category", "op": "in",
                                                 "value": rng.sample(values, 2)}]}
                method, path = "POST", "/api/v1/query"
            else:
                method, path, body = "GET", "/api/v1/catalog", None
            key = f"http {path} {json.dumps(body, sort_keys=True)}"
            t0 = time.perf_counter()
            try:
                response = client.request(method, path, json=body)
                document = response.json()
                if response.status_code != 200 or (path == "/graphql" and document.get("errors")):
                    answer, error = None, f"{response.status_code}: {response.text[:200]}"
                else:
                    if path == "/api/v1/query":
                        document = document.get("rows")  # without timing fields
                    answer, error = json.dumps(document, sort_keys=True), None
            except (httpx.HTTPError, ValueError) as e:
                answer, error = None, f"{type(e).__name__}: {e}"
            tally.record(key, time.perf_counter() - t0, answer, error)


def run_door(server: Server, worker, clients: int, queries: int, round_no: int, answers: dict) -> dict:
    tally = Tally()
    tally.answers = answers  # shared across rounds: round 3 must agree with round 1
    threads = [threading.Thread(target=worker, args=(server, tally, queries, round_no * 1000 + i, answers))
               for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    lat = sorted(tally.latencies)
    return {
        "queries": len(lat), "errors": len(tally.errors), "wrong": len(tally.wrong),
        "p50_ms": statistics.median(lat) * 1000, "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "qps": len(lat) / elapsed, "first_errors": tally.errors[:3], "first_wrong": tally.wrong[:3],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--queries", type=int, default=200, help="queries per client per door per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10 clients x 20 queries, 20k leads")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.queries, args.leads = 10, 20, 20_000
    work = Path(tempfile.mkdtemp(prefix="bench_load_"))
    try:
        db = work / "demo.duckdb"
        generate_duckdb(str(db), leads=args.leads, progress=lambda _: None)
        project = work / "project"
        project.mkdir()
        shutil.copytree(REPO / "metrics", project / "metrics")
        (project / "metrics_layer.yml").write_text(f"engine: duckdb:///{db}\nsql:\n  auth: trust\n")
        server = Server(project)
        try:
            print(f"# bench_load {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {args.leads} leads, "
                  f"{args.clients} clients x {args.queries} queries per door per round, load {os.getloadavg()[0]:.1f}")
            print(f"RSS at ready: {rss_mb(server.process.pid):.0f} MB")
            import duckdb
            import sqlglot

            print(f"Python {sys.version.split()[0]}, sqlglot {sqlglot.__version__}, DuckDB {duckdb.__version__}, "
                  f"psycopg {psycopg.__version__}, httpx {httpx.__version__}, {os.cpu_count()} CPUs")
            print("| round | door | queries | errors | wrong | p50 ms (x 1-client p50) | p99 ms | queries/s | server RSS after, MB | load |")
            print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            failed = False
            rss = []
            answers: dict[str, dict] = {"sql": {}, "http": {}}
            baseline = {}
            for door, worker in (("SQL endpoint", sql_client), ("GraphQL/REST", http_client)):
                # The same-run baseline: the same mix from one client alone.
                r = run_door(server, worker, 1, args.queries, 0, answers["sql" if worker is sql_client else "http"])
                baseline[door] = r["p50_ms"]
                print(f"| baseline | {door}, 1 client | {r['queries']} | {r['errors']} | {r['wrong']} | {r['p50_ms']:.1f} | "
                      f"{r['p99_ms']:.1f} | {r['qps']:.0f} | {rss_mb(server.process.pid):.0f} | {os.getloadavg()[0]:.1f} |", flush=True)
                failed |= bool(r["errors"] or r["wrong"])
            for round_no in range(1, args.rounds + 1):
                for door, worker in (("SQL endpoint", sql_client), ("GraphQL/REST", http_client)):
                    r = run_door(server, worker, args.clients, args.queries, round_no, answers["sql" if worker is sql_client else "http"])
                    mem = rss_mb(server.process.pid)
                    print(f"| {round_no} | {door} | {r['queries']} | {r['errors']} | {r['wrong']} | {r['p50_ms']:.1f} "
                          f"({r['p50_ms'] / baseline[door]:.1f}x) | {r['p99_ms']:.1f} | {r['qps']:.0f} | {mem:.0f} | "
                          f"{os.getloadavg()[0]:.1f} |", flush=True)
                    for line in r["first_errors"] + r["first_wrong"]:
                        print(f"    {line}")
                    failed |= bool(r["errors"] or r["wrong"])
                rss.append(mem)
            growth = (rss[-1] - rss[-2]) / rss[-2] * 100 if len(rss) >= 2 else 0.0
            print(f"RSS after each round: {', '.join(f'{m:.0f}' for m in rss)} MB; last round vs the one before: {growth:+.1f} %")
            if growth > 10:
                print("FAIL: server memory grew more than 10 % between the last two rounds")
                failed = True
            return 1 if failed else 0
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
