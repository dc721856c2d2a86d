"""Benchmark of online feature lookups: GET /api/features/merchant_features?key=.. (10 keys) on DuckDB.

    python bench/bench_online.py [--leads 100000] [--rounds 400] [--keys 10]

In one run, over the demo data at `--leads` (ending at the current hour, so the trailing 7
days hold rows), a real `metrics-layer serve` subprocess answers the same sequence of lookups
(each request 10 merchants drawn at random, so the result cache rarely answers) twice:

  * without a materialization (nothing deployed: the compiled query over the base tables);
  * after `metrics-layer deploy` (merchant_fraud_now is read, the response says so).

Each is reported as p50 / p99 client latency (keep-alive http.client, TCP_NODELAY, JSON
decoded), next to the same-run baseline: the very SQL the server ran (from the response),
executed directly on a DuckDB engine in this process for the same key sets. The first and last
answers of each run are checked against the base tables queried as of the moment they describe.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_http import Client, Server, pct  # noqa: E402
from metrics_layer.demo_data import generate_duckdb  # noqa: E402
from metrics_layer.engines.duckdb_engine import DuckDBEngine  # noqa: E402


def lookups(merchants: list[int], rounds: int, keys: int, seed: int = 11) -> list[list[int]]:
    rng = random.Random(seed)
    return [rng.sample(merchants, keys) for _ in range(rounds)]


def measure(server: Server, key_sets: list[list[int]]) -> tuple[list[float], list[dict]]:
    client = Client(server.url)
    times, documents = [], []
    try:
        for keys in key_sets[:20]:  # warm-up: imports, the first compile, the file's pages
            client.get("/api/features/merchant_features?" + urlencode([("key", k) for k in keys]))
        for keys in key_sets:
            t0 = time.perf_counter()
            status, body = client.get("/api/features/merchant_features?" + urlencode([("key", k) for k in keys]))
            document = json.loads(body)
            times.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise SystemExit(f"lookup failed: {status} {body[:300]!r}")
            documents.append(document)
    finally:
        client.close()
    return times, documents


def direct(engine: DuckDBEngine, documents: list[dict]) -> list[float]:
    """The SQL each answer says it ran, executed directly (same key sets, same order)."""
    for document in documents[:20]:
        engine.execute(document["sql"])
    times = []
    for document in documents:
        t0 = time.perf_counter()
        engine.execute(document["sql"])
        times.append((time.perf_counter() - t0) * 1000)
    return times


def check(path: Path, work: Path, documents: list[dict]) -> None:
    """Each answer equals the metric over the base tables as of the moment it describes (the
    materialization's refresh, or when the query ran): windows end at that moment."""
    from metrics_layer.project import load_project
    from metrics_layer.query import Filter, SemanticQuery, parse_timestamp
    from metrics_layer.service import MetricsService

    base = work / "base"
    base.mkdir(exist_ok=True)
    if not (base / "metrics").exists():
        (base / "metrics").symlink_to(REPO / "metrics")
    (base / "metrics_layer.yml").write_text(f"engine: duckdb:///{path}\nresult_cache: false\ndeploy:\n  route: false\n")
    service = MetricsService(load_project(str(base)))
    try:
        for document in documents:
            freshness = document["freshness"]
            moment = parse_timestamp(freshness.get("refreshed_at") or freshness["computed_at"], "moment")
            for row in document["rows"]:
                query = SemanticQuery(("merchant_fraud_rate_7d",), filters=(Filter("transactions.merchant", "=", row["key"]),),
                                      as_of=moment)
                want, got = service.run(query).rows[0][0], row["values"]["merchant_fraud_rate_7d"]
                if (want is None) != (got is None) or (want is not None and abs(want - got) > 1e-12):
                    raise SystemExit(f"merchant {row['key']} ({document['source']}): {got} != {want} as of {moment}")
    finally:
        service.engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--keys", type=int, default=10)
    args = parser.parse_args()

    import duckdb
    import sqlglot

    work = Path(tempfile.mkdtemp(prefix="bench-online-"))
    path = work / "demo.duckdb"
    # Data up to the current hour (no row after now), so the trailing 7 days hold rows.
    end = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    generate_duckdb(str(path), leads=args.leads, end=end, progress=None)
    project = work / "project"
    project.mkdir()
    (project / "metrics").symlink_to(REPO / "metrics")
    (project / "metrics_layer.yml").write_text(f"engine: duckdb:///{path}\n")
    con = duckdb.connect(str(path), read_only=True)
    merchants = [r[0] for r in con.execute("SELECT DISTINCT merchant_id FROM transactions ORDER BY 1").fetchall()]
    con.close()
    key_sets = lookups(merchants, args.rounds, args.keys)
    load = os.getloadavg()[0]

    results = {}
    for label in ("without materialization", "with materialization"):
        if label == "with materialization":
            done = subprocess.run([sys.executable, "-m", "metrics_layer.cli", "deploy", "--project", str(project)],
                                  capture_output=True, text=True, cwd=str(REPO))
            if done.returncode != 0:
                raise SystemExit(f"deploy failed: {done.stderr}")
        server = Server(project)
        try:
            times, documents = measure(server, key_sets)
        finally:
            server.stop()
        sources = {d["source"] for d in documents}
        engine = DuckDBEngine(str(path), read_only=True, result_cache=False)
        try:
            baseline = direct(engine, documents)
        finally:
            engine.close()
        results[label] = (times, baseline, sources, documents)

    check(path, work, [results[label][3][i] for label in results for i in (0, -1)])
    print(f"online lookups of {args.keys} merchants, {args.rounds} requests each, DuckDB, {args.leads:,} leads/transactions; "
          f"first and last answers of both runs equal to the base tables queried as of their moment")
    print(f"duckdb {duckdb.__version__}, sqlglot {sqlglot.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} cores, load average {load:.1f} at start")
    print()
    print("| read from | source in the response | REST p50 | REST p99 | direct SQL p50 | direct SQL p99 | REST / direct (p50) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for label, (times, baseline, sources, _) in results.items():
        print(f"| {label} | {', '.join(sorted(sources))} | {pct(times, 0.5):.2f} ms | {pct(times, 0.99):.2f} ms | "
              f"{pct(baseline, 0.5):.2f} ms | {pct(baseline, 0.99):.2f} ms | {pct(times, 0.5) / pct(baseline, 0.5):.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
