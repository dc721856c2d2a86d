"""The streaming rule checker (streaming_rules.py): each rule on hand-written SQL, then a sweep
of what the compiler emits for Materialize and RisingWave, which must break no rule.

Neither engine runs here, so the sweep is what verifies the streaming SQL. A QueryError (the
compiler refusing a shape on a dialect) emits nothing and counts as OK; refusals are listed
in the sweep's output (pytest -s).
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

from conftest import REPO
from metrics_layer.compile import compile_query
from metrics_layer.compile.compiler import compile_materialization
from metrics_layer.model import load_model
from metrics_layer.query import DimensionRef, Filter, QueryError, SemanticQuery
from streaming_rules import ENGINES, RULES, Violation, check, violated_rules

MZ, RW = "materialize", "risingwave"
RW_NOW_UTC = "SELECT id FROM events WHERE ts AT TIME ZONE 'UTC' > NOW() - INTERVAL '1 hour'"
MZ_NOW = "SELECT id FROM events WHERE mz_now() < ts + INTERVAL '1 hour'"

# rule -> [(dialect, SQL that breaks only that rule, SQL that respects it)]
SELF_TESTS: dict[str, list[tuple[str, str, str]]] = {
    "mz_now_placement": [
        (MZ, "SELECT mz_now() < ts + INTERVAL '1 hour' AS live FROM events", MZ_NOW),
        (MZ, "SELECT COUNT(*) FILTER (WHERE mz_now() < ts + INTERVAL '1 hour') FROM events", MZ_NOW),
        (MZ, "SELECT * FROM a JOIN b ON a.id = b.a_id AND mz_now() < b.ts", MZ_NOW),
    ],
    "mz_now_arithmetic": [(MZ, "SELECT id FROM events WHERE mz_now() - INTERVAL '5 minutes' > ts", MZ_NOW)],
    "mz_now_comparison": [
        (MZ, "SELECT id FROM events WHERE mz_now() <> ts", "SELECT id FROM events WHERE mz_now() >= ts"),
        (MZ, "SELECT id FROM events WHERE mz_now() < GREATEST(ts, mz_now())", "SELECT id FROM events WHERE mz_now() BETWEEN ts AND ts + INTERVAL '1 hour'"),
    ],
    "mz_now_or": [(
        MZ,
        "SELECT id FROM events WHERE mz_now() < ts + INTERVAL '1 hour' OR kind = 'x'",
        "SELECT id FROM events WHERE mz_now() < ts + INTERVAL '1 hour' AND (kind = 'x' OR kind = 'y')",
    )],
    "mz_row_number_dedupe": [(
        MZ,
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC) AS rn FROM events) AS e WHERE rn = 1",
        "SELECT DISTINCT ON (k) * FROM events ORDER BY k, ts DESC",
    )],
    "mz_percentile": [
        (MZ, "SELECT PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY amount) FROM t", "SELECT AVG(amount) FROM t"),
        (MZ, "SELECT PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY amount) FROM t", "SELECT MAX(amount) FROM t"),
    ],
    "mz_wall_clock": [
        (MZ, "SELECT id FROM events WHERE ts > now() - INTERVAL '1 hour'", MZ_NOW),
        (MZ, "SELECT CURRENT_DATE AS today, id FROM events", MZ_NOW),
    ],
    "mz_join_equality": [
        (MZ, "SELECT * FROM a CROSS JOIN b", "SELECT * FROM a JOIN b ON a.id = b.a_id"),
        (MZ, "SELECT * FROM a LEFT JOIN b ON a.ts >= b.lo AND a.ts < b.hi", "SELECT * FROM a LEFT JOIN b ON a.k = b.k AND a.ts >= b.lo"),
    ],
    "rw_now_placement": [
        (RW, "SELECT NOW() AS t, id FROM events", RW_NOW_UTC),
        (RW, "SELECT MAX(NOW()) FROM events", RW_NOW_UTC),
    ],
    "rw_temporal_filter_form": [(RW, "SELECT id FROM events WHERE ts AT TIME ZONE 'UTC' <> NOW()", RW_NOW_UTC)],
    "rw_temporal_filter_or": [
        (
            RW,
            "SELECT id FROM events WHERE ts AT TIME ZONE 'UTC' > NOW() - INTERVAL '1 hour' OR ts AT TIME ZONE 'UTC' < NOW() - INTERVAL '2 hours'",
            "SELECT id FROM events WHERE ts AT TIME ZONE 'UTC' > NOW() - INTERVAL '1 hour' OR ts IS NULL",
        ),
        (
            RW,
            "SELECT id FROM events WHERE a < 1 OR (ts AT TIME ZONE 'UTC' > NOW() - INTERVAL '2 hours' AND ts AT TIME ZONE 'UTC' <= NOW() - INTERVAL '1 hour')",
            "SELECT id FROM events WHERE ts AT TIME ZONE 'UTC' > NOW() - INTERVAL '2 hours' AND ts AT TIME ZONE 'UTC' <= NOW() - INTERVAL '1 hour'",
        ),
    ],
    "rw_temporal_filter_utc": [
        (RW, "SELECT id FROM events WHERE CAST(ts AS TIMESTAMPTZ) > NOW() - INTERVAL '1 hour'", RW_NOW_UTC),
        (RW, "SELECT id FROM events WHERE ts > NOW() - INTERVAL '1 hour'", RW_NOW_UTC),
    ],
    "rw_nested_loop_join": [
        (RW, "SELECT * FROM a CROSS JOIN b", "SELECT * FROM a JOIN b ON a.id = b.a_id"),
        (RW, "SELECT * FROM a, b", "SELECT * FROM a JOIN b USING (id)"),
        (RW, "SELECT r.t + k.shift FROM r, (VALUES (INTERVAL '1 hour'), (INTERVAL '2 hours')) AS k(shift)",
         "SELECT r.t + k.shift FROM r JOIN (VALUES (1, INTERVAL '1 hour')) AS k(n, shift) ON r.n = k.n"),
        (RW, "SELECT * FROM s LEFT JOIN r ON r.t >= s.bucket AND r.t < s.bucket + INTERVAL '1 hour'",
         "SELECT * FROM s LEFT JOIN r ON r.bucket = s.bucket AND r.t < s.bucket + INTERVAL '1 hour'"),
        (RW, "SELECT * FROM a JOIN b ON a.x = 1", "SELECT * FROM a JOIN b ON a.x IS NOT DISTINCT FROM b.x"),
    ],
    "rw_generate_series": [(
        RW,
        "SELECT s.bucket FROM (SELECT MIN(ts) AS lo, MAX(ts) AS hi FROM t) AS bounds, generate_series(bounds.lo, bounds.hi, INTERVAL '1 hour') AS s(bucket)",
        "SELECT s.bucket FROM generate_series(CAST('2026-01-01 00:00:00+00' AS TIMESTAMPTZ), NOW(), INTERVAL '1 hour') AS s(bucket)",
    )],
    "rw_percentile": [
        (RW, "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY amount) FROM t", "SELECT AVG(amount) FROM t"),
        (RW, "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY amount) FROM t", "SELECT MIN(amount) FROM t"),
    ],
    "rw_clock": [
        (RW, "SELECT id FROM events WHERE ts AT TIME ZONE 'UTC' > CURRENT_TIMESTAMP - INTERVAL '1 hour'", RW_NOW_UTC),
        (RW, "SELECT id FROM events WHERE d > CURRENT_DATE", "SELECT id FROM events WHERE d > DATE '2026-01-01'"),
    ],
    "now_at_time_zone": [
        (MZ, "SELECT id FROM events WHERE ts > CURRENT_TIMESTAMP AT TIME ZONE 'UTC' - INTERVAL '1 hour'", MZ_NOW),
        (RW, "SELECT id FROM events WHERE ts > CURRENT_TIMESTAMP AT TIME ZONE 'UTC' - INTERVAL '1 hour'", RW_NOW_UTC),
    ],
}
SELF_CASES = [(r, d, bad, good) for r, cases in SELF_TESTS.items() for d, bad, good in cases]


def test_every_rule_has_self_tests():
    assert set(SELF_TESTS) == set(RULES)
    for r in RULES.values():
        assert r.doc and r.url.startswith("https://"), r.id


@pytest.mark.parametrize("rule_id, dialect, bad, good", SELF_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(SELF_CASES)])
def test_rule_self_test(rule_id, dialect, bad, good):
    assert violated_rules(bad, dialect) == {rule_id}, check(bad, dialect)
    assert check(good, dialect) == [], check(good, dialect)
    [first, *_] = check(bad, dialect)
    assert first.engine == dialect and first.url == RULES[rule_id].url and ": " in first.message


def test_rules_can_be_chosen_and_turned_off():
    bad = SELF_TESTS["rw_percentile"][0][1] + " CROSS JOIN b"
    assert violated_rules(bad, RW) == {"rw_percentile", "rw_nested_loop_join"}
    assert violated_rules(bad, RW, only={"rw_percentile"}) == {"rw_percentile"}
    assert violated_rules(bad, RW, skip={"rw_percentile"}) == {"rw_nested_loop_join"}
    with pytest.raises(ValueError):
        check(bad, RW, only={"no_such_rule"})
    with pytest.raises(ValueError):
        check(bad, "duckdb")


# ---- the sweep: what the compiler emits ----------------------------------------------------

# A derived metric over metrics with different windows, and a windowed fraud metric: the demo has none.
EXTRA_YAML = """
metrics:
  - name: accuracy_drift
    type: derived
    expr: accuracy_3h - accuracy_1d
  - name: accuracy_1d
    type: ratio
    numerator: {measure: leads.lead_count, filter: predictions.label = 1 AND conversions.lead_id IS NOT NULL}
    denominator: {measure: leads.lead_count, filter: predictions.label = 1}
    window: 1 day
  - name: fraud_loss_6h
    type: derived
    expr: transactions.missed_fraud_amount + 25 * transactions.false_alarms
    window: 6 hours
