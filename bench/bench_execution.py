"""Execution benchmark: compiled SQL vs hand-written SQL on the same engine and data.

    /tmp/venv/bin/python bench/bench_execution.py                     # DuckDB, 1M leads
    /tmp/venv/bin/python bench/bench_execution.py --postgres          # + PostgreSQL, 200k leads
    /tmp/venv/bin/python bench/bench_execution.py --runs 9 --only d

DuckDB: the demo data (metrics_layer.demo_data, 1,000,000 leads and as many transactions,
seed 42, ending 2026-03-01) is written once to bench/results/ and reused while its parameters
match. For each mission query (bench/mission.py) three SQL texts run on one connection:

  compiled:     compile_query(model, query, "duckdb");
  reference:    the hand-written SQL of tests/reference.py (portable; COUNT(DISTINCT ...));
  hand-tuned:   bench/handwritten.py (DuckDB idiom: QUALIFY, COUNT(*) FILTER).

First the results are checked equal (rows sorted, floats to 1e-9 relative); a difference stops
the run and shows the rows. Then one warm-up run each, then --runs rounds interleaved
(compiled, reference, hand-tuned, compiled, ...), and the medians and ratios are reported.

PostgreSQL (--postgres [URL], default the tests' postgresql://postgres@127.0.0.1:5432/test):
the same data at --pg-leads into schema `bench` (reused while its parameters match), compiled
"postgres" SQL vs tests/reference.py only.

Prints markdown tables and writes bench/results/execution.json.
"""

from __future__ import annotations

import argparse
import decimal
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from mission import AS_OF, DATA_END, MISSIONS, REPO, reference_sql

import duckdb

import handwritten
from metrics_layer.compile import compile_query
from metrics_layer.engines import connect
from metrics_layer.model import load_model

RESULTS = REPO / "bench" / "results"
TARGET_RATIO = 1.2
DEFAULT_PG = os.environ.get("METRICS_LAYER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PG_SCHEMA = "bench"


# ---- data ---------------------------------------------------------------------------------

def duckdb_data(leads: int, seed: int, regenerate: bool) -> Path:
    """The demo data file for these parameters, generated unless a matching one exists."""
    from metrics_layer.demo_data import generate_duckdb

    params = {"leads": leads, "seed": seed, "end": DATA_END.isoformat()}
    path = RESULTS / f"demo-{leads}-seed{seed}-{DATA_END:%Y%m%d}.duckdb"
    stamp = path.with_name(path.name + ".json")
    if not regenerate and path.exists() and stamp.exists() and json.loads(stamp.read_text()) == params:
        print(f"data: reusing {path.relative_to(REPO)}", file=sys.stderr)
        return path
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    print(f"data: generating {path.relative_to(REPO)} ({leads:,} leads) ...", file=sys.stderr)
    generate_duckdb(str(path), leads=leads, seed=seed, end=DATA_END, progress=lambda m: print(m, file=sys.stderr))
    stamp.write_text(json.dumps(params))
    return path


def postgres_data(url: str, leads: int, seed: int, regenerate: bool) -> str:
    """The URL of schema `bench` holding the demo data for these parameters."""
    import psycopg

    from metrics_layer.demo_data import generate_postgres

    params = json.dumps({"leads": leads, "seed": seed, "end": DATA_END.isoformat()})
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s", (PG_SCHEMA,)
        ).fetchone()
    if regenerate or row is None or row[0] != params:
        print(f"data: generating PostgreSQL schema {PG_SCHEMA} ({leads:,} leads) ...", file=sys.stderr)
        generate_postgres(url, leads=leads, seed=seed, end=DATA_END, schema=PG_SCHEMA,
                          progress=lambda m: print(m, file=sys.stderr))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"COMMENT ON SCHEMA {PG_SCHEMA} IS '{params}'")
    else:
        print(f"data: reusing PostgreSQL schema {PG_SCHEMA}", file=sys.stderr)
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{PG_SCHEMA}"


# ---- equality -----------------------------------------------------------------------------

def _cell(value):
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def _sort_key(row):
    return tuple((v is None, "" if v is None else v) for v in row)


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def compare(expected: list[tuple], actual: list[tuple]) -> str | None:
    """None when equal as sets of rows (floats to 1e-9 relative), else what differs."""
    left = sorted([tuple(_cell(v) for v in r) for r in expected], key=_sort_key)
    right = sorted([tuple(_cell(v) for v in r) for r in actual], key=_sort_key)
    if len(left) != len(right):
        return f"{len(left)} rows vs {len(right)} rows"
    for i, (x, y) in enumerate(zip(left, right)):
        if len(x) != len(y) or not all(_same(p, q) for p, q in zip(x, y)):
            return f"row {i} (sorted): {x!r} vs {y!r}"
    return None


# ---- timing -------------------------------------------------------------------------------

def run(engine, sql: str) -> tuple[float, list[tuple]]:
    t0 = time.perf_counter()
    rows = engine.execute(sql).rows
    return time.perf_counter() - t0, rows


