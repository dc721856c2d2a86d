"""Routing benchmark: a query read from a stored materialization vs the same query over the base tables.

    .venv/bin/python bench/bench_routing.py                  # DuckDB, 1M leads ending this hour
    .venv/bin/python bench/bench_routing.py --postgres       # + PostgreSQL, 200k leads
    .venv/bin/python bench/bench_routing.py --leads 100000 --runs 9

Data: the demo generator (metrics_layer.demo_data) with its last lead in the current hour, so
a trailing window ending now holds rows. The demo's materializations are stored as tables in
schema `metrics_layer` (what `deploy` does on DuckDB; on PostgreSQL a table built from the
same SELECT stands in for the materialized view), then for each query:

  base:    explain_query(model, query, dialect) over the base tables;
  routed:  explain_query(model, query, dialect, routes), which must read a materialization.

The rows are checked equal first; then a warm-up each and --runs interleaved rounds; medians,
p50 of the routed query and the ratio base / routed are printed. Targets (issue 10): the
routed current value at least 50x faster than the scan, and under 2 ms p50 on DuckDB.
Prints MISSED lines for targets not met. Not a test: nothing here fails the suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import sqlglot

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from metrics_layer.compile import Route, explain_query  # noqa: E402
from metrics_layer.compile.compiler import compile_materialization  # noqa: E402
from metrics_layer.engines import connect  # noqa: E402
from metrics_layer.model import load_model  # noqa: E402
from metrics_layer.query import DimensionRef, Filter, SemanticQuery  # noqa: E402

SCHEMA = "metrics_layer"
END = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
WEEK_AGO = END - dt.timedelta(days=7)
QUERIES = {
    "accuracy_3h now (current value)": SemanticQuery(("accuracy_3h",)),
    "accuracy_3h by model version now": SemanticQuery(("accuracy_3h", "accuracy"), (DimensionRef("predictions.model_version"),)),
    "accuracy_3h hourly, last 7 days": SemanticQuery(("accuracy_3h", "leads.lead_count"), (DimensionRef("leads.created_at", "hour"),),
                                                     filters=(Filter("leads.created_at", ">=", WEEK_AGO),)),
}
TARGET_RATIO, TARGET_P50_MS = 50.0, 2.0


def store(engine, ddl, model, dialect: str) -> tuple[Route, ...]:
    ddl(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
    routes = []
    for name in model.materializations:
        select = compile_materialization(model, name, dialect).sql(dialect=dialect)
        ddl(f'DROP TABLE IF EXISTS "{SCHEMA}"."{name}"')
        ddl(f'CREATE TABLE "{SCHEMA}"."{name}" AS {select}')
        routes.append(Route(name, SCHEMA, name))
    return tuple(routes)


def _same(a, b) -> bool:
    def cell(v):
        return float(v) if v is not None and not isinstance(v, (str, dt.datetime)) else v
    a, b = sorted(map(str, ([cell(v) for v in r] for r in a))), sorted(map(str, ([cell(v) for v in r] for r in b)))
    return a == b


def measure(engine, model, dialect: str, routes, runs: int) -> list[dict]:
    results = []
    for label, query in QUERIES.items():
        base = explain_query(model, query, dialect)
        routed = explain_query(model, query, dialect, routes)
        if routed.materialization is None:
            print(f"MISSED {label}: not routed: {dict(routed.not_used)}")
            continue
        base_rows, routed_rows = engine.execute(base.sql).rows, engine.execute(routed.sql).rows
        if not _same(base_rows, routed_rows):
            sys.exit(f"{label}: routed rows differ from the base tables'\n{routed_rows[:5]}\n{base_rows[:5]}")
        times = {"base": [], "routed": []}
        for _ in range(runs):
            for kind, sql in (("base", base.sql), ("routed", routed.sql)):
                start = time.perf_counter()
                explain_query(model, query, dialect, routes if kind == "routed" else ())  # cached compile, as a service pays it
                engine.execute(sql)
                times[kind].append(time.perf_counter() - start)
        b, r = statistics.median(times["base"]), statistics.median(times["routed"])
        results.append({"query": label, "rows": len(routed_rows), "materialization": routed.materialization,
                        "base_ms": b * 1000, "routed_ms": r * 1000, "ratio": b / r})
    return results


def report(title: str, results: list[dict], check_p50: bool) -> None:
    print(f"\n### {title}\n")
    print("| query | rows | read from | base ms | routed ms (p50) | base / routed |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['query']} | {r['rows']} | {r['materialization']} | {r['base_ms']:.1f} | {r['routed_ms']:.2f} | {r['ratio']:.0f}x |")
    for r in results:
        if "current value" in r["query"] and r["ratio"] < TARGET_RATIO:
            print(f"MISSED {title}: {r['query']} routed is {r['ratio']:.0f}x faster, target {TARGET_RATIO:.0f}x")
        if check_p50 and "current value" in r["query"] and r["routed_ms"] > TARGET_P50_MS:
            print(f"MISSED {title}: {r['query']} routed p50 {r['routed_ms']:.2f} ms, target {TARGET_P50_MS} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--postgres", nargs="?", const="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--pg-leads", type=int, default=200_000)
    args = parser.parse_args()
    from metrics_layer.demo_data import generate_duckdb, generate_postgres

    model = load_model(REPO / "metrics")
    print(f"sqlglot {sqlglot.__version__}, duckdb {duckdb.__version__}, python {platform.python_version()}, "
          f"load {' '.join(f'{x:.1f}' for x in __import__('os').getloadavg())}, data ending {END:%Y-%m-%d %H:00}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "routing.duckdb"
        print(f"data: generating {args.leads:,} leads ...", file=sys.stderr)
        generate_duckdb(str(path), leads=args.leads, end=END, progress=None)
        engine = connect(f"duckdb:///{path}", Path(tmp), result_cache=False)
        routes = store(engine, engine.execute, model, "duckdb")
        report(f"DuckDB, {args.leads:,} leads", measure(engine, model, "duckdb", routes, args.runs), True)
        engine.close()
    if args.postgres:
        import psycopg

        schema = "bench_routing"
        print(f"data: generating {args.pg_leads:,} leads in PostgreSQL ...", file=sys.stderr)
        generate_postgres(args.postgres, leads=args.pg_leads, end=END, progress=None, schema=schema)
        url = f"{args.postgres}?options=-csearch_path%3D{schema}"

        def ddl(sql: str) -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql)

        engine = connect(url, REPO)
        routes = store(engine, ddl, model, "postgres")
        report(f"PostgreSQL, {args.pg_leads:,} leads", measure(engine, model, "postgres", routes, args.runs), False)
        engine.close()
        ddl(f'DROP SCHEMA "{SCHEMA}" CASCADE')


if __name__ == "__main__":
    main()
