"""metrics-layer validate | list | compile | query | demo | serve.

Heavy modules (duckdb, psycopg, the HTTP stack) are imported inside the commands that need
them, so `compile` and `validate` answer fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from typing import Any, Sequence

_FILTER = re.compile(
    r"^\s*(?P<field>[\w.]+)\s*(?P<op>!=|<=|>=|=|<|>|\s+not\s+in\s+|\s+in\s+|\s+is\s+not\s+null\s*$|\s+is\s+null\s*$|\s+contains\s+|\s+starts\s+with\s+|\s+between\s+)(?P<value>.*)$",
    re.IGNORECASE,
)


class UserError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 1
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into head and the like
        sys.stderr.close()
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # the user-facing errors of every layer
        from .deploy import DeployError
        from .model import ValidationFailed
        from .project import ProjectError
        from .query import QueryError

        if isinstance(e, ValidationFailed):
            print(str(e), file=sys.stderr)
            return 1
        if isinstance(e, (QueryError, ProjectError, DeployError)):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metrics-layer", description="A semantic metrics layer: YAML metrics served over SQL (PostgreSQL wire), GraphQL and REST.")
    sub = parser.add_subparsers(dest="command")

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = command("validate", _validate, "Check the project's YAML, and its tables, columns and types on the engine; print every error with file:line.")
    p.add_argument("directory", nargs="?", help="project folder (default: current project or the demo)")
    p.add_argument("--project", help="project folder")
    p.add_argument("--offline", action="store_true", help="check the YAML only, without connecting to the engine")

    p = command("list", _list, "List metrics (with descriptions), dimensions and views.")
    p.add_argument("--project", help="project folder")

    for name, handler, text in (
        ("compile", _compile, "Print the SQL for a query, for a dialect."),
        ("query", _query, "Run a query on the project's engine and print the result."),
    ):
        p = command(name, handler, text)
        p.add_argument("--project", help="project folder")
        p.add_argument("--metric", "-m", action="append", default=[], help="metric (repeatable), e.g. accuracy or leads.lead_count")
        p.add_argument("--by", "-b", action="append", default=[], help="dimension (repeatable), e.g. predictions.model_version or leads.created_at:hour")
        p.add_argument("--grain", help="grain for time dimensions given without one: " + ", ".join(("minute", "hour", "day", "week", "month", "quarter", "year")))
        p.add_argument("--filter", "-f", action="append", default=[], help="filter (repeatable): \"leads.utm_source = google\", \"accuracy > 0.8\", \"leads.utm_source in google,newsletter\", \"leads.created_at between 2026-11-01 and 2026-11-08\"")
        p.add_argument("--order-by", action="append", default=[], help="field, \"field desc\" or =-field for descending (repeatable)")
        p.add_argument("--limit", type=int)
        p.add_argument("--offset", type=int)
        p.add_argument("--window", help="override every metric's trailing window, e.g. '3 hours'")
        p.add_argument("--as-of", help="evaluate with only rows at or before this time (ISO 8601)")
        if name == "compile":
            p.add_argument("--dialect", help="duckdb, postgres, materialize or risingwave (default: the project's engine)")
            p.add_argument("--explain", action="store_true",
                           help="also say which deployed materialization the query reads and why each other one is not used "
                                "(connects to the engine)")
        else:
            p.add_argument("--format", choices=("table", "csv", "json"), default="table")
            p.add_argument("--show-sql", action="store_true", help="print the SQL run, to stderr")

    p = command("features", _features, "A training set: every metric as it was at each spine row's time (point in time, no later row leaks in).")
    p.add_argument("--project", help="project folder")
    spine = p.add_mutually_exclusive_group(required=True)
    spine.add_argument("--spine", help="spine file (.csv or .parquet): a time column and, keyed by --entity, a key column "
                                       "(the demo writes its prediction events as spine_predictions.csv next to its database)")
    spine.add_argument("--spine-sql", metavar="SELECT", help="the spine as one SELECT run on the engine (nothing else is accepted)")
    spine.add_argument("--spine-table", metavar="TABLE", help="the spine as a table or view in the engine")
    p.add_argument("--at", default="at", help="the spine's time column (default: at)")
    p.add_argument("--metric", "-m", action="append", default=[], required=True, help="metric (repeatable)")
    p.add_argument("--entity", help="key every metric by this entity (name or model.entity), e.g. leads.lead")
    p.add_argument("--key", help="the spine's column holding the entity's values (default: the entity's name)")
    p.add_argument("--filter", "-f", action="append", default=[], help="row filter on a dimension (repeatable), as for query")
    p.add_argument("--out", required=True, help="output file (.csv or .parquet): the spine's columns plus one per metric")
    p.add_argument("--show-sql", action="store_true", help="print the SQL run, to stderr")

    p = command("demo", _demo, "Write the demo's synthetic data into DuckDB (and PostgreSQL with --postgres).")
    p.add_argument("--leads", type=int, default=100_000, help="number of leads and of transactions (default 100000)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--end", help="last moment of the data, ISO 8601 (default: today 00:00 UTC)")
    p.add_argument("--duckdb", help="DuckDB file to write (default: the demo's own database)")
    p.add_argument("--postgres", metavar="URL", help="also write the tables into this PostgreSQL database")

    p = command("deploy", _deploy, "Create the model's views and materializations in the engine; change only what changed.")
    p.add_argument("--project", help="project folder")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its DDL, change nothing")
    p.add_argument("--engine", metavar="URL", help="engine to deploy into (default: the project's)")
    p.add_argument("--schema", help="schema for the deployed objects (default: deploy.schema of the project, else metrics_layer)")

    p = command("refresh", _refresh, "Recompute deployed materializations (PostgreSQL, DuckDB; streaming engines keep them current).")
    p.add_argument("names", nargs="*", help="materializations to refresh (default: all deployed)")
    p.add_argument("--project", help="project folder")
    p.add_argument("--engine", metavar="URL", help="engine (default: the project's)")
    p.add_argument("--schema", help="schema of the deployed objects (default: deploy.schema of the project, else metrics_layer)")

    p = command("monitor", _monitor, "Evaluate the project's monitors; print one line per monitor and group; "
                                     "exit 2 when any alerts (0 when none does).")
    p.add_argument("--project", help="project folder")
    p.add_argument("--once", action="store_true", help="evaluate every monitor once and exit (for cron and CI)")

    p = command("report", _report, "Write a self-contained HTML page: a metric per time bucket and group (e.g. per model "
                                   "version), its estimate and label coverage, and the monitors' states.")
    p.add_argument("--project", help="project folder")
    p.add_argument("--metric", "-m", required=True, help="the metric, e.g. conversion_3h.accuracy or accuracy_3h")
    p.add_argument("--by", "-b", action="append", default=[], help="dimension to draw one line per value of (repeatable), "
                                                                   "e.g. predictions.model_version")
    p.add_argument("--grain", default="hour", help="bucket of the time axis: " + ", ".join(("minute", "hour", "day", "week", "month", "quarter", "year")) + " (default hour)")
    p.add_argument("--last", default="7d", help="how far back from --as-of (or now): 7d, 48h, 90m, 2w (default 7d)")
    p.add_argument("--as-of", help="draw the page as of this moment (ISO 8601): only rows at or before it")
    p.add_argument("--coverage", help="coverage metric to draw (default: the metric's classification's <name>.coverage)")
    p.add_argument("--min-coverage", type=float, help="hatch buckets under this coverage share (default: the monitors' min_coverage, else 0.5)")
    p.add_argument("--out", required=True, help="the HTML file to write")

    p = command("serve", _serve, "Serve the project over HTTP (GraphQL, REST) and the PostgreSQL wire protocol.")
    p.add_argument("--project", help="project folder")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, help="HTTP port (default 4000)")
    p.add_argument("--sql-port", type=int, help="PostgreSQL wire port (default 15432)")
    return parser


# ---- commands ---------------------------------------------------------------------------

def _load_model(project):
    """The project's model, from the on-disk cache when its YAML is unchanged (model/cache.py)."""
    from .model.cache import load_model_cached
    from .project import data_home

    return load_model_cached(project.metrics_dir, data_home() / "cache")


