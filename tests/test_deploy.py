"""deploy and refresh on the real DuckDB and the local PostgreSQL.

The demo is deployed into a schema of its own; a second deploy changes nothing; a changed
materialization is the only object replaced; a deploy that fails or is killed halfway leaves
the engine as before; after new rows and a refresh, routed reads equal the base tables and
hand-written SQL; a stale materialization is not read.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

import reference
from conftest import REPO, make_project
from metrics_layer import deploy
from metrics_layer.cli import main as cli
from metrics_layer.project import load_project
from metrics_layer.query import DimensionRef, SemanticQuery
from metrics_layer.service import MetricsService
from test_metrics_numbers import assert_same_rows

SCHEMA = f"ml_deploy_{os.getpid()}"
VERSION = DimensionRef("predictions.model_version")
BY_VERSION = SemanticQuery(("accuracy", "precision"), (VERSION,))
DEMO_TABLES = ("leads", "prediction_events", "conversions", "transactions", "fraud_scores", "chargebacks")


@pytest.fixture(params=["duckdb", "postgres"])
def target(request, tmp_path):
    """(project folder, url, engine kind): a demo project whose deploy schema is SCHEMA."""
    if request.param == "duckdb":
        path = tmp_path / "demo.duckdb"
        shutil.copyfile(request.getfixturevalue("demo_duckdb_path"), path)
        url = f"duckdb:///{path}"
    else:  # a private copy of the demo tables: tests here change rows
        import psycopg

        shared = request.getfixturevalue("demo_postgres_url")
        own = f"{SCHEMA}_data"
        with psycopg.connect(shared, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{own}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{own}"')
            for table in DEMO_TABLES:
                conn.execute(f'CREATE TABLE "{own}".{table} AS SELECT * FROM {table}')
        url = shared.split("?")[0] + f"?options=-csearch_path%3D{own}"
    folder = make_project(tmp_path / "project", url, f"result_cache: false\ndeploy:\n  schema: {SCHEMA}\n")
    yield folder, url, request.param
    if request.param == "postgres":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
            conn.execute(f'DROP SCHEMA IF EXISTS "{own}" CASCADE')


def _service(folder) -> MetricsService:
    svc = MetricsService(load_project(folder))
    svc.read_only_engine = False  # the tests deploy and change rows through it
    return svc


def _deploy(svc: MetricsService) -> deploy.Plan:
    plan = deploy.plan_deploy(svc.model, svc.engine, SCHEMA)
    deploy.apply(svc.engine, plan)
    svc.forget_routes()
    return plan


def _state(svc: MetricsService) -> dict:
    """What the engine holds: the metadata rows, and the rows of every materialization."""
    deployed = deploy.read_deployed(svc.engine, SCHEMA)
    held = {name: (d.digest, d.object) for name, d in deployed.items()}
    for name, d in deployed.items():
        if d.kind == deploy.MATERIALIZATION:
            held[name + " rows"] = sorted(map(repr, svc.engine.execute(f'SELECT * FROM "{SCHEMA}"."{d.object}"').rows))
    return held


def test_deploy_twice_changes_nothing_and_reads_route(target, capsys):
    folder, _, _ = target
    assert cli(["deploy", "--project", str(folder), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "11 to create" in out and "CREATE VIEW" in out
    svc = _service(folder)
    assert deploy.read_deployed(svc.engine, SCHEMA) == {}, "a dry run changes nothing"

    assert cli(["deploy", "--project", str(folder)]) == 0
    assert "deployed: 11 changed" in capsys.readouterr().out
    second = deploy.plan_deploy(svc.model, svc.engine, SCHEMA)
    assert second.statements == [] and {c.action for c in second.changes} == {"unchanged"}
    assert cli(["deploy", "--project", str(folder)]) == 0
    assert "11 unchanged" in capsys.readouterr().out

    explained = svc.explain(BY_VERSION)
    assert explained.materialization == "conversion_by_model_version"
    assert explained.freshness["refreshed_at"] and explained.freshness["refresh_every_s"] == 300
    result = svc.run(BY_VERSION)
    assert result.freshness["materialization"] == "conversion_by_model_version"
    # the model views hold the deduplicated rows
    n = svc.engine.execute(f'SELECT COUNT(*), COUNT(DISTINCT lead_id) FROM "{SCHEMA}"."predictions"').rows[0]
    assert n[0] == n[1] > 0


def test_routed_reads_equal_base_tables_and_hand_written_sql_after_new_rows_and_refresh(target):
    folder, url, kind = target
    svc = _service(folder)
    _deploy(svc)
    base = MetricsService(load_project(make_project(folder.parent / "base", url, "result_cache: false\ndeploy:\n  route: false\n")),
                          engine=svc.engine)
    before = base.run(BY_VERSION).rows
    assert svc.explain(BY_VERSION).materialization == "conversion_by_model_version"
    assert_same_rows(svc.run(BY_VERSION).rows, before, "routed before")

    # New rows: flipped labels, removed conversions, duplicate predictions (deduplicated away)
    svc.engine.run_statements([
        "UPDATE prediction_events SET label = 1 - label WHERE lead_id % 7 = 0",
        "DELETE FROM conversions WHERE lead_id % 11 = 0",
        "INSERT INTO prediction_events SELECT * FROM prediction_events WHERE lead_id % 13 = 0",
    ])
    after = base.run(BY_VERSION).rows
    assert after != before
    assert_same_rows(svc.run(BY_VERSION).rows, before, "routed, not refreshed yet: the stored rows")

    assert cli(["refresh", "--project", str(folder)]) == 0
    svc.forget_routes()
    hand = svc.engine.execute(reference.conversion_metrics_by_model_version()).rows
    routed = svc.run(BY_VERSION)
    assert routed.freshness is not None
    assert_same_rows(routed.rows, after, "routed after refresh")
    assert_same_rows([r[:3] for r in hand], after, "hand-written")
    for query, mat in (
        (SemanticQuery(("accuracy", "leads.lead_count", "accuracy_3h")), "conversion_now"),
        (SemanticQuery(("accuracy_3h", "leads.lead_count"), (DimensionRef("leads.created_at", "hour"),)), "accuracy_hourly"),
        (SemanticQuery(("accuracy",), (DimensionRef("leads.created_at", "day"),)), "accuracy_hourly"),
    ):
        assert svc.explain(query).materialization == mat
        assert_same_rows(svc.run(query).rows, base.run(query).rows, mat)


def test_a_changed_materialization_is_the_only_object_replaced(target):
    folder, _, _ = target
    svc = _service(folder)
    _deploy(svc)
    path = folder / "metrics" / "conversion.yml"
    text = path.read_text()
    path.write_text(text.replace("metrics: [accuracy_3h, accuracy, precision, recall, leads.lead_count]",
                                 "metrics: [accuracy_3h, accuracy, precision, leads.lead_count]"))
    changed = _service(folder)
    plan = _deploy(changed)
    assert [(c.action, c.name) for c in plan.changed] == [("replace", "conversion_now")]
    assert deploy.plan_deploy(changed.model, changed.engine, SCHEMA).statements == []
    # the service of the old model no longer reads what the new deploy stored
    reasons = dict(svc.explain(SemanticQuery(("recall",))).not_used)
    assert "differs" in reasons["conversion_now"]
    path.write_text(text.replace("  - name: accuracy_hourly\n", "  - name: accuracy_by_hour\n"))
    renamed = _deploy(_service(folder))
    assert sorted((c.action, c.name) for c in renamed.changed) == [
        ("create", "accuracy_by_hour"), ("drop", "accuracy_hourly"), ("replace", "conversion_now")]


def test_a_failing_deploy_changes_nothing(target):
    folder, _, _ = target
    svc = _service(folder)
    _deploy(svc)
    before = _state(svc)
    path = folder / "metrics" / "conversion.yml"
    path.write_text(path.read_text().replace("metrics: [accuracy_3h, accuracy, precision, recall, leads.lead_count]",
                                             "metrics: [accuracy_3h, precision, leads.lead_count]"))
    changed = _service(folder)
    plan = deploy.plan_deploy(changed.model, changed.engine, SCHEMA)
    plan.statements.insert(len(plan.statements) - 1, "SELECT * FROM no_such_table_here")
    with pytest.raises(deploy.DeployError, match="nothing was changed"):
        deploy.apply(changed.engine, plan)
    assert _state(_service(folder)) == before


KILL = textwrap.dedent("""
    import os, signal, sys
    from metrics_layer import deploy
    from metrics_layer.project import load_project
    from metrics_layer.service import MetricsService

    svc = MetricsService(load_project(sys.argv[1]))
    svc.read_only_engine = False
    plan = deploy.plan_deploy(svc.model, svc.engine, sys.argv[2])
    stop = int(sys.argv[3])

    def progress(done, total, statement):
        if done == stop:
            print("killing at", done, "of", total, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    deploy.apply(svc.engine, plan, progress)
    print("finished", flush=True)
""")


def test_a_deploy_killed_halfway_leaves_the_engine_as_before(target):
    folder, _, kind = target
    svc = _service(folder)
    _deploy(svc)
    before = _state(svc)
    svc.engine.close()
    path = folder / "metrics" / "conversion.yml"
    path.write_text(path.read_text().replace("dimensions: [predictions.model_version]", "dimensions: [predictions.model_version, leads.utm_source]"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", KILL, str(folder), SCHEMA, "4"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "killing at 4" in proc.stdout
    after = _service(folder)
    # the old model's objects, unchanged; the new model still sees its work to do
    after_state = _state(MetricsService(load_project(folder), engine=after.engine, model=svc.model))
    assert after_state == before
    assert [c.name for c in deploy.plan_deploy(after.model, after.engine, SCHEMA).changed] == ["conversion_by_model_version"]


def test_a_stale_materialization_is_not_read(target):
    folder, _, _ = target
    svc = _service(folder)
    _deploy(svc)
    svc.engine.run_statements([
        f"UPDATE \"{SCHEMA}\".metrics_layer_deployments SET refreshed_at = refreshed_at - INTERVAL '1 hour' "
        "WHERE name = 'conversion_by_model_version'"])
    svc.forget_routes()
    explained = svc.explain(BY_VERSION)
    assert explained.materialization is None
    assert "stale" in dict(explained.not_used)["conversion_by_model_version"]
    assert svc.run(BY_VERSION).freshness is None
    assert deploy.refresh(svc.engine, SCHEMA, due_only=True) == ["conversion_by_model_version"]
    svc.forget_routes()
    assert svc.explain(BY_VERSION).materialization == "conversion_by_model_version"


def test_refresh_of_an_unknown_materialization_is_refused(target, capsys):
    folder, _, _ = target
    assert cli(["refresh", "--project", str(folder), "nope"]) == 1
    assert "not deployed" in capsys.readouterr().err


def test_every_door_says_when_a_result_comes_from_a_materialization(tmp_path, demo_duckdb_path, monkeypatch):
    """REST and GraphQL `extensions.freshness`, a NOTICE and EXPLAIN over the SQL endpoint, and
    serve's refresher, on a deployed DuckDB demo."""
    import httpx
    import psycopg

    from http_server import serve_project
    from metrics_layer.serve.refresher import Refresher
    from test_sql_endpoint import USERS_YAML, Endpoint

    monkeypatch.setenv("ML_TEST_FRAUD_PW", "fraud-pw")
    path = tmp_path / "demo.duckdb"
    shutil.copyfile(demo_duckdb_path, path)
    folder = make_project(tmp_path / "project", f"duckdb:///{path}", f"deploy:\n  schema: {SCHEMA}\n" + USERS_YAML)
    assert cli(["deploy", "--project", str(folder)]) == 0

    server = serve_project(folder)
    server.service.read_only_engine = False  # the refresher below writes (deploy: {refresh: true} under serve)
    try:
        body = {"metrics": ["accuracy", "precision"], "dimensions": ["predictions.model_version"]}
        answer = httpx.post(f"{server.url}/api/v1/query", json=body, timeout=60).json()
        assert answer["extensions"]["freshness"]["materialization"] == "conversion_by_model_version"
        assert 'FROM "' + SCHEMA in answer["sql"]
        unrouted = httpx.post(f"{server.url}/api/v1/query", json={"metrics": ["accuracy"], "dimensions": ["leads.utm_source"]}, timeout=60).json()
        assert "extensions" not in unrouted
        graphql = httpx.post(f"{server.url}/graphql", json={"query": "{ conversion_monitoring { model_version accuracy } }"}, timeout=60).json()
        assert graphql["extensions"]["freshness"][0]["materialization"] == "conversion_by_model_version"
        rest = {r["predictions.model_version"]: r["accuracy"] for r in answer["rows"]}
        assert {r["model_version"]: r["accuracy"] for r in graphql["data"]["conversion_monitoring"]} == rest

        refresher = Refresher(server.service)
        assert refresher.once() == []  # just deployed: nothing is due
        server.service.engine.run_statements([f"UPDATE \"{SCHEMA}\".metrics_layer_deployments SET refreshed_at = refreshed_at - INTERVAL '10 minutes'"])
        assert sorted(refresher.once()) == ["accuracy_hourly", "accuracy_hourly_7d", "conversion_by_model_version", "conversion_now",
                                           "merchant_fraud_now"]
    finally:
        server.stop()
        server.service.engine.close()

    endpoint = Endpoint(folder).start()
    try:
        with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
            notices = []
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            rows = conn.execute("SELECT model_version, accuracy FROM conversion_monitoring GROUP BY 1 ORDER BY 1").fetchall()
            assert {v: a for v, a in rows} == rest
            assert any("conversion_by_model_version" in n for n in notices), notices
            plan = [r[0] for r in conn.execute("EXPLAIN SELECT model_version, accuracy FROM conversion_monitoring GROUP BY 1").fetchall()]
            assert any("reads materialization conversion_by_model_version" in line for line in plan), plan
            assert any(line.startswith("-- not accuracy_hourly:") for line in plan), plan
    finally:
        endpoint.stop()


def test_serve_refreshes_a_read_only_duckdb_file_into_a_copy_while_the_cli_reads_the_file(tmp_path, demo_duckdb_path):
    """serve opens a DuckDB file read-only so that the CLI can read it too; its refresher then
    writes due materializations into `<name>.refreshed.duckdb`, which routing reads while it is
    the fresher. The CLI, in another process at the same time, reads the file's own (stale)
    materializations' base tables; every number equals the base tables and hand-written SQL."""
    from metrics_layer.serve.refresher import Refresher

    path = tmp_path / "demo.duckdb"
    shutil.copyfile(demo_duckdb_path, path)
    folder = make_project(tmp_path / "project", f"duckdb:///{path}", f"deploy:\n  schema: {SCHEMA}\n")
    assert cli(["deploy", "--project", str(folder)]) == 0
    writer = _service(folder)  # the deploy an hour ago: every materialization is stale in the file
    writer.engine.run_statements([f"UPDATE \"{SCHEMA}\".metrics_layer_deployments SET refreshed_at = refreshed_at - INTERVAL '1 hour'"])
    filed = {n: d.refreshed_at for n, d in deploy.read_deployed(writer.engine, SCHEMA).items() if d.kind == deploy.MATERIALIZATION}
    writer.engine.close()

    svc = MetricsService(load_project(folder))  # read-only, as under serve
    refresher = Refresher(svc, tick=3600).start()
    try:
        assert svc.engine.read_only and svc.engine.refreshed_copy == "metrics_layer_refreshed"
        assert (tmp_path / "demo.refreshed.duckdb").exists()
        assert sorted(refresher.once()) == sorted(filed)
        assert refresher.once() == []  # the copy is fresh: nothing is due
        deployed = deploy.read_deployed(svc.engine, SCHEMA)
        assert all(deployed[n].catalog == "metrics_layer_refreshed" and deployed[n].refreshed_at > filed[n] for n in filed)

        explained = svc.explain(BY_VERSION)
        assert explained.materialization == "conversion_by_model_version", explained.not_used
        assert '"metrics_layer_refreshed"."' + SCHEMA in explained.sql
        base = MetricsService(load_project(make_project(tmp_path / "base", f"duckdb:///{path}", "deploy:\n  route: false\n")),
                              engine=svc.engine)
        hand = svc.engine.execute(reference.conversion_metrics_by_model_version()).rows
        routed = svc.run(BY_VERSION)
        assert_same_rows(routed.rows, base.run(BY_VERSION).rows, "routed from the copy")
        assert_same_rows([r[:3] for r in hand], routed.rows, "hand-written")
        assert routed.freshness["refreshed_at"] == deployed["conversion_by_model_version"].refreshed_at.isoformat(sep=" ") + "Z"
        for query in (SemanticQuery(("accuracy", "leads.lead_count", "accuracy_3h")),
                      SemanticQuery(("accuracy_3h", "leads.lead_count"), (DimensionRef("leads.created_at", "hour"),))):
            assert svc.explain(query).materialization is not None
            assert_same_rows(svc.run(query).rows, base.run(query).rows, str(query.metrics))

        # the result cache keeps routed reads of the copy, and a refresh of the copy empties it
        cache = svc.engine.result_cache
        svc.run(BY_VERSION), svc.run(BY_VERSION)
        hits = cache.hits
        assert_same_rows(svc.run(BY_VERSION).rows, routed.rows, "cached")
        assert cache.hits == hits + 1
        svc.engine.run_statements([f"UPDATE metrics_layer_refreshed.\"{SCHEMA}\".metrics_layer_refreshes "
                                   "SET refreshed_at = refreshed_at - INTERVAL '1 hour'"])
        assert "conversion_by_model_version" in refresher.once()
        assert not cache.peek(svc.explain(BY_VERSION).sql)

        # meanwhile the CLI reads the file (read-only too); its materializations are stale there
        cli_run = subprocess.run([sys.executable, "-m", "metrics_layer.cli", "query", "--project", str(folder), "-m", "accuracy",
                                  "-b", "predictions.model_version", "--format", "csv", "--show-sql"],
                                 capture_output=True, text=True, timeout=300)
        assert cli_run.returncode == 0, cli_run.stderr
        assert "metrics_layer_refreshed" not in cli_run.stderr + cli_run.stdout and "read from materialization" not in cli_run.stderr
        printed = {v: float(a) if a else None for v, a in csv.reader(cli_run.stdout.splitlines()[1:])}
        assert printed == {("" if r[0] is None else str(r[0])): (None if r[1] is None else pytest.approx(r[1])) for r in routed.rows}

        # a second serve on the same file (another process: DuckDB's lock is per process) cannot
        # take the copy: it says so and serves without refreshing, reading the file
        second = textwrap.dedent(f"""
            import logging, sys
            logging.basicConfig(stream=sys.stderr, level=logging.INFO)
            from metrics_layer.project import load_project
            from metrics_layer.query import DimensionRef, SemanticQuery
            from metrics_layer.serve.refresher import Refresher
            from metrics_layer.service import MetricsService
            svc = MetricsService(load_project({str(folder)!r}))
            refresher = Refresher(svc, tick=3600).start()
            assert refresher._thread is None and svc.engine.refreshed_copy is None
            result = svc.run(SemanticQuery(("accuracy",), (DimensionRef("predictions.model_version"),)))
            print(sorted(((str(v), a) for v, a in result.rows), key=str), result.freshness)
        """)
        other = subprocess.run([sys.executable, "-c", second], capture_output=True, text=True, timeout=300)
        assert other.returncode == 0, other.stderr
        assert "another metrics-layer serve" in other.stderr and "not refreshed under serve" in other.stderr, other.stderr
        assert other.stdout.strip() == f"{sorted(((str(v), a) for v, a, _ in routed.rows), key=str)} None", other.stdout
    finally:
        refresher.stop()
        svc.engine.close()

    # with serve stopped, metrics-layer refresh writes the file: fresher than the copy, it is read again
    assert cli(["refresh", "--project", str(folder)]) == 0
    again = MetricsService(load_project(folder))
    again.engine.attach_refreshed_copy()
    assert deploy.read_deployed(again.engine, SCHEMA)["conversion_by_model_version"].catalog is None
    assert "metrics_layer_refreshed" not in again.explain(BY_VERSION).sql
    again.engine.close()


@pytest.mark.parametrize("dialect", ["materialize", "risingwave"])
def test_streaming_deploy_creates_new_names_then_swaps_then_drops(dialect):
    """Without transactional DDL a changed object is created under a new name, the metadata
    row is swapped to it, and only then the old object is dropped. (Planned against a DuckDB
    catalog: neither engine runs here; the DDL is what docs/engines.md lists.)"""
    from metrics_layer.engines import connect
    from metrics_layer.model import load_model

    engine = connect("duckdb:///:memory:")
    engine.dialect = dialect  # the catalog queries deploy makes are the same on all four
    model = load_model(REPO / "metrics")
    first = deploy.plan_deploy(model, engine, SCHEMA, {"cluster": "serving"})
    creates = [i for i, s in enumerate(first.statements) if s.startswith("CREATE MATERIALIZED VIEW")]
    inserts = [i for i, s in enumerate(first.statements) if s.startswith("INSERT INTO")]
    assert len(creates) == 5 and max(creates) < min(inserts)
    assert all("__" in first.statements[i].split(" AS ")[0] for i in creates)
    if dialect == "materialize":
        assert all(' IN CLUSTER "serving" ' in first.statements[i] for i in creates)
        assert sum(s.startswith("CREATE INDEX IN CLUSTER") or s.startswith("CREATE DEFAULT INDEX") for s in first.statements) == 5
    engine.run_statements(first.statements[:2] + [s for s in first.statements if s.startswith("INSERT INTO")])
    engine.run_statements([f"UPDATE \"{SCHEMA}\".metrics_layer_deployments SET digest = 'old', object = 'conversion_now__old' "
                           "WHERE name = 'conversion_now'"])
    second = deploy.plan_deploy(model, engine, SCHEMA)
    assert [(c.action, c.name) for c in second.changed] == [("replace", "conversion_now")]
    order = [s.split(" (")[0][:90] for s in second.statements[2:]]
    assert order[0].startswith(f'CREATE MATERIALIZED VIEW "{SCHEMA}"."conversion_now__')
    assert order[-1] == f'DROP MATERIALIZED VIEW IF EXISTS "{SCHEMA}"."conversion_now__old"'
    assert any(s.startswith("DELETE FROM") for s in order) and any(s.startswith("INSERT INTO") for s in order)


def test_a_window_ending_now_is_stored_as_of_its_refresh(tmp_path):
    """With leads up to this hour, the stored trailing window equals the base query as of the
    refreshed_at that freshness reports (the transaction time it was computed at)."""
    import datetime as dt

    from metrics_layer.demo_data import generate_duckdb

    end = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)  # no lead after now
    path = tmp_path / "now.duckdb"
    generate_duckdb(str(path), leads=20_000, end=end, progress=lambda _: None)
    folder = make_project(tmp_path / "project", f"duckdb:///{path}", f"result_cache: false\ndeploy:\n  schema: {SCHEMA}\n")
    svc = _service(folder)
    _deploy(svc)
    base = MetricsService(load_project(folder), engine=svc.engine)
    base.project.settings["deploy"] = {"schema": SCHEMA, "route": False}
    for query in (SemanticQuery(("accuracy_3h", "leads.lead_count")),
                  SemanticQuery(("accuracy_3h",), (VERSION,))):
        routed = svc.run(query)
        assert routed.freshness is not None
        as_of = routed.freshness["refreshed_at"].rstrip("Z")
        expected = base.run(dataclasses.replace(query, as_of=as_of)).rows
        assert any(v is not None for row in expected for v in row[-1:]), "the window should hold rows"
        assert_same_rows(routed.rows, expected, str(query.metrics))


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_a_retention_keeps_the_newest_buckets_and_serves_only_queries_inside_them(kind, tmp_path):
    """accuracy_hourly_7d (retention: 7 days) stores just the hours newer than its refresh less
    7 days; a query whose time filter starts inside them reads it and equals the base tables
    and hand-written SQL; one reaching further back, or with no time filter, does not."""
    import datetime as dt

    from metrics_layer.query import Filter

    end = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    if kind == "duckdb":
        from metrics_layer.demo_data import generate_duckdb

        path = tmp_path / "now.duckdb"
        generate_duckdb(str(path), leads=20_000, end=end, progress=lambda _: None)
        url = f"duckdb:///{path}"
    else:
        import psycopg

        from conftest import postgres_or_skip
        from metrics_layer.demo_data import generate_postgres

        server, data = postgres_or_skip(), f"{SCHEMA}_now"
        generate_postgres(server, leads=20_000, end=end, progress=lambda _: None, schema=data)
        url = f"{server}?options=-csearch_path%3D{data}"
    try:
        folder = make_project(tmp_path / "project", url, f"result_cache: false\ndeploy:\n  schema: {SCHEMA}\n")
        svc = _service(folder)
        _deploy(svc)
        base = MetricsService(load_project(folder), engine=svc.engine)
        base.project.settings["deploy"] = {"schema": SCHEMA, "route": False}
        stored = deploy.read_deployed(svc.engine, SCHEMA)["accuracy_hourly_7d"]
        kept_after = stored.refreshed_at - dt.timedelta(days=7)
        low, high, n = svc.engine.execute(f'SELECT MIN(d0), MAX(d0), COUNT(*) FROM "{SCHEMA}"."{stored.object}"').rows[0]
        everything = svc.engine.execute(f'SELECT COUNT(*) FROM "{SCHEMA}"."accuracy_hourly"').rows[0][0]
        assert low > kept_after and n < everything, (low, kept_after, n, everything)
        assert high == end - dt.timedelta(hours=1) or high == end, high

        hour = DimensionRef("leads.created_at", "hour")
        start = end - dt.timedelta(days=3)
        inside = SemanticQuery(("accuracy", "accuracy_3h", "leads.lead_count"), (hour,),
                               (Filter("leads.created_at", ">=", start.isoformat()),))
        explained = svc.explain(inside)
        assert explained.materialization == "accuracy_hourly_7d", explained.not_used
        routed = svc.run(inside).rows
        assert_same_rows(routed, base.run(inside).rows, "routed inside the retention")
        hand = svc.engine.execute(
            "SELECT date_trunc('hour', created_at) AS h, COUNT(*) FROM leads "
            f"WHERE created_at >= TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}' GROUP BY 1").rows
        # an hour with no lead is still a row when the trailing 3 hours hold some (accuracy_3h),
        # with lead_count 0; the hand-written count has no row for it
        hand = dict(hand)
        assert {r[0]: r[3] for r in routed if r[3]} == hand
        assert all(r[0] not in hand and r[2] is not None for r in routed if not r[3])

        before = dataclasses.replace(inside, filters=(Filter("leads.created_at", ">=", (end - dt.timedelta(days=8)).isoformat()),))
        unfiltered = dataclasses.replace(inside, filters=())
        for query, why in ((before, "before that"), (unfiltered, "no filter on leads.created_at")):
            explained = svc.explain(query)
            assert explained.materialization != "accuracy_hourly_7d"
            reason = dict(explained.not_used)["accuracy_hourly_7d"]
            assert "keeps only the hour buckets of leads.created_at of the last 7 days" in reason and why in reason, reason
            assert_same_rows(svc.run(query).rows, base.run(query).rows, why)
    finally:
        if kind == "postgres":
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
                conn.execute(f'DROP SCHEMA IF EXISTS "{data}" CASCADE')


