"""Training-set benchmark (issue 11): a spine of prediction events x 3 windowed metrics, in one run,
on DuckDB and PostgreSQL, as ratios to baselines measured in the same run:

  compiled SQL:  the query compile/spine.py compiles for the spine, run like the hand-written SQL
                 (the spine already in the engine): the figure the <= 1.5x target is about;
  features:      metrics_layer.features.training_set, end to end: the spine shaped (point ids)
                 and loaded into the engine, the compiled query, the result attached as columns;
  range join:    hand-written set-based SQL, the straightforward plan: every spine point joined to
                 the leads of its window, the predictions and conversions cut at the point;
  cumulative:    hand-written set-based SQL of the plan compile/spine.py uses: each lead's window
                 split where its prediction or conversion changes, +1/-1 per segment, running sums
                 read at every point (only the leads whose window can hold a spine time);
  loop:          one `as_of` query per spine row through MetricsService; a sample of --loop-sample
                 rows is timed and extrapolated to the whole spine (said so in the output).

    .venv/bin/python bench/bench_features.py            # 1M leads, 100k spine rows, DuckDB + PostgreSQL
    .venv/bin/python bench/bench_features.py --quick    # 100k leads, 10k spine rows, 20 loop queries
    .venv/bin/python bench/bench_features.py --no-postgres --data /tmp/demo_1m.duckdb

Data: the demo generator (metrics_layer.demo_data), in a DuckDB file (kept with --data) and in
the schema `ml_bench_spine` (`ml_bench_spine_quick` for --quick) of the local PostgreSQL
(METRICS_LAYER_TEST_PG). The spine is every k-th prediction event (lead_id, predicted_at), --spine
of them over the whole history (--first: the first --spine events, a short span). All values are checked equal first
(features against both hand-written forms; the loop's sample against features); each of
features and the hand-written SQL runs once as a warm-up, then --runs times (the median is
reported). The hand-written SQL reads the spine from a table loaded before it is timed, so
the ratios are conservative for features.
Targets: compiled SQL <= 1.5x the faster hand-written SQL; the loop >= 100x slower than features.
Exit status 1 when a target is missed. Not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
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

from metrics_layer.compile.spine import SpineQuery, compile_spine  # noqa: E402
from metrics_layer.demo_data import generate_duckdb, generate_postgres  # noqa: E402
from metrics_layer.features import engine_spine, training_set  # noqa: E402
from metrics_layer.project import Project  # noqa: E402
from metrics_layer.query import SemanticQuery  # noqa: E402
from metrics_layer.service import MetricsService  # noqa: E402

METRICS = ["accuracy_3h", "conversion_rate_fb_3h", "conversion_3h.precision"]
RATIO_TARGET, LOOP_TARGET = 1.5, 100.0
PG_URL = os.environ.get("METRICS_LAYER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PG_SCHEMA = "ml_bench_spine"

# The three metrics' numerators and denominators over a lead's joined state (r.label: the
# latest prediction's label or NULL; r.pl: predicted; r.cl: converted; r.fb: from Facebook).
_COUNTS = {
    "acc_n": "(r.label = 1 AND r.cl) OR (r.label = 0 AND NOT r.cl)", "acc_d": "r.pl",
    "fb_n": "r.fb AND r.cl", "fb_d": "r.fb",
    "pr_n": "r.label = 1 AND r.cl", "pr_d": "r.label = 1",
}
_VALUES = ("CAST(acc_n AS DOUBLE PRECISION) / NULLIF(acc_d, 0), CAST(fb_n AS DOUBLE PRECISION) / NULLIF(fb_d, 0), "
           "CAST(pr_n AS DOUBLE PRECISION) / NULLIF(pr_d, 0)")

# Written once for both engines (INTERVAL '27 hours' and DOUBLE PRECISION read the same in both).
RANGE_JOIN = f"""
WITH pts AS (SELECT DISTINCT ml_point, ml_at FROM spine),
p AS (SELECT lead_id, label, predicted_at,
             LEAD(predicted_at) OVER (PARTITION BY lead_id ORDER BY predicted_at) AS until
      FROM prediction_events),
c AS (SELECT lead_id, MIN(converted_at) AS converted_at FROM conversions GROUP BY lead_id),
r AS (SELECT pts.ml_point, l.utm_source = 'facebook' AS fb, p.label, p.lead_id IS NOT NULL AS pl,
             c.lead_id IS NOT NULL AS cl
      FROM pts JOIN leads l ON l.created_at > pts.ml_at - INTERVAL '27 hours' AND l.created_at <= pts.ml_at - INTERVAL '24 hours'
      LEFT JOIN p ON p.lead_id = l.id AND p.predicted_at <= pts.ml_at AND (p.until IS NULL OR p.until > pts.ml_at)
      LEFT JOIN c ON c.lead_id = l.id AND c.converted_at <= pts.ml_at),