def _validate(args) -> int:
    from .project import load_project

    project = load_project(args.project or args.directory)
    model = _load_model(project)
    summary = f"ok: {len(model.models)} models, {len(model.metrics)} metrics, {len(model.views)} views in {project.metrics_dir}"
    _check_materializations(project, model)
    if args.offline:
        print(f"{summary} (offline: YAML only)")
        return 0
    checked_on, skipped = _engine_schema_errors(project, model)
    if skipped:
        print(f"note: {skipped}; checked the YAML only", file=sys.stderr)
        print(f"{summary} (YAML only: the engine was not checked)")
        return 0
    print(f"{summary}; tables, columns and types checked on {checked_on}")
    return 0


def _check_materializations(project, model) -> None:
    """Raise ValidationFailed for materializations the project's engine cannot store exactly."""
    from .compile.ddl import check_materializations
    from .engines import EngineError, engine_dialect
    from .model import ValidationFailed

    try:
        dialect = engine_dialect(project.engine_url)
    except EngineError:
        return  # reported by the engine check
    errors = check_materializations(model, dialect)
    if errors:
        raise ValidationFailed(errors)


def _engine_schema_errors(project, model) -> tuple[str, str | None]:
    """Check `model` on the project's engine, opened read-only; raises ValidationFailed with the
    problems. Returns (engine shown, why the engine was not checked or None)."""
    from .engines import EngineError, connect, duckdb_path, engine_dialect
    from .engines.postgres_engine import _redact
    from .model import ValidationFailed
    from .model.schema_check import check_schema, first_line

    try:
        dialect = engine_dialect(project.engine_url)
    except EngineError as e:
        return project.engine_url, e.message
    if dialect == "duckdb" and duckdb_path(project.engine_url, project.root) == ":memory:":
        return dialect, "the engine is an in-memory DuckDB database, which holds no tables to check against"
    shown = _redact(project.engine_url)
    if dialect == "duckdb" and not os.path.exists(path := duckdb_path(project.engine_url, project.root)):
        return shown, f"cannot reach the engine: the DuckDB file {path} does not exist"
    try:
        engine = connect(project.engine_url, project.root, read_only=True, result_cache=False)
    except EngineError as e:
        return shown, f"cannot reach the engine: {first_line(e.message)}"
    try:
        errors = check_schema(model, engine)
    except EngineError as e:  # the first catalog query: the engine is down or refuses us
        return shown, f"cannot reach the engine: {first_line(e.message)}"
    finally:
        engine.close()
    if errors:
        raise ValidationFailed(errors)
    return shown, None