def _streaming_stand_in(tmp_path, dialect: str) -> MetricsService:
    """A service over in-memory DuckDB that says it is `dialect`, holding the deploy metadata
    (not the objects: only the streaming engine could create them) as deploy would write it."""
    from metrics_layer.engines import connect

    engine = connect("duckdb:///:memory:")
    engine.dialect = dialect
    folder = make_project(tmp_path / "project", "\"duckdb:///:memory:\"", f"deploy:\n  schema: {SCHEMA}\n")
    svc = MetricsService(load_project(folder), engine=engine)
    plan = deploy.plan_deploy(svc.model, engine, SCHEMA)
    engine.run_statements(plan.statements[:2] + [s for s in plan.statements if s.startswith("INSERT INTO")])
    return svc


def test_materialize_freshness_is_its_wallclock_lag(tmp_path):
    """On Materialize a routed result says how far the materialization trails the wall clock,
    from the catalog view its freshness guide queries. Materialize does not run here: its
    catalog tables are recreated in DuckDB with the documented columns, and the query deploy
    sends is the Materialize dialect's, run as written."""
    from metrics_layer.service import describe_freshness

    svc = _streaming_stand_in(tmp_path, "materialize")
    engine = svc.engine
    deployed = deploy.read_deployed(engine, SCHEMA)
    mine = deployed["conversion_by_model_version"].object
    engine.run_statements([
        "CREATE SCHEMA mz_internal", "CREATE SCHEMA mz_catalog",
        "CREATE TABLE mz_catalog.mz_schemas (id TEXT, name TEXT)",
        "CREATE TABLE mz_catalog.mz_objects (id TEXT, schema_id TEXT, name TEXT)",
        "CREATE TABLE mz_internal.mz_wallclock_global_lag_recent_history (object_id TEXT, lag INTERVAL, occurred_at TIMESTAMPTZ)",
        f"INSERT INTO mz_catalog.mz_schemas VALUES ('u1', '{SCHEMA}'), ('u2', 'elsewhere')",
        f"INSERT INTO mz_catalog.mz_objects VALUES ('u10', 'u1', '{mine}'), ('u11', 'u2', '{mine}')",
        "INSERT INTO mz_internal.mz_wallclock_global_lag_recent_history VALUES "
        "('u10', INTERVAL '40 seconds', TIMESTAMPTZ '2026-12-01 10:00:00+00'), "
        "('u10', INTERVAL '2.5 seconds', TIMESTAMPTZ '2026-12-01 10:01:00+00'), "  # the latest minute
        "('u11', INTERVAL '900 seconds', TIMESTAMPTZ '2026-12-01 10:02:00+00')",  # same name, other schema
    ])
    freshness = svc.explain(BY_VERSION).freshness
    assert freshness == {"materialization": "conversion_by_model_version", "maintained_by": "materialize",
                         "refreshed_at": None, "refresh_every_s": None, "lag_s": 2.5, "lag_kind": "wallclock"}
    assert describe_freshness(freshness) == "kept current by materialize, 2.5 s behind the wall clock"
    engine.run_statements(["DROP TABLE mz_internal.mz_wallclock_global_lag_recent_history"])
    svc.forget_routes()
    assert svc.explain(BY_VERSION).freshness["lag_s"] is None  # the catalog cannot say: still routed, lag unknown


