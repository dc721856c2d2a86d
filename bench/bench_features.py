"""Training-set benchmark: a spine of prediction events x windowed metrics, in one run, as ratios:

  features:     metrics_layer.features.training_set (the compiled spine query, compile/spine.py);
  handwritten:  a hand-written set-based SQL of the same values (the same range-join plan);
  loop:         one `as_of` query per spine row through MetricsService; a sample of --loop-sample
                rows is timed and extrapolated to the whole spine (said so in the output).

    .venv/bin/python bench/bench_features.py                       # 1M leads, 100k spine rows
    .venv/bin/python bench/bench_features.py --leads 200000 --spine 20000

Data: the demo generator (metrics_layer.demo_data) in a temporary DuckDB file; the spine is the
first --spine prediction events (lead_id, predicted_at). Values are checked equal first; each
of features and handwritten runs once as a warm-up before it is timed.
Targets (issue 11): features <= 1.5x handwritten; >= 100x faster than the loop. Not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import sqlglot

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from metrics_layer.demo_data import generate_duckdb  # noqa: E402
from metrics_layer.features import engine_spine, training_set  # noqa: E402
from metrics_layer.project import Project  # noqa: E402
from metrics_layer.query import SemanticQuery  # noqa: E402
from metrics_layer.service import MetricsService  # noqa: E402

METRICS = ["accuracy_3h", "conversion_rate_fb_3h"]

HANDWRITTEN = """
WITH pts AS (SELECT DISTINCT ml_point, ml_at FROM spine),
p AS (SELECT lead_id, label, predicted_at,
             LEAD(predicted_at) OVER (PARTITION BY lead_id ORDER BY predicted_at) AS until
      FROM prediction_events),
c AS (SELECT lead_id, MIN(converted_at) AS converted_at FROM conversions GROUP BY lead_id),
r AS (SELECT pts.ml_point, l.utm_source, p.label, p.lead_id AS pl, c.lead_id AS cl
      FROM pts JOIN leads l ON l.created_at > pts.ml_at - INTERVAL 27 HOUR AND l.created_at <= pts.ml_at - INTERVAL 24 HOUR
      LEFT JOIN p ON p.lead_id = l.id AND p.predicted_at <= pts.ml_at AND (p.until IS NULL OR p.until > pts.ml_at)
      LEFT JOIN c ON c.lead_id = l.id AND c.converted_at <= pts.ml_at),
agg AS (SELECT ml_point,
          CAST(COUNT(*) FILTER (WHERE (label = 1 AND cl IS NOT NULL) OR (label = 0 AND cl IS NULL)) AS DOUBLE)
            / NULLIF(COUNT(*) FILTER (WHERE pl IS NOT NULL), 0) AS accuracy_3h,
          CAST(COUNT(*) FILTER (WHERE utm_source = 'facebook' AND cl IS NOT NULL) AS DOUBLE)
            / NULLIF(COUNT(*) FILTER (WHERE utm_source = 'facebook'), 0) AS conversion_rate_fb_3h
        FROM r GROUP BY ml_point)
SELECT agg.accuracy_3h, agg.conversion_rate_fb_3h FROM spine s LEFT JOIN agg ON agg.ml_point = s.ml_point ORDER BY s.ml_row
"""


def _same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--spine", type=int, default=100_000)
    parser.add_argument("--loop-sample", type=int, default=20)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ml_bench_features_"))
    path = folder / "demo.duckdb"
    started = time.perf_counter()
    generate_duckdb(str(path), leads=args.leads, end=dt.datetime(2026, 3, 1), progress=lambda _: None)
    print(f"data: {args.leads} leads in {time.perf_counter() - started:.1f} s")
    con = duckdb.connect(str(path), read_only=True)
    spine = con.sql(f"SELECT lead_id, predicted_at AS at FROM prediction_events ORDER BY event_id LIMIT {args.spine}").to_arrow_table()
    project = Project(root=REPO, metrics_dir=REPO / "metrics", engine_url=f"duckdb:///{path}")
    service = MetricsService(project)

    shaped = engine_spine(spine, "at", None)
    cursor = con.cursor()
    cursor.register("spine", shaped)
    # A warm-up of each first: whichever ran first would otherwise pay for reading the file.
    training_set(service, spine, METRICS)
    cursor.execute(HANDWRITTEN).fetchall()
    started = time.perf_counter()
    features = training_set(service, spine, METRICS)
    t_features = time.perf_counter() - started
    started = time.perf_counter()
    hand = cursor.execute(HANDWRITTEN).fetchall()
    t_hand = time.perf_counter() - started
    for i, row in enumerate(hand):
        for j, metric in enumerate(METRICS):
            assert _same(features.column(metric)[i].as_py(), row[j]), (i, metric)

    times = spine.column("at").to_pylist()
    step = max(1, len(times) // args.loop_sample)
    sample = times[::step][:args.loop_sample]
    started = time.perf_counter()
    for k, at in enumerate(sample):
        value = service.run(SemanticQuery(tuple(METRICS), as_of=at)).rows[0]
        i = times.index(at)
        assert all(_same(features.column(m)[i].as_py(), value[j]) for j, m in enumerate(METRICS))
    t_loop = (time.perf_counter() - started) / len(sample) * len(times)

    print(f"versions: sqlglot {sqlglot.__version__}, duckdb {duckdb.__version__}, python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"spine {len(times)} rows x {len(METRICS)} metrics at {args.leads} leads (DuckDB)")
    print(f"features     {t_features:8.2f} s")
    print(f"handwritten  {t_hand:8.2f} s   features / handwritten = {t_features / t_hand:.2f}x (target <= 1.5x)")
    print(f"loop         {t_loop:8.2f} s   (extrapolated from {len(sample)} timed as_of queries)   "
          f"loop / features = {t_loop / t_features:.0f}x (target >= 100x)")


if __name__ == "__main__":
    main()