def _list(args) -> int:
    from .project import load_project

    model = _load_model(load_project(args.project))
    print("Metrics:")
    for metric in model.metrics.values():
        window = (f" [window {metric.window.text}" + (f", label delay {metric.label_delay.text}]" if metric.label_delay else "]")
                  if metric.window else f" [label delay {metric.label_delay.text}]" if metric.label_delay else "")
        print(f"  {metric.name} ({metric.type}){window}: {_one_line(metric.description)}")
    print("Measures (usable as metrics):")
    for m in model.models.values():
        for measure in m.measures.values():
            print(f"  {measure.qualified_name} ({measure.agg}): {_one_line(measure.description)}")
    print("Dimensions:")
    for m in model.models.values():
        for dim in m.dimensions.values():
            print(f"  {dim.qualified_name} ({dim.type}): {_one_line(dim.description)}")
    if model.views:
        print("Views:")
        for view in model.views.values():
            print(f"  {view.name}: {_one_line(view.description)}")
    return 0


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split()) or "-"


def _semantic_query(args, model):
    from .query import DimensionRef, SemanticQuery

    dimensions = []
    grain_taken = False
    for by in args.by:
        name, _, grain = by.partition(":")
        dim = model.dimension(name)
        if not grain and args.grain and (dim is None or dim.type == "time"):
            grain, grain_taken = args.grain, True  # --grain applies to the time dimensions given without one
        dimensions.append(DimensionRef(name, grain or None))
    if args.grain and not grain_taken:
        _refuse_unused_grain(args.grain, args.by, model)
    order = [_order(o) for o in args.order_by]
    return SemanticQuery(
        metrics=tuple(args.metric), dimensions=tuple(dimensions), filters=tuple(_filter(f) for f in args.filter),
        order_by=tuple(order), limit=args.limit, offset=args.offset, window=args.window, as_of=args.as_of,
    )


