"""Compiler benchmark: cold and cached compile_query, YAML load, and the CLI end to end.

    /tmp/venv/bin/python bench/bench_compile.py            # full run (~1-2 min on 2 cores)
    /tmp/venv/bin/python bench/bench_compile.py --quick    # fewer iterations

Per mission query (bench/mission.py), timing compile_query only:
  cold, cleared cache: the same SemanticModel with model.compile_cache cleared before each call;
  cold, fresh model:   a newly loaded SemanticModel each call (loading is outside the timing);
                       then a gc.collect() (untimed), so that a collection of the load's
                       garbage does not land in the compile's timing (the load and the
                       collection leave the CPU caches cold: this is the slower of the two);
  cached, same object: the same SemanticQuery object, compiled again (a cache hit);
  cached, equal query: an equal but newly built SemanticQuery each call (hash + equality of a
                       new key; the objects are built before the timing).
Then `metrics-layer compile ...` run by subprocess with the venv's console script (p50 of N
runs per query): interpreter start, imports, YAML load and compile. Alongside the wall-clock
times: CPU time (the thread's, and the child's user + system for the CLI), which waiting for a
core on a busy machine does not inflate.

Targets: cached p50 < 50 us, cold p50 < 2 ms, CLI p50 < 0.5 s. Prints a markdown table and
writes bench/results/compile.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mission import MISSIONS, REPO

import sqlglot

from metrics_layer.compile import compile_query
from metrics_layer.model import load_model

METRICS_DIR = REPO / "metrics"
RESULTS = REPO / "bench" / "results"
TARGET_CACHED_US = 50
TARGET_COLD_MS = 2
TARGET_CLI_S = 0.5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(calls) -> list[float]:
    """Wall seconds taken by each call of an iterable of zero-argument callables."""
    out = []
    clock = time.perf_counter
    for call in calls:
        t0 = clock()
        call()
        out.append(clock() - t0)
    return out


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "sqlglot": sqlglot.__version__,
    }


def cli_path() -> str:
    script = Path(sys.executable).parent / "metrics-layer"
    if not script.exists():
        sys.exit(f"no console script at {script}; pip install -e . into this venv")
    return str(script)


def cli_env() -> dict:
    """The environment a user runs the CLI in: bytecode caching on (PYTHONDONTWRITEBYTECODE, set
    in some shells and CI images, would recompile every module of an editable install on each
    run: ~60 ms of CPU that an installed wheel, compiled at install, never spends)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_cli(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=cli_env())
    if done.returncode != 0 or not done.stdout.startswith("SELECT"):
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--dialect", default="duckdb")
    args = parser.parse_args()
    cached_n, cold_n, cli_n = (200, 50, 3) if args.quick else (2000, 300, 10)
    dialect = args.dialect

    # YAML load of the demo project (once warm, then timed).
    load_model(METRICS_DIR)
    load_times = timed([lambda: load_model(METRICS_DIR)] * (5 if args.quick else 30))
    first = load_model(METRICS_DIR)

    rows = []
    for mission in MISSIONS:
        query = mission.query()
        model = load_model(METRICS_DIR)
        sql = compile_query(model, query, dialect)  # warm imports and the dialect's generator

        cold, cold_cpu = [], []
        gc.collect()
        for _ in range(cold_n):
            model.compile_cache.clear()
            c0 = time.thread_time()
            t0 = time.perf_counter()
            compile_query(model, query, dialect)
            cold.append(time.perf_counter() - t0)
            cold_cpu.append(time.thread_time() - c0)

        fresh, fresh_cpu = [], []
        for _ in range(cold_n):
            fresh_model = load_model(METRICS_DIR)
            gc.collect()  # the garbage of the load (and of the previous model) is not the compile's
            c0 = time.thread_time()
            t0 = time.perf_counter()
            compile_query(fresh_model, query, dialect)
            fresh.append(time.perf_counter() - t0)
            fresh_cpu.append(time.thread_time() - c0)

        compile_query(first, query, dialect)
        gc.collect()
        same = timed([lambda q=query: compile_query(first, q, dialect)] * cached_n)
        equal_queries = [mission.query() for _ in range(cached_n)]
        gc.collect()
        equal = timed([lambda q=q: compile_query(first, q, dialect) for q in equal_queries])
        build = timed([mission.query] * cached_n)
        rows.append({
            "key": mission.key,
            "title": mission.title,
            "sql_chars": len(sql),
            "cold_cleared_ms": [percentile(cold, 0.5) * 1e3, percentile(cold, 0.95) * 1e3],
            "cold_fresh_model_ms": [percentile(fresh, 0.5) * 1e3, percentile(fresh, 0.95) * 1e3],
            "cold_cpu_p50_ms": [percentile(cold_cpu, 0.5) * 1e3, percentile(fresh_cpu, 0.5) * 1e3],
            "cached_same_us": [percentile(same, 0.5) * 1e6, percentile(same, 0.95) * 1e6],
            "cached_equal_us": [percentile(equal, 0.5) * 1e6, percentile(equal, 0.95) * 1e6],
            "query_build_us": percentile(build, 0.5) * 1e6,
        })
        print(f"  {mission.key}: compiled ({len(sql)} chars)", file=sys.stderr)

    cli = cli_path()
    for row, mission in zip(rows, MISSIONS):
        argv = [cli, *mission.cli_args()]
        run_cli(argv)  # warm the OS file cache
        times, cpu = [], []
        for _ in range(cli_n):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            run_cli(argv)
            times.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        row["cli_s"] = statistics.median(times)
        row["cli_cpu_s"] = statistics.median(cpu)

    result = {
        "machine": machine(),
        "dialect": dialect,
        "iterations": {"cached": cached_n, "cold": cold_n, "cli": cli_n},
        "yaml_load_ms": [percentile(load_times, 0.5) * 1e3, percentile(load_times, 0.95) * 1e3],
        "queries": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compile.json").write_text(json.dumps(result, indent=2))
    print(render(result))
    missed = [
        f"{r['key']}: {what}" for r in rows for what, bad in (
            ("cached p50", max(r["cached_same_us"][0], r["cached_equal_us"][0]) >= TARGET_CACHED_US),
            ("cold p50", max(r["cold_cleared_ms"][0], r["cold_fresh_model_ms"][0]) >= TARGET_COLD_MS),
            ("CLI p50", r["cli_s"] >= TARGET_CLI_S),
        ) if bad
    ]
    print("\nTargets (cached p50 < 50 us, cold p50 < 2 ms, CLI p50 < 0.5 s): "
          + ("all met" if not missed else "MISSED: " + ", ".join(missed)))
    return 1 if missed else 0


def render(result: dict) -> str:
    m = result["machine"]
    n = result["iterations"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, load average {', '.join(f'{x:.2f}' for x in m['load_average'])}; "
        f"Python {m['python']}, sqlglot {m['sqlglot']}; dialect {result['dialect']}.",
        f"YAML load of the demo project (2 files): p50 {result['yaml_load_ms'][0]:.1f} ms, "
        f"p95 {result['yaml_load_ms'][1]:.1f} ms.",
        f"Iterations: cold {n['cold']}, cached {n['cached']}, CLI {n['cli']} (p50 = median, p95 = 95th percentile). "
        "Times are wall clock; CPU is the thread's CPU time (the CLI's: the child's user + system), "
        "which waiting for a busy core does not inflate.",
        "",
        "| query | cold p50 / p95 (cleared cache) | cold p50 / p95 (fresh model) | cold CPU p50 (cleared / fresh) "
        "| cached p50 / p95 (same query) | cached p50 / p95 (equal new query) | CLI `metrics-layer compile` p50 "
        "(CPU) | SQL chars |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["queries"]:
        lines.append(
            f"| ({r['key']}) {r['title']} "
            f"| {r['cold_cleared_ms'][0]:.2f} / {r['cold_cleared_ms'][1]:.2f} ms "
            f"| {r['cold_fresh_model_ms'][0]:.2f} / {r['cold_fresh_model_ms'][1]:.2f} ms "
            f"| {r['cold_cpu_p50_ms'][0]:.2f} / {r['cold_cpu_p50_ms'][1]:.2f} ms "
            f"| {r['cached_same_us'][0]:.2f} / {r['cached_same_us'][1]:.2f} µs "
            f"| {r['cached_equal_us'][0]:.2f} / {r['cached_equal_us'][1]:.2f} µs "
            f"| {r['cli_s']:.3f} s ({r['cli_cpu_s']:.3f} s) | {r['sql_chars']:,} |"
        )
    build = statistics.median(r["query_build_us"] for r in result["queries"])
    lines.append("")
    lines.append(f"Building a SemanticQuery object (not in the cached figures): ~{build:.1f} µs.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