def test_risingwave_freshness_is_at_most_one_checkpoint_interval(tmp_path):
    """RisingWave documents no per-view lag: a batch read sees the latest checkpoint, taken every
    barrier_interval_ms x checkpoint_frequency, which SHOW PARAMETERS lists as rows of (Name,
    Value, Mutable) (docs.risingwave.com/reference/data-persistence). RisingWave does not run
    here: the statement deploy sends is checked, and its documented rows are fed to the dialect
    through a DuckDB table standing in for SHOW PARAMETERS."""
    from metrics_layer.compile import dialects
    from metrics_layer.service import describe_freshness

    rw = dialects.get("risingwave")
    assert rw.lag_query(SCHEMA, ["o"]).sql(dialect="risingwave") == "SHOW PARAMETERS"
    documented = [("barrier_interval_ms", "1000", "t"), ("checkpoint_frequency", "1", "t"),
                  ("sstable_size_mb", "256", "f")]  # the defaults, as the docs list them
    assert rw.lags(documented, ["a", "b"]) == {"a": (1.0, "checkpoint_interval"), "b": (1.0, "checkpoint_interval")}
    assert rw.lags([("barrier_interval_ms", "250", "t"), ("checkpoint_frequency", "10", "t")], ["a"]) == \
        {"a": (2.5, "checkpoint_interval")}
    assert rw.lags([("barrier_interval_ms", "1000", "t")], ["a"]) == {}  # cannot say: no lag, not a guess

    svc = _streaming_stand_in(tmp_path, "risingwave")
    engine = svc.engine
    engine.run_statements(["CREATE TABLE show_parameters (name TEXT, value TEXT, mutable BOOLEAN)",
                           "INSERT INTO show_parameters VALUES ('barrier_interval_ms', '500', true), "
                           "('checkpoint_frequency', '4', true), ('state_store', 'hummock+s3://b', false)"])
    sent = []
    execute = engine.execute

    def execute_show_as_table(sql, **kw):
        if sql == "SHOW PARAMETERS":
            sent.append(sql)
            sql = "SELECT * FROM show_parameters"
        return execute(sql, **kw)

    engine.execute = execute_show_as_table
    freshness = svc.explain(BY_VERSION).freshness
    assert sent == ["SHOW PARAMETERS"]
    assert freshness == {"materialization": "conversion_by_model_version", "maintained_by": "risingwave",
                         "refreshed_at": None, "refresh_every_s": None, "lag_s": 2.0, "lag_kind": "checkpoint_interval"}
    assert describe_freshness(freshness) == "kept current by risingwave, reads its latest checkpoint (taken every 2.0 s)"