def _refuse_unused_grain(grain: str, by: Sequence[str], model) -> None:
    """--grain with no time dimension to take it would be silently ignored: say so instead."""
    times = [d.qualified_name for m in model.models.values() for d in m.dimensions.values() if d.type == "time"]
    given = f"the -b given ({', '.join(by)}) hold none without a grain" if by else "no -b was given"
    fix = f"add one, e.g. -b {times[0]} (time dimensions: {', '.join(times)})" if times else "the model has no time dimension"
    raise UserError(f"--grain {grain} applies to a time dimension in -b given without a grain, and {given}; {fix}")


def _order(text: str):
    from .query import OrderBy

    words = text.split()
    if len(words) == 2 and words[1].lower() in ("asc", "desc"):
        return OrderBy(words[0], words[1].lower() == "desc")
    return OrderBy(text[1:], True) if text.startswith("-") else OrderBy(text)


def _filter(text: str):
    from .query import Filter

    match = _FILTER.match(text)
    if not match:
        raise UserError(f"cannot read filter {text!r}; write e.g. \"leads.utm_source = google\" or \"accuracy > 0.8\"")
    op = " ".join(match.group("op").lower().split())
    raw = match.group("value").strip()
    if op == "between":
        value: Any = _between(text, raw)
    elif op in ("in", "not in"):
        value = tuple(_value(v) for v in raw.strip("()").split(","))
    elif op in ("is null", "is not null"):
        value = None
    else:
        value = _value(raw)
    return Filter(match.group("field"), op, value)


_BETWEEN_AND = re.compile(r"\s+and\s+", re.IGNORECASE)


def _between(text: str, raw: str) -> tuple[Any, Any]:
    """`between A and B` (as in SQL) or `between A,B`."""
    parts = _BETWEEN_AND.split(raw) if _BETWEEN_AND.search(raw) else raw.strip("()").split(",")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise UserError(f"cannot read filter {text!r}: between needs two values, "
                        "e.g. \"leads.created_at between 2026-11-01 and 2026-11-08\" or \"... between 2026-11-01,2026-11-08\"")
    return _value(parts[0]), _value(parts[1])


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _value(text: str) -> Any:
    text = text.strip().strip("'\"")
    if not _NUMBER.match(text):  # 'nan', 'inf' and '1_000' stay text, as written
        return text
    try:
        return int(text)
    except ValueError:
        return float(text)


def _ensure_demo_data(project) -> None:
    from .project import demo_database

    if project.engine_url == f"duckdb:///{demo_database()}" and demo_database().exists():
        from .features import DEMO_SPINE

        if not (demo_database().parent / DEMO_SPINE).exists():  # demo data from before issue 11
            print(f"demo: the demo data predates merchant_id and {DEMO_SPINE}; run `metrics-layer demo` "
                  "to rewrite it", file=sys.stderr)
    if project.engine_url == f"duckdb:///{demo_database()}" and not demo_database().exists():
        from .demo_data import generate_duckdb

        print(f"demo: first run, writing synthetic demo data to {demo_database()} ...", file=sys.stderr)
        demo_database().parent.mkdir(parents=True, exist_ok=True)
        generate_duckdb(str(demo_database()), progress=lambda msg: print(msg, file=sys.stderr))
        from .features import write_demo_spine

        print(f"demo: spine of its prediction events written to {write_demo_spine(str(demo_database()))}", file=sys.stderr)


def _prepare(args):
    from .project import load_project

    project = load_project(args.project)
    return project, _load_model(project)


def _compile(args) -> int:
    from .compile import compile_query
    from .engines import engine_dialect

    project, model = _prepare(args)
    dialect = args.dialect or engine_dialect(project.engine_url)
    query = _semantic_query(args, model)
    if not args.explain:
        print(compile_query(model, query, dialect))
        return 0
    from .service import MetricsService

    if project.is_demo:
        _ensure_demo_data(project)
    explained = MetricsService(project, model=model).explain(query, dialect)
    for line in explained.lines():
        print(f"-- {line}")
    print(explained.sql)
    return 0