"""
CREATED = DimensionRef("leads.created_at")
TRICKY: dict[str, SemanticQuery] = {
    "or_filter_ratio": SemanticQuery(("accuracy",), ("predictions.model_version",)),
    "windowed_or_filter": SemanticQuery(("accuracy_3h",), ("leads.utm_source",)),
    "window_override_90min": SemanticQuery(("accuracy_3h", "leads.lead_count"), window="90 minutes"),
    "window_override_90min_hourly": SemanticQuery(("accuracy_3h",), (DimensionRef("leads.created_at", "hour"),), window="90 minutes"),
    "derived_over_windows": SemanticQuery(("accuracy_drift",)),
    "derived_over_windows_daily": SemanticQuery(("accuracy_drift",), (DimensionRef("leads.created_at", "day"),)),
    "two_models": SemanticQuery(("leads.lead_count", "transactions.transaction_count")),
    "two_models_windowed": SemanticQuery(("accuracy_3h", "fraud_loss_6h")),
    "two_models_by_dimension": SemanticQuery(("leads.lead_count", "predictions.avg_score"), ("predictions.model_version",)),
    "metric_filter": SemanticQuery(("accuracy", "precision"), ("leads.utm_source",), (Filter("accuracy", ">", 0.5),)),
    "metric_filter_windowed": SemanticQuery(("accuracy_3h",), ("leads.utm_source",), (Filter("accuracy_3h", ">=", 0.1),)),
    "dimensions_only": SemanticQuery(dimensions=("leads.utm_source",)),
    "dimensions_only_primary_key": SemanticQuery(dimensions=("leads.lead", "leads.utm_source")),
    "dimensions_only_joined": SemanticQuery(dimensions=("leads.utm_source", "predictions.model_version")),
    "time_filter": SemanticQuery(("leads.lead_count",), filters=(Filter("leads.created_at", ">=", "2026-02-20"),)),
    "time_filter_windowed": SemanticQuery(("accuracy_3h",), filters=(Filter("leads.created_at", "between", ["2026-02-01", "2026-02-20"]),)),
    "rolling_time_range": SemanticQuery(("accuracy_3h",), (DimensionRef("leads.created_at", "day"),),
                                        (Filter("leads.created_at", ">=", "2026-02-20"), Filter("leads.created_at", "<", "2026-02-23"))),
    "median": SemanticQuery(("transactions.median_amount",), ("transactions.merchant_category",)),
    "p95": SemanticQuery(("transactions.p95_amount",)),
    "median_windowed": SemanticQuery(("transactions.median_amount", "transactions.p95_amount"), window="3 hours"),
    "as_of": SemanticQuery(("accuracy_3h", "fraud_loss"), as_of=dt.datetime(2026, 3, 1, 12)),
    "as_of_rolling": SemanticQuery(("accuracy_3h",), (DimensionRef("leads.created_at", "hour"),), as_of=dt.datetime(2026, 3, 1, 12)),
    "ordered_limited": SemanticQuery(("fraud_loss",), ("transactions.merchant_category",), limit=5),
}
for grain in ("minute", "hour", "day", "month"):
    TRICKY[f"rolling_{grain}"] = SemanticQuery(("accuracy_3h",), (DimensionRef("leads.created_at", grain),))
    TRICKY[f"rolling_{grain}_by_source"] = SemanticQuery(("accuracy_3h", "leads.lead_count"), (DimensionRef("leads.created_at", grain), "leads.utm_source"))
TRICKY["rolling_hour_window_override_2h"] = SemanticQuery(("leads.lead_count",), (DimensionRef("leads.created_at", "hour"),), window="2 hours")


@cache
def _models(tmp: Path):
    extra = tmp / "sweep_metrics"
    shutil.copytree(REPO / "metrics", extra, dirs_exist_ok=True)
    (extra / "sweep_extra.yml").write_text(EXTRA_YAML)
    return load_model(REPO / "metrics"), load_model(extra)


def _sweep_queries(demo) -> dict[str, SemanticQuery]:
    names = demo.metric_names()
    queries = {name: SemanticQuery((name,)) for name in names}
    queries |= {f"{a}+{b}": SemanticQuery((a, b)) for a, b in itertools.combinations(names, 2)}
    queries["all_metrics"] = SemanticQuery(tuple(names))
    return queries


@cache
def sweep(dialect: str, tmp: Path) -> tuple[list[tuple[str, Violation]], dict[str, str]]:
    """(query name, violation) for every violation, and the refusals (query name -> message)."""
    demo, extended = _models(tmp)
    cases = [(name, demo, q) for name, q in _sweep_queries(demo).items()]
    cases += [(f"tricky:{name}", extended, q) for name, q in TRICKY.items()]
    violations, refusals = [], {}
    for name, model, query in cases:
        try:
            sql = compile_query(model, query, dialect)
        except QueryError as e:
            refusals[name] = e.message
            continue
        violations += [(name, v) for v in check(sql, dialect)]
    for name in demo.materializations:  # what deploy maintains in the engine
        sql = compile_materialization(demo, name, dialect).sql(dialect=dialect)
        violations += [(f"materialization:{name}", v) for v in check(sql, dialect)]
    return violations, refusals


def report(violations: list[tuple[str, Violation]], refusals: dict[str, str]) -> str:
    """Violations grouped by rule (the queries, one example fragment each), then refusals."""
    by_rule: dict[str, list[tuple[str, Violation]]] = defaultdict(list)
    for name, v in violations:
        by_rule[v.rule].append((name, v))
    lines = []
    for rule_id, found in sorted(by_rule.items()):
        queries = sorted({name for name, _ in found})
        lines.append(f"{rule_id} ({RULES[rule_id].url}): {len(found)} in {len(queries)} queries")
        lines.append(f"  e.g. {found[0][1].message}")
        lines.append(f"  queries: {', '.join(queries)}")
    lines += [f"refused {name}: {message}" for name, message in sorted(refusals.items())]
    return "\n".join(lines)


@pytest.mark.parametrize("dialect", ENGINES)
def test_compiled_sql_breaks_no_rule(dialect, tmp_path_factory):
    violations, refusals = sweep(dialect, tmp_path_factory.getbasetemp())
    summary = report(violations, refusals)
    print(f"\n{dialect}: {len(violations)} violations, {len(refusals)} refusals\n{summary}")
    assert not violations, f"{dialect}: compiled SQL breaks streaming rules:\n{summary}"


def test_read_time_fill_is_checked_below_its_series_only():
    """The compiler's fill of a rolling series' empty buckets (a one-shot read) is exempt by its
    exact shape; its groups level stays checked, and a series anywhere else is still refused."""
    groups = "SELECT d0, COUNT(*) AS m0 FROM t WHERE t.at AT TIME ZONE 'UTC' > NOW() - INTERVAL '1 day' GROUP BY d0"
    fill = ("WITH _series_groups AS ({groups}) SELECT s.bucket AS d0, COALESCE(g.m0, 0) AS m0 "
            "FROM (SELECT MIN(d0) AS lo, MAX(d0) AS hi FROM _series_groups) AS bounds, "
            "generate_series(bounds.lo, bounds.hi, INTERVAL '1 hour') AS s(bucket) "
            "LEFT JOIN _series_groups AS g ON g.d0 = s.bucket")
    assert violated_rules(fill.format(groups=groups), RW) == set()
    assert "rw_nested_loop_join" in violated_rules(fill.format(groups=groups + " CROSS JOIN u"), RW)
    elsewhere = fill.replace("WITH _series_groups", "WITH other").replace("FROM _series_groups", "FROM other").replace(
        "JOIN _series_groups", "JOIN other")
    assert "rw_generate_series" in violated_rules(elsewhere.format(groups=groups), RW)