def bench_engine(engine, label: str, texts: dict[str, dict[str, str]], runs: int) -> list[dict]:
    """texts: mission key -> {variant: sql}; the first variant is the compiled SQL."""
    out = []
    for key, variants in texts.items():
        names = list(variants)
        results = {name: run(engine, sql)[1] for name, sql in variants.items()}  # also the warm-up
        for name in names[1:]:
            problem = compare(results[name], results[names[0]])
            if problem:
                sys.exit(
                    f"\n{label} query ({key}): compiled and {name} results DIFFER: {problem}\n"
                    f"--- compiled SQL:\n{variants[names[0]]}\n--- {name} SQL:\n{variants[name]}"
                )
        times: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(runs):
            for name in names:
                times[name].append(run(engine, variants[name])[0])
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        row = {
            "key": key,
            "rows": len(results[names[0]]),
            "median_s": medians,
            "min_s": {name: min(ts) for name, ts in times.items()},
            "ratio": {name: medians[names[0]] / medians[name] for name in names[1:]},
        }
        out.append(row)
        ratios = ", ".join(f"vs {n} {r:.2f}" for n, r in row["ratio"].items())
        print(f"  {label} ({key}): equal results, {row['rows']} rows; compiled {medians[names[0]] * 1e3:.0f} ms; {ratios}",
              file=sys.stderr)
    return out


# ---- report -------------------------------------------------------------------------------

def table(rows: list[dict], variants: list[str]) -> list[str]:
    titles = {m.key: m.title for m in MISSIONS}
    head = "| query | rows | compiled | " + " | ".join(variants) + " | " + " | ".join(
        f"ratio compiled / {v}" for v in variants) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * (2 * len(variants))]
    for r in rows:
        cells = [f"({r['key']}) {titles[r['key']]}", str(r["rows"]), f"{r['median_s']['compiled'] * 1e3:,.0f} ms"]
        cells += [f"{r['median_s'][v] * 1e3:,.0f} ms" for v in variants]
        cells += [f"**{r['ratio'][v]:.2f}**" for v in variants]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per SQL text (after one warm-up)")
    parser.add_argument("--only", help="comma-separated mission keys, e.g. c,d")
    parser.add_argument("--regenerate", action="store_true", help="rewrite the data even if it exists")
    parser.add_argument("--postgres", nargs="?", const=DEFAULT_PG, help="also run on PostgreSQL (URL)")
    parser.add_argument("--pg-leads", type=int, default=200_000)
    parser.add_argument("--pg-runs", type=int, default=5, help="timed runs on PostgreSQL (its range-join "
                        "reference for (d) takes ~30 s a run)")
    parser.add_argument("--no-duckdb", action="store_true")
    args = parser.parse_args()

    model = load_model(REPO / "metrics")
    missions = [m for m in MISSIONS if not args.only or m.key in args.only.split(",")]
    reference = reference_sql()
    tuned = handwritten.queries(AS_OF)
    result: dict = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "duckdb": duckdb.__version__},
        "load_average_before": os.getloadavg(),
        "runs": args.runs,
        "as_of": AS_OF,
    }
    report: list[str] = []

    if not args.no_duckdb:
        path = duckdb_data(args.leads, args.seed, args.regenerate)
        # No result cache: every run must execute (repeated queries would be answered from it).
        engine = connect(f"duckdb:///{path}", read_only=True, result_cache=False)
        threads = engine.execute("SELECT current_setting('threads')").rows[0][0]
        texts = {
            m.key: {
                "compiled": compile_query(model, m.query(), "duckdb"),
                "reference": reference[m.key],
                "hand-tuned": tuned[m.key],
            }
            for m in missions
        }
        rows = bench_engine(engine, "duckdb", texts, args.runs)
        engine.close()
        result["duckdb"] = {"leads": args.leads, "threads": threads, "queries": rows}
        report += [
            f"DuckDB {duckdb.__version__}, {threads} threads, {args.leads:,} leads / transactions; "
            f"medians of {args.runs} interleaved runs after a warm-up; as_of {AS_OF}.",
            "",
            *table(rows, ["reference", "hand-tuned"]),
            "",
        ]

    if args.postgres:
        url = postgres_data(args.postgres, args.pg_leads, args.seed, args.regenerate)
        engine = connect(url)
        version = engine.execute("SHOW server_version").rows[0][0]
        texts = {m.key: {"compiled": compile_query(model, m.query(), "postgres"), "reference": reference[m.key]}
                 for m in missions}
        rows = bench_engine(engine, "postgres", texts, args.pg_runs)
        engine.close()
        result["postgres"] = {"leads": args.pg_leads, "version": version, "runs": args.pg_runs, "queries": rows}
        report += [
            f"PostgreSQL {version}, {args.pg_leads:,} leads / transactions (schema {PG_SCHEMA}, indexes on "
            f"the join keys, ANALYZEd); medians of {args.pg_runs} interleaved runs after a warm-up.",
            "",
            *table(rows, ["reference"]),
            "",
        ]

    result["load_average_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "execution.json" if not args.only else f"execution-{args.only.replace(',', '')}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2, default=str))
    load = ", ".join(f"{x:.2f}" for x in result["load_average_before"])
    print(f"Load average before the run: {load}; after: "
          + ", ".join(f"{x:.2f}" for x in result["load_average_after"]) + ".\n")
    print("\n".join(report))
    worst = [
        f"{engine_name} ({r['key']}) {v} {ratio:.2f}"
        for engine_name in ("duckdb", "postgres") if engine_name in result
        for r in result[engine_name]["queries"] for v, ratio in r["ratio"].items() if ratio >= TARGET_RATIO
    ]
    print(f"Target ratio < {TARGET_RATIO} for every query: " + ("met" if not worst else "MISSED: " + "; ".join(worst)))
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main())