def _query(args) -> int:
    from .service import MetricsService

    project, model = _prepare(args)
    if project.is_demo:
        _ensure_demo_data(project)
    result = MetricsService(project, model=model).run(_semantic_query(args, model))
    if args.show_sql:
        print(result.sql, file=sys.stderr)
        if result.freshness is not None:
            from .service import describe_freshness

            print(f"-- read from materialization {result.freshness['materialization']} ({describe_freshness(result.freshness)})",
                  file=sys.stderr)
    _print_result(result, args.format)
    return 0


def _features(args) -> int:
    from .features import spine_from_sql, spine_from_table, training_set
    from .service import MetricsService

    project, model = _prepare(args)
    if project.is_demo:
        _ensure_demo_data(project)
    if not args.out.endswith((".csv", ".parquet")):
        raise UserError(f"--out {args.out!r}: give a .csv or .parquet file")
    service = MetricsService(project, model=model)
    if args.spine_sql is not None:
        spine, what = spine_from_sql(service, args.spine_sql), "--spine-sql"
    elif args.spine_table is not None:
        spine, what = spine_from_table(service, args.spine_table), f"table {args.spine_table}"
    else:
        spine, what = args.spine, args.spine
    print(f"features: {', '.join(args.metric)} over {what} ...", file=sys.stderr)
    table, sql = training_set(service, spine, args.metric, at=args.at,
                              entity=args.entity, key=args.key, filters=[_filter(f) for f in args.filter], show_sql=True)
    if args.show_sql:
        print(sql, file=sys.stderr)
    if args.out.endswith(".parquet"):
        import pyarrow.parquet as pq

        pq.write_table(table, args.out)
    else:
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, args.out)
    print(f"features: {table.num_rows} rows x {len(args.metric)} metrics written to {args.out}", file=sys.stderr)
    return 0


def _monitor(args) -> int:
    import time

    from .monitors import ALERTING, Monitors, describe
    from .service import MetricsService

    project, model = _prepare(args)
    if project.is_demo:
        _ensure_demo_data(project)
    if not model.monitors:
        print("no monitors: add a top-level monitors: list to a YAML file of the metrics folder", file=sys.stderr)
        return 0
    # Read-only, like serve: history goes to monitors.history_store (beside a DuckDB file, else the engine).
    service = MetricsService(project, model=model)
    monitors = Monitors(service, query_timeout=project.query_timeout or 60.0)
    due = {name: 0.0 for name in model.monitors}
    while True:
        alerting = False
        for name, monitor in model.monitors.items():
            if time.monotonic() < due[name]:
                continue
            due[name] = time.monotonic() + monitor.every.seconds
            for state in monitors.evaluate(monitor) or []:
                print(describe(state), flush=True)
                alerting |= state.state == ALERTING
        if args.once:
            return 2 if alerting else 0
        time.sleep(max(0.5, min(due.values()) - time.monotonic()))


def _report(args) -> int:
    from . import report
    from .query import parse_timestamp
    from .service import MetricsService

    project, model = _prepare(args)
    if project.is_demo:
        _ensure_demo_data(project)
    if not args.out.endswith((".html", ".htm")):
        raise UserError(f"--out {args.out!r}: give an .html file")
    as_of = parse_timestamp(args.as_of, "--as-of") if args.as_of else None
    progress = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    data = report.collect(MetricsService(project, model=model), args.metric, tuple(args.by), args.grain, args.last,
                          as_of=as_of, coverage=args.coverage, min_coverage=args.min_coverage, progress=progress)
    page = report.render(data)
    with open(args.out, "w", encoding="utf-8") as out:
        out.write(page)
    print(f"report: {len(data.buckets)} buckets x {len(data.groups)} groups written to {args.out}", file=sys.stderr)
    return 0