agg AS (SELECT ml_point, {", ".join(f"COUNT(*) FILTER (WHERE {c}) AS {n}" for n, c in _COUNTS.items())}
        FROM r GROUP BY ml_point)
SELECT {_VALUES} FROM spine s LEFT JOIN agg ON agg.ml_point = s.ml_point ORDER BY s.ml_row
"""

CUMULATIVE = f"""
WITH p AS (SELECT lead_id, label, predicted_at,
                  LEAD(predicted_at) OVER (PARTITION BY lead_id ORDER BY predicted_at) AS until
           FROM prediction_events),
c AS (SELECT lead_id, MIN(converted_at) AS converted_at FROM conversions GROUP BY lead_id),
w AS (SELECT id, utm_source, created_at + INTERVAL '24 hours' AS lo, created_at + INTERVAL '27 hours' AS hi FROM leads
      WHERE created_at <= (SELECT MAX(ml_at) FROM spine) - INTERVAL '24 hours'
        AND created_at > (SELECT MIN(ml_at) FROM spine) - INTERVAL '27 hours'),
starts AS (SELECT id, lo AS s, hi FROM w
           UNION SELECT w.id, p.predicted_at, w.hi FROM w JOIN p ON p.lead_id = w.id AND p.predicted_at > w.lo AND p.predicted_at < w.hi
           UNION SELECT w.id, c.converted_at, w.hi FROM w JOIN c ON c.lead_id = w.id AND c.converted_at > w.lo AND c.converted_at < w.hi),
seg AS (SELECT id, s, COALESCE(LEAD(s) OVER (PARTITION BY id ORDER BY s), hi) AS e FROM starts),
r AS (SELECT seg.s, seg.e, w.utm_source = 'facebook' AS fb, p.label, p.lead_id IS NOT NULL AS pl, c.lead_id IS NOT NULL AS cl
      FROM seg JOIN w ON w.id = seg.id
      LEFT JOIN p ON p.lead_id = seg.id AND p.predicted_at <= seg.s AND (p.until IS NULL OR p.until > seg.s)
      LEFT JOIN c ON c.lead_id = seg.id AND c.converted_at <= seg.s),
d AS (SELECT s AS t, {", ".join(f"CASE WHEN {c} THEN 1 ELSE 0 END AS {n}" for n, c in _COUNTS.items())} FROM r),
ev AS (SELECT t, 0 AS kind, CAST(NULL AS BIGINT) AS ml_point, {", ".join(_COUNTS)} FROM d
       UNION ALL SELECT r.e, 0, NULL, {", ".join(f"-(CASE WHEN {c} THEN 1 ELSE 0 END)" for c in _COUNTS.values())} FROM r
       UNION ALL SELECT ml_at, 1, ml_point, {", ".join("0" for _ in _COUNTS)} FROM (SELECT DISTINCT ml_point, ml_at FROM spine) pts),
run AS (SELECT ml_point, kind, {", ".join(f"SUM({n}) OVER (ORDER BY t, kind ROWS UNBOUNDED PRECEDING) AS {n}" for n in _COUNTS)} FROM ev)
SELECT {_VALUES} FROM spine s LEFT JOIN run ON run.kind = 1 AND run.ml_point = s.ml_point ORDER BY s.ml_row
"""


def _same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(float(a) - float(b)) < 1e-9)


def _timed(fn, runs: int, warm_up: bool = True) -> tuple[float, object]:
    """fn's result and the median of `runs` timings, after one warm-up."""
    out = fn() if warm_up else None
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def _check(features, rows, what: str) -> None:
    for i, row in enumerate(rows):
        for j, metric in enumerate(METRICS):
            if not _same(features.column(metric)[i].as_py(), row[j]):
                raise SystemExit(f"DIFFER: features vs {what} at spine row {i}, {metric}: "
                                 f"{features.column(metric)[i].as_py()} != {row[j]}")


