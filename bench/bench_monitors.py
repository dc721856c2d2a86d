"""Monitor benchmark: 20 monitors over the demo (DuckDB), one evaluation round vs the same queries run directly.

    .venv/bin/python bench/bench_monitors.py --leads 1000000      # the issue's scale
    .venv/bin/python bench/bench_monitors.py --leads 100000 --rounds 3

The 20 monitors: ten declared classification metrics (accuracy, precision, recall, f1, log
loss, Brier score, false-positive rate, cost, fraud precision and recall), each overall and by
model version.
A round = Monitors.evaluate_all (queries through MetricsService.run, the decision per group,
the history INSERT, no notification). Baseline, measured in the same run: the same SemanticQuery
objects run directly through MetricsService.run. The ratio round / direct is the monitors'
overhead. DuckDB's result cache is turned off so both sides execute every query.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402
import sqlglot  # noqa: E402

from metrics_layer.demo_data import generate_duckdb  # noqa: E402
from metrics_layer.monitors import Monitors, _dimension  # noqa: E402
from metrics_layer.project import load_project  # noqa: E402
from metrics_layer.query import SemanticQuery  # noqa: E402
from metrics_layer.service import MetricsService  # noqa: E402

SPECS = [
    ("conversion_model.accuracy", None, "< 0.7"), ("conversion_model.precision", None, "< 0.4"),
    ("conversion_model.recall", None, "< 0.5"), ("conversion_model.f1", None, "< 0.5"),
    ("conversion_model.log_loss", None, "> 0.7"), ("conversion_model.brier_score", None, "> 0.25"),
    ("conversion_model.false_positive_rate", None, "> 0.3"), ("fraud_model.cost", None, "> 1000000"),
    ("fraud_model.precision", None, "< 0.5"), ("fraud_model.recall", None, "< 0.5"),
]
BY = {"conversion_model": "predictions.model_version", "fraud_model": "fraud_scores.model_version"}


def monitors_yaml() -> str:
    lines = ["monitors:"]
    for i, (metric, _, condition) in enumerate(SPECS):
        lines.append(f"  - {{name: m{i}, metric: {metric}, condition: '{condition}'}}")
        lines.append(f"  - {{name: m{i}_by_version, metric: {metric}, by: {BY[metric.split('.')[0]]}, condition: '{condition}'}}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_monitors_"))
    try:
        db = work / "demo.duckdb"
        t0 = time.perf_counter()
        generate_duckdb(str(db), leads=args.leads, progress=lambda _: None)
        print(f"demo data: {args.leads:,} leads in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        shutil.copytree(REPO / "metrics", work / "metrics")
        for f in (work / "metrics").glob("*.yml"):  # only the benchmark's monitors
            text = f.read_text()
            f.write_text(text[:text.index("\nmonitors:")] + "\n" if "\nmonitors:" in text else text)
        (work / "metrics" / "bench_monitors.yml").write_text(monitors_yaml())
        (work / "metrics_layer.yml").write_text(f"engine: duckdb:///{db}\nresult_cache: false\n")
        service = MetricsService(load_project(work))
        service.read_only_engine = False
        monitors = Monitors(service)
        queries = [SemanticQuery((m.metric,), tuple(_dimension(d) for d in m.by)) for m in service.model.monitors.values()]
        assert len(queries) == 20
        monitors.evaluate_all()  # warm: table created, files in the OS cache
        for q in queries:
            service.run(q)
        direct, rounds = [], []
        for _ in range(args.rounds):  # interleaved so that machine load hits both alike
            t = time.perf_counter()
            for q in queries:
                service.run(q)
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            monitors.evaluate_all()
            rounds.append(time.perf_counter() - t)
        d, r = statistics.median(direct), statistics.median(rounds)
        load = os.getloadavg()[0]
        print(f"| leads | monitors | round p50 | same queries direct p50 | ratio round / direct | load avg (1 min) | duckdb | sqlglot |")
        print(f"| --- | --- | --- | --- | --- | --- | --- | --- |")
        print(f"| {args.leads:,} | 20 | {r * 1000:,.0f} ms | {d * 1000:,.0f} ms | **{r / d:.2f}** | {load:.2f} | {duckdb.__version__} | {sqlglot.__version__} |")
        service.engine.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