def _print_result(result, fmt: str) -> None:
    from .json_values import dumps, json_value

    names = [c.name for c in result.columns]
    if fmt == "json":  # one object per line: readable, and numbers keep their exact digits
        lines = [dumps(dict(zip(names, row))).decode() for row in result.rows]
        print("[\n  " + ",\n  ".join(lines) + "\n]" if lines else "[]")
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows([["" if v is None else json_value(v) for v in row] for row in result.rows])
    else:
        cells = [[_cell(v) for v in row] for row in result.rows]
        widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
        numeric = [c.type in ("integer", "bigint", "double", "decimal") for c in result.columns]
        print("  ".join(n.ljust(w) for n, w in zip(names, widths)))
        print("  ".join("-" * w for w in widths))
        for row in cells:
            print("  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(row, widths, numeric)))
        print(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)


def _demo(args) -> int:
    from .demo_data import generate_duckdb, generate_postgres
    from .project import demo_database
    from .query import parse_timestamp

    end = parse_timestamp(args.end, "--end") if args.end else None
    if args.leads <= 0:
        raise UserError("--leads must be a positive number")
    path = args.duckdb or str(demo_database())
    from pathlib import Path

    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    generate_duckdb(path, leads=args.leads, seed=args.seed, end=end)
    print(f"demo: DuckDB data written to {path}")
    from .features import write_demo_spine

    print(f"demo: spine of its prediction events (for metrics-layer features) written to {write_demo_spine(path)}")
    if args.postgres:
        generate_postgres(args.postgres, leads=args.leads, seed=args.seed, end=end)
        print(f"demo: PostgreSQL data written to {args.postgres}")
    return 0


def _deploy_target(args):
    """(project, model, engine, schema) for deploy and refresh."""
    from .deploy import DEFAULT_SCHEMA
    from .engines import connect

    project, model = _prepare(args)
    if project.is_demo and not args.engine:
        _ensure_demo_data(project)
    engine = connect(args.engine or project.engine_url, project.root, result_cache=False)
    return project, model, engine, args.schema or project.deploy.get("schema") or DEFAULT_SCHEMA


def _deploy(args) -> int:
    project, model, engine, schema = _deploy_target(args)
    try:
        return _deploy_into(args, project, model, engine, schema)
    finally:
        engine.close()


def _deploy_into(args, project, model, engine, schema) -> int:
    from . import deploy
    from .compile.ddl import check_materializations
    from .model import ValidationFailed

    errors = check_materializations(model, engine.dialect)
    if errors:
        raise ValidationFailed(errors)
    options = {"cluster": str(project.deploy["cluster"])} if project.deploy.get("cluster") else {}
    plan = deploy.plan_deploy(model, engine, schema, options)
    print(f"deploy into {engine.dialect} schema {schema} (model version {plan.model_version}):")
    for line in plan.summary():
        print(f"  {line}")
    if args.dry_run:
        print("-- dry run: nothing was changed; the DDL it would run:" if plan.statements else "-- dry run: nothing to change")
        for statement in plan.statements:
            print(statement + ";")
        return 0
    if not plan.statements:
        return 0
    how = "in one transaction" if plan.transactional else "new objects first, then a swap"

    def progress(done: int, total: int, statement: str) -> None:
        print(f"  [{done + 1}/{total}] {statement[:100]}{'...' if len(statement) > 100 else ''}", file=sys.stderr)

    print(f"applying {len(plan.statements)} statements {how} ...", file=sys.stderr)
    deploy.apply(engine, plan, progress)
    print(f"deployed: {len(plan.changed)} changed")
    return 0


def _refresh(args) -> int:
    from . import deploy

    _, _, engine, schema = _deploy_target(args)
    try:
        done = deploy.refresh(engine, schema, args.names or None)
    finally:
        engine.close()
    if not done:
        print("nothing refreshed" + (f": {engine.dialect} keeps materializations current" if deploy.dialects.get(engine.dialect).streaming
                                      else f": no materializations deployed in {schema}"))
    for name in done:
        print(f"refreshed {schema}.{name}")
    return 0


def _serve(args) -> int:
    try:
        from .serve.run import serve
    except ImportError as e:  # the HTTP stack is an install extra
        raise UserError(f"serve needs the server dependencies ({e.name}); pip install 'metrics-layer[serve]'") from None
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