def _loop(service: MetricsService, spine, features, sample_size: int) -> tuple[float, int]:
    times = spine.column("at").to_pylist()
    step = max(1, len(times) // sample_size)
    sample = list(range(0, len(times), step))[:sample_size]
    started = time.perf_counter()
    for i in sample:
        value = service.run(SemanticQuery(tuple(METRICS), as_of=times[i])).rows[0]
        if not all(_same(features.column(m)[i].as_py(), value[j]) for j, m in enumerate(METRICS)):
            raise SystemExit(f"DIFFER: features vs as_of at spine row {i}: {value}")
    return (time.perf_counter() - started) / len(sample) * len(times), len(sample)


def _engine_run(name: str, service: MetricsService, spine, hand, args) -> dict:
    """Times features, the compiled SQL and both hand-written forms (`hand(sql)` runs one SQL on
    the engine, the spine loaded as `spine`) and the loop on one engine."""
    t_features, features = _timed(lambda: training_set(service, spine, METRICS), args.runs)
    figures = {"features_s": t_features}
    compiled = compile_spine(service.model, SpineQuery(tuple(METRICS), "spine"), service.dialect)
    for form, sql in (("compiled", compiled), ("cumulative", CUMULATIVE)):
        t, rows = _timed(lambda: hand(sql), args.runs)
        _check(features, rows, f"hand-written {form}" if form != "compiled" else "the compiled SQL")
        figures[f"{form}_s"] = t
    # The range join runs for minutes at full size: timed once, no warm-up (reading the tables
    # is a negligible share of it), and given up after --range-join-timeout on PostgreSQL.
    t, rows = _timed(lambda: hand(RANGE_JOIN, args.range_join_timeout), 1, warm_up=False)
    if rows is None:
        figures["range_join_s"], figures["range_join_timed_out"] = float(args.range_join_timeout), True
    else:
        _check(features, rows, "hand-written range_join")
        figures["range_join_s"] = t
    t_loop, sampled = _loop(service, spine, features, args.loop_sample)
    best = figures["cumulative_s"] if rows is None else min(figures["range_join_s"], figures["cumulative_s"])
    t_compiled = figures["compiled_s"]
    figures.update(loop_s=t_loop, loop_sampled=sampled, ratio_range_join=t_compiled / figures["range_join_s"],
                   ratio_cumulative=t_compiled / figures["cumulative_s"], ratio=t_compiled / best,
                   features_ratio=t_features / best, loop_speedup=t_loop / t_features)
    over = ">" if figures.get("range_join_timed_out") else ""
    print(f"{name}: compiled SQL {t_compiled:.2f} s | hand-written range join {over}{figures['range_join_s']:.2f} s "
          f"(compiled / it = {'<' if over else ''}{figures['ratio_range_join']:.2f}x) | hand-written cumulative {figures['cumulative_s']:.2f} s "
          f"({figures['ratio_cumulative']:.2f}x) | features end to end {t_features:.2f} s ({figures['features_ratio']:.2f}x "
          f"the faster hand-written) | loop {t_loop:.1f} s extrapolated from {sampled} timed as_of queries "
          f"(loop / features = {figures['loop_speedup']:.0f}x)", flush=True)
    return figures


def _fallback(service: MetricsService, hand, spine_rows: int) -> None:
    """The range-join form against the cumulative form (DuckDB): a count and an avg over the
    deduplicated predictions, 3-hour window, at the spine's rows (the avg takes the range join)."""
    for metrics in (("predictions.prediction_count",), ("predictions.avg_score",)):
        sql = compile_spine(service.model, SpineQuery(metrics, "spine", window="3 hours"), service.dialect)
        form = "cumulative" if "ml_kind" in sql else "range join"
        t, _ = _timed(lambda: hand(sql), 1)
        print(f"fallback check: {metrics[0]} over a 3-hour window, {spine_rows:,} spine rows: {form} {t:.2f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--spine", type=int, default=100_000)
    parser.add_argument("--loop-sample", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100k leads, 10k spine rows, 20 loop queries, 1 run")
    parser.add_argument("--data", help="DuckDB file of the demo data: reused when it exists, else generated there")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-duckdb", action="store_true")
    parser.add_argument("--range-join-timeout", type=int, default=900,
                        help="seconds after which the hand-written range join is given up on PostgreSQL")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--first", action="store_true",
                        help="the spine is the first --spine events (a short span) instead of every k-th event")
    parser.add_argument("--fallback", action="store_true",
                        help="also time the range-join form (an avg) beside the cumulative form (a count), DuckDB")
    args = parser.parse_args()
    if args.quick:
        args.leads, args.spine, args.loop_sample, args.runs = 100_000, 10_000, 20, 1
    path = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="ml_bench_features_")) / "demo.duckdb"
    end = dt.datetime(2026, 3, 1)
    if not path.exists():
        started = time.perf_counter()
        generate_duckdb(str(path), leads=args.leads, end=end, progress=lambda _: None)
        print(f"data: {args.leads:,} leads in {time.perf_counter() - started:.1f} s", flush=True)
    con = duckdb.connect(str(path), read_only=True)
    leads = con.execute("SELECT count(*) FROM leads").fetchall()[0][0]
    if args.first:
        picked = f"SELECT lead_id, predicted_at AS at FROM prediction_events ORDER BY event_id LIMIT {args.spine}"
    else:  # every k-th event: a spine over the whole history
        events = con.execute("SELECT count(*) FROM prediction_events").fetchall()[0][0]
        picked = (f"SELECT lead_id, predicted_at AS at FROM prediction_events WHERE event_id % {max(1, events // args.spine)} = 0 "
                  f"ORDER BY event_id LIMIT {args.spine}")
    spine = con.sql(picked).to_arrow_table()
    shaped = engine_spine(spine, "at", None)
    load_before = os.getloadavg()[0]
    result = {"spine_rows": spine.num_rows, "leads": leads, "metrics": METRICS, "versions": {
        "sqlglot": sqlglot.__version__, "duckdb": duckdb.__version__, "python": platform.python_version()}}

    print(f"spine ({'first events' if args.first else 'every k-th event'}) {spine.num_rows:,} rows x {len(METRICS)} metrics ({', '.join(METRICS)}) at {leads:,} leads", flush=True)
    if not args.no_duckdb:
        service = MetricsService(Project(root=REPO, metrics_dir=REPO / "metrics", engine_url=f"duckdb:///{path}"))
        cursor = con.cursor()
        cursor.register("spine", shaped)
        result["duckdb"] = _engine_run("DuckDB", service, spine, lambda sql, timeout=None: cursor.execute(sql).fetchall(), args)
        if args.fallback:
            _fallback(service, lambda sql: cursor.execute(sql).fetchall(), spine.num_rows)

    if not args.no_postgres:
        import psycopg

        schema = PG_SCHEMA + ("_quick" if args.quick else "")
        with psycopg.connect(PG_URL) as pg:
            have = pg.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'leads'",
                              (schema,)).fetchone()[0]
            rows = pg.execute(f"SELECT count(*) FROM {schema}.leads").fetchone()[0] if have else 0
        if rows != leads:
            started = time.perf_counter()
            generate_postgres(PG_URL, leads=args.leads, end=end, progress=lambda _: None, schema=schema)
            print(f"data: {args.leads:,} leads into PostgreSQL in {time.perf_counter() - started:.1f} s", flush=True)
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        pg_service = MetricsService(Project(root=REPO, metrics_dir=REPO / "metrics", engine_url=url))
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute("CREATE TEMPORARY TABLE spine (ml_row BIGINT, ml_point BIGINT, ml_at TIMESTAMP)")
            with pg.cursor().copy("COPY spine FROM STDIN") as copy:
                for row in zip(*(c.to_pylist() for c in shaped.columns)):
                    copy.write_row(row)
            pg.execute("ANALYZE spine")
            pg.execute("SET work_mem = '256MB'")

            def run(sql: str, timeout: int | None = None):
                if timeout is None:
                    return pg.execute(sql).fetchall()
                pg.execute(f"SET statement_timeout = '{timeout}s'")
                try:
                    return pg.execute(sql).fetchall()
                except psycopg.errors.QueryCanceled:
                    return None
                finally:
                    pg.execute("RESET statement_timeout")

            result["postgres"] = _engine_run("PostgreSQL", pg_service, spine, run, args)
            result["versions"]["postgresql"] = pg.execute("SHOW server_version").fetchone()[0]
        pg_service.engine.close()

    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["cores"] = os.cpu_count()
    print(f"versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}; load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} cores")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    missed = 0
    for engine in ("duckdb", "postgres"):
        if engine in result:
            f = result[engine]
            for ok, line in ((f["ratio"] <= RATIO_TARGET, f"{engine} compiled / faster hand-written = {f['ratio']:.2f}x "
                              f"(target <= {RATIO_TARGET}x)"),
                             (f["loop_speedup"] >= LOOP_TARGET, f"{engine} loop / features = {f['loop_speedup']:.0f}x "
                              f"(target >= {LOOP_TARGET:.0f}x)")):
                print(f"{'met   ' if ok else 'MISSED'} {line}")
                missed += not ok
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
