"""The SQL endpoint, end to end: the real server on a loopback port, driven by real clients.

Every client's numbers for the mission metrics are compared with independent hand-written SQL
(tests/reference.py) run directly on the same data. Catalog statements captured from real
clients (tests/golden/catalog/) must run and show the views with typed columns.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import reference
from conftest import make_project

psycopg = pytest.importorskip("psycopg")

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden" / "catalog"
AS_OF = dt.datetime(2026, 2, 25, 12, 0, 0)
PASSWORD = "s3cret-pw"

SLOW_YAML = """
models:
  - name: slow
    description: A very large synthetic range, to test cancelling a long query.
    sql: SELECT range AS id, range % 10 AS k FROM range(50000000000)
    entities: [{name: slow_row, type: primary, expr: id}]
    dimensions:
      - {name: k, type: number}
    measures:
      - {name: total, agg: sum, expr: id % 7}
views:
  - name: slow_view
    description: Takes minutes unless cancelled.
    metrics: [slow.total]
    dimensions: [slow.k]
"""

USERS_YAML = f"""
sql:
  auth: scram-sha-256
users:
  analyst: {{password: {PASSWORD}}}
  fraud_team: {{password_env: ML_TEST_FRAUD_PW, views: [fraud_monitoring]}}
"""


# The SQL endpoint alone, in a process of its own (serve_until_stdin_closes: prints its port).
SERVER = [sys.executable, "-m", "metrics_layer.serve.pgwire.endpoint"]


class Endpoint:
    """`metrics-layer`'s SQL endpoint (start_sql_endpoint) in a server process of its own."""

    def __init__(self, project_dir: Path):
        self.project_dir = project_dir

    def start(self) -> "Endpoint":
        self.process = subprocess.Popen(
            [*SERVER, str(self.project_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(HERE.parent),
        )
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.process.kill()
            raise RuntimeError(f"the SQL endpoint did not start: {line!r}")
        self.port = int(line)
        return self

    def stop(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def dsn(self, user: str = "analyst", password: str = PASSWORD) -> str:
        return f"host=127.0.0.1 port={self.port} user={user} password={password} dbname=metrics"

    def url(self, user: str = "analyst", password: str = PASSWORD, driver: str = "postgresql") -> str:
        return f"{driver}://{user}:{password}@127.0.0.1:{self.port}/metrics"


@pytest.fixture(scope="module")
def data_path(demo_duckdb_path) -> Path:
    return demo_duckdb_path


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory, data_path, truth):
    os.environ["ML_TEST_FRAUD_PW"] = "fraud-pw"
    folder = make_project(tmp_path_factory.mktemp("sqlproj"), f"duckdb:///{data_path}", USERS_YAML)
    (folder / "metrics" / "slow.yml").write_text(SLOW_YAML)
    ep = Endpoint(folder).start()  # the server process inherits ML_TEST_FRAUD_PW
    yield ep
    ep.stop()


@pytest.fixture(scope="module")
def truth(data_path, tmp_path_factory):
    """Run hand-written reference SQL directly on the same DuckDB data (a byte copy of the file,
    made before the server opens it: DuckDB lets one process at a time open a file)."""
    import duckdb

    copy = tmp_path_factory.mktemp("truth") / "demo.duckdb"
    shutil.copyfile(data_path, copy)

    def run(sql: str) -> list[tuple]:
        con = duckdb.connect(str(copy), read_only=True)
        try:
            con.execute("SET TimeZone = 'UTC'")
            return con.execute(sql).fetchall()
        finally:
            con.close()

    return run


# ---- comparing numbers -------------------------------------------------------------------

def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (float, decimal.Decimal)) or isinstance(b, (float, decimal.Decimal)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, str) and not isinstance(b, str):
        return a == str(b)
    return a == b


def assert_rows(actual, expected, label: str = "") -> None:
    actual, expected = [tuple(r) for r in actual], [tuple(r) for r in expected]
    assert len(actual) == len(expected), f"{label}: {len(actual)} rows, expected {len(expected)}\n{actual}\n{expected}"
    for a, e in zip(actual, expected):
        assert len(a) == len(e) and all(same(x, y) for x, y in zip(a, e)), f"{label}: {a} != {e}"


Q_ACCURACY = "SELECT model_version, accuracy FROM conversion_monitoring GROUP BY 1 ORDER BY 1"
Q_FRAUD = "SELECT merchant_category, fraud_loss FROM fraud_monitoring GROUP BY merchant_category ORDER BY 1"
Q_ACC3H = "SELECT accuracy_3h FROM conversion_monitoring"


def expected_accuracy(truth):
    return [(r[0], r[1]) for r in truth(reference.conversion_metrics_by_model_version())]


def expected_fraud(truth):
    return [(r[0], r[1]) for r in truth(reference.fraud_by_merchant_category())]


def expected_acc3h(truth, window: str = "3 hours"):
    return truth(reference.trailing_accuracy_at(AS_OF, window, "1 day"))


# ---- psql ----------------------------------------------------------------------------------

def psql(endpoint, *commands: str, user: str = "analyst", password: str = PASSWORD, check: bool = True):
    if shutil.which("psql") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs psql (apt-get install postgresql-client)")
        pytest.skip("psql is not installed")
    args = ["psql", "-h", "127.0.0.1", "-p", str(endpoint.port), "-U", user, "-d", "metrics", "-X", "-A", "-F", "|"]
    for command in commands:
        args += ["-c", command]
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10")
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_psql_lists_describes_and_queries(endpoint, truth):
    out = psql(endpoint, r"\dv").stdout
    assert "public|conversion_monitoring|view|" in out and "public|fraud_monitoring|view|" in out
    out = psql(endpoint, r"\d conversion_monitoring").stdout
    assert "accuracy|double precision" in out and "created_at|timestamp without time zone" in out
    assert "lead_count|bigint" in out and "utm_source|text" in out
    out = psql(endpoint, r"\dv+").stdout
    assert "Quality of the lead-conversion model" in out
    assert "metrics|" in psql(endpoint, r"\l").stdout and "public|" in psql(endpoint, r"\dn").stdout
    lines = psql(endpoint, Q_ACCURACY).stdout.strip().splitlines()
    assert lines[0] == "model_version|accuracy"
    rows = [tuple(line.split("|")) for line in lines[1:-1]]
    expected = expected_accuracy(truth)
    assert [r[0] or None for r in rows] == [e[0] for e in expected]
    assert all(same(float(r[1]) if r[1] else None, e[1]) for r, e in zip(rows, expected))


def test_psql_second_statement_is_classified_on_its_own(endpoint):
    result = psql(endpoint, "SELECT lead_count FROM conversion_monitoring; CREATE TABLE evil (a int)", check=False)
    assert "lead_count" in result.stdout  # the first statement ran
    assert "read-only" in result.stderr  # the second was refused, not run
    result = psql(endpoint, "SELECT 1 AS one; SELECT nope FROM conversion_monitoring; SELECT 2", check=False)
    assert "column \"nope\" does not exist" in result.stderr


# ---- psycopg 3 -----------------------------------------------------------------------------

def test_psycopg_numbers_parameters_and_prepared_statements(endpoint, truth):
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        assert_rows(conn.execute(Q_ACCURACY).fetchall(), expected_accuracy(truth), "accuracy")
        assert_rows(conn.execute(Q_FRAUD).fetchall(), expected_fraud(truth), "fraud_loss")
        expected = dict(expected_accuracy(truth))
        sql = "SELECT model_version, accuracy FROM conversion_monitoring WHERE model_version = %s"
        for run in range(8):  # psycopg prepares on the server from the 5th execution on
            version = "v1" if run % 2 else "v2"
            rows = conn.execute(sql, [version]).fetchall()
            assert len(rows) == 1 and rows[0][0] == version and same(rows[0][1], expected[version]), run
        rows = conn.execute(sql, ["v1"], prepare=True).fetchall()
        assert same(rows[0][1], expected["v1"])
        conn.execute("SET metrics.as_of = '2026-02-25 12:00:00'")
        assert_rows(conn.execute(Q_ACC3H).fetchall(), expected_acc3h(truth), "accuracy_3h")
        conn.execute("SET metrics.window = '6 hours'")
        assert_rows(conn.execute(Q_ACC3H).fetchall(), expected_acc3h(truth, "6 hours"), "accuracy_3h, 6 hours")
        assert conn.execute("SHOW metrics.window").fetchone() == ("6 hours",)
        conn.execute("RESET metrics.window")
        conn.execute("RESET metrics.as_of")
        assert conn.execute("SHOW metrics.as_of").fetchone() == ("",)
        # a time filter bound as a parameter, and a grain
        rows = conn.execute(
            "SELECT date_trunc('day', created_at) AS day, lead_count FROM conversion_monitoring "
            "WHERE created_at >= %s AND created_at < %s GROUP BY 1 ORDER BY 1",
            [dt.datetime(2026, 2, 20), dt.datetime(2026, 2, 23)],
        ).fetchall()
        expected = truth(
            "SELECT date_trunc('day', created_at), count(DISTINCT id) FROM leads "
            "WHERE created_at >= TIMESTAMP '2026-02-20' AND created_at < TIMESTAMP '2026-02-23' GROUP BY 1 ORDER BY 1")
        assert_rows(rows, expected, "leads per day")


def test_rolling_metric_over_a_time_range(endpoint, truth):
    """A BI time-series chart with a range: one row per day in the range, each day's trailing
    window reading the leads before the range's start (issue: 30 rows, first day NULL)."""
    sql = ("SELECT date_trunc('day', created_at) AS d, accuracy_3h, lead_count FROM conversion_monitoring "
           "WHERE created_at >= '2026-02-20' AND created_at < '2026-02-23' GROUP BY 1 ORDER BY 1")
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        rows = conn.execute(sql).fetchall()
    where = "bucket >= TIMESTAMP '2026-02-20' AND bucket < TIMESTAMP '2026-02-23'"
    windows = truth(reference.trailing_accuracy_series("day", buckets_where=where))
    counts = truth("SELECT date_trunc('day', created_at), count(DISTINCT id) FROM leads "
                   "WHERE created_at >= TIMESTAMP '2026-02-20' AND created_at < TIMESTAMP '2026-02-23' GROUP BY 1 ORDER BY 1")
    assert len(rows) == 3 and rows[0][1] is not None
    assert_rows(rows, [(w[0], w[1], c[1]) for w, c in zip(windows, counts)], "accuracy_3h by day over a range")


def test_psycopg_server_side_cursor(endpoint, truth):
    expected = truth("SELECT count(*) FROM (SELECT DISTINCT utm_source, created_at FROM leads)")[0][0]
    with psycopg.connect(endpoint.dsn()) as conn:
        with conn.cursor(name="big") as cur:
            cur.itersize = 500
            cur.execute("SELECT utm_source, created_at FROM conversion_monitoring")
            first = cur.fetchmany(10)
            assert len(first) == 10 and isinstance(first[0][1], dt.datetime)
            rest = sum(1 for _ in cur)
        assert 10 + rest == expected


def test_psycopg_error_then_rollback_keeps_the_connection(endpoint):
    with psycopg.connect(endpoint.dsn()) as conn:
        with pytest.raises(psycopg.errors.UndefinedColumn) as info:
            conn.execute("SELECT acuracy FROM conversion_monitoring")
        assert "did you mean 'accuracy'" in str(info.value)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT lead_count FROM conversion_monitoring")
        conn.rollback()
        assert conn.execute("SELECT lead_count FROM conversion_monitoring").fetchone()[0] > 0


def test_refusals_have_a_sqlstate_and_the_connection_continues(endpoint):
    cases = [
        ("SELECT SUM(accuracy) FROM conversion_monitoring", "0A000", "MEASURE(accuracy)"),
        ("SELECT lead_count FROM conversion_monitoring WHERE utm_source = 'a' OR model_version = 'b'", "0A000", "OR"),
        ("SELECT EXTRACT(hour FROM created_at), lead_count FROM conversion_monitoring", "0A000", "date_trunc"),
        ("CREATE TABLE t (a int)", "25006", "read-only"),
        ("INSERT INTO conversion_monitoring (utm_source) VALUES ('x')", "25006", "read-only"),
        ("DELETE FROM conversion_monitoring", "25006", "read-only"),
        ("DROP TABLE conversion_monitoring", "25006", "read-only"),
        ("SELECT accuracy FROM conversion_monitorng", "42P01", "did you mean 'conversion_monitoring'"),
        ("SELECT acuracy FROM conversion_monitoring", "42703", "did you mean 'accuracy'"),
        ("SELECT id, utm_source FROM leads", "42P01", "not a view"),
        ("SELECT c.relname, v.lead_count FROM pg_class c, conversion_monitoring v", "0A000", "catalog"),
        ("SHOW no_such_setting", "42704", "unrecognized configuration parameter"),
        ("SET metrics.as_of = 'yesterday'", "22007", "metrics.as_of"),
    ]
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        for sql, code, words in cases:
            with pytest.raises(psycopg.Error) as info:
                conn.execute(sql)
            assert info.value.sqlstate == code, (sql, info.value)
            assert words in str(info.value), (sql, str(info.value))
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_cancel_a_long_query(endpoint):
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        outcome = {}

        def run():
            try:
                conn.execute("SELECT k, total FROM slow_view")  # minutes of work: only a cancel ends it
                outcome["error"] = None
            except psycopg.Error as e:
                outcome["error"] = e

        thread = threading.Thread(target=run)
        thread.start()
        # A cancel that arrives before the query starts is lost (as in PostgreSQL): repeat it until
        # the query ends. Each cancel() returns once the server has handled it, so none is left over
        # for the next query. The bound only keeps a broken cancel from hanging the test.
        deadline = time.monotonic() + 120
        while thread.is_alive() and time.monotonic() < deadline:
            conn.cancel()
            thread.join(0.2)
        assert not thread.is_alive(), "the query was not cancelled"
        assert isinstance(outcome["error"], psycopg.errors.QueryCanceled), outcome
        assert conn.execute("SELECT lead_count FROM conversion_monitoring").fetchone()[0] > 0


def test_limit_is_applied_exactly(endpoint, truth):
    expected = truth("SELECT count(*) FROM (SELECT DISTINCT utm_source, created_at FROM leads)")[0][0]
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT utm_source, created_at FROM conversion_monitoring LIMIT 60000").fetchall()
        assert len(rows) == expected  # more than any cap: every row
        assert len(conn.execute("SELECT utm_source, created_at FROM conversion_monitoring LIMIT 7").fetchall()) == 7
        count = conn.execute("SELECT count(*) FROM (SELECT utm_source, created_at FROM conversion_monitoring) t").fetchone()
        assert count == (expected,)
        cur = conn.execute("SELECT * FROM conversion_monitoring LIMIT 0")
        assert cur.fetchall() == [] and [d.name for d in cur.description][:3] == ["utm_source", "model_version", "created_at"]


def test_result_types_equal_the_catalog_types(endpoint):
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        catalog = dict(conn.execute(
            "SELECT a.attname, a.atttypid FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
            "WHERE c.relname = 'fraud_monitoring' AND a.attnum > 0").fetchall())
        assert catalog["fraud_loss"] == 1700 and catalog["false_alarms"] == 20 and catalog["fraud_precision"] == 701
        assert catalog["created_at"] == 1114 and catalog["merchant_category"] == 25
        columns = ", ".join(name for name in catalog if name != "created_at")
        cur = conn.execute(f"SELECT {columns} FROM fraud_monitoring GROUP BY 1, 2")  # runs the engine
        rows = cur.fetchall()
        assert rows and {d.name: d.type_code for d in cur.description} == {k: v for k, v in catalog.items() if k != "created_at"}
        described = conn.cursor()
        described.execute(f"SELECT {columns} FROM fraud_monitoring GROUP BY 1, 2", prepare=True)
        assert [d.type_code for d in described.description] == [d.type_code for d in cur.description]


# ---- asyncpg, pg8000 -----------------------------------------------------------------------

def test_asyncpg_binary_results_and_dollar_parameters(endpoint, truth):
    asyncpg = pytest.importorskip("asyncpg")

    async def go():
        conn = await asyncpg.connect(endpoint.url())
        try:
            rows = await conn.fetch(Q_ACCURACY)
            assert_rows([tuple(r) for r in rows], expected_accuracy(truth), "asyncpg accuracy")
            rows = await conn.fetch(Q_FRAUD)
            assert isinstance(rows[0]["fraud_loss"], decimal.Decimal)
            assert_rows([tuple(r) for r in rows], expected_fraud(truth), "asyncpg fraud_loss")
            rows = await conn.fetch(
                "SELECT merchant_category, fraud_loss FROM fraud_monitoring WHERE merchant_category = $1", "travel")
            assert_rows([tuple(r) for r in rows], [e for e in expected_fraud(truth) if e[0] == "travel"])
            rows = await conn.fetch(
                "SELECT date_trunc('hour', created_at) AS h, lead_count FROM conversion_monitoring "
                "WHERE created_at >= $1 GROUP BY 1 ORDER BY 1 LIMIT $2", dt.datetime(2026, 2, 28), 3)
            assert len(rows) == 3 and isinstance(rows[0]["h"], dt.datetime) and isinstance(rows[0]["lead_count"], int)
            await conn.execute("SET metrics.as_of = '2026-02-25 12:00:00'")
            rows = await conn.fetch(Q_ACC3H)
            assert_rows([tuple(r) for r in rows], expected_acc3h(truth), "asyncpg accuracy_3h")
        finally:
            await conn.close()

    asyncio.run(go())


def test_pg8000(endpoint, truth):
    native = pytest.importorskip("pg8000.native")
    conn = native.Connection("analyst", host="127.0.0.1", port=endpoint.port, password=PASSWORD, database="metrics")
    try:
        assert_rows(conn.run(Q_ACCURACY), expected_accuracy(truth), "pg8000 accuracy")
        assert_rows(conn.run(Q_FRAUD), expected_fraud(truth), "pg8000 fraud_loss")
        rows = conn.run("SELECT model_version, accuracy FROM conversion_monitoring WHERE model_version = :v", v="v2")
        assert_rows(rows, [e for e in expected_accuracy(truth) if e[0] == "v2"])
        conn.run("SET metrics.as_of = '2026-02-25 12:00:00'")
        assert_rows(conn.run(Q_ACC3H), expected_acc3h(truth), "pg8000 accuracy_3h")
    finally:
        conn.close()


# ---- SQLAlchemy, pandas ----------------------------------------------------------------------

def test_sqlalchemy_inspector_and_pandas(endpoint, truth):
    sa = pytest.importorskip("sqlalchemy")
    pd = pytest.importorskip("pandas")
    engine = sa.create_engine(endpoint.url(driver="postgresql+psycopg"))
    try:
        inspector = sa.inspect(engine)
        assert "public" in inspector.get_schema_names()
        views = ["conversion_monitoring", "fraud_monitoring", "merchant_features", "slow_view"]
        assert sorted(inspector.get_view_names()) == views and inspector.get_table_names() == []
        columns = {c["name"]: c for c in inspector.get_columns("conversion_monitoring")}
        assert list(columns)[:3] == ["utm_source", "model_version", "created_at"]
        assert isinstance(columns["accuracy"]["type"], sa.Float) and isinstance(columns["lead_count"]["type"], sa.BigInteger)
        assert isinstance(columns["created_at"]["type"], sa.DateTime)
        assert columns["accuracy"]["comment"].startswith("Share of predicted leads")
        assert inspector.has_table("fraud_monitoring") and not inspector.has_table("leads")
        assert inspector.get_table_comment("fraud_monitoring")["text"].startswith("Cost and quality")
        # The dimension key: rows are one per group; a keyed view's entity is its primary key.
        assert inspector.get_pk_constraint("fraud_monitoring")["constrained_columns"] == []
        assert inspector.get_pk_constraint("merchant_features")["constrained_columns"] == ["merchant"]
        unique = inspector.get_unique_constraints("fraud_monitoring")
        assert [u["column_names"] for u in unique] == [["model_version", "merchant_category", "created_at"]]
        assert [i["column_names"] for i in inspector.get_indexes("conversion_monitoring")] == [["utm_source", "model_version", "created_at"]]
        assert "fraud_loss" in inspector.get_view_definition("fraud_monitoring")
        frame = pd.read_sql(Q_FRAUD, engine)
        assert list(frame.columns) == ["merchant_category", "fraud_loss"]
        assert_rows(frame.itertuples(index=False), expected_fraud(truth), "pandas fraud_loss")
        with engine.connect() as conn:
            frame = pd.read_sql(sa.text("SELECT model_version, accuracy FROM conversion_monitoring WHERE model_version = :v"),
                                conn, params={"v": "v1"})
        assert_rows(frame.itertuples(index=False), [e for e in expected_accuracy(truth) if e[0] == "v1"])
    finally:
        engine.dispose()


def test_views_are_views_with_their_dimension_keys(endpoint, truth):
    """Views are listed as views (\\dv, get_view_names, pg_views, information_schema) or, for a
    session with metrics.views_as = 'table', as tables (\\dt, get_table_names); each view's
    dimensions are its unique key, a keyed view's entity its primary key and first column."""
    sa = pytest.importorskip("sqlalchemy")
    pd = pytest.importorskip("pandas")
    dv = psql(endpoint, "\\dv")
    assert "|conversion_monitoring|view|" in dv.stdout, dv.stdout
    dt_ = psql(endpoint, "\\dt")
    assert "Did not find any" in dt_.stdout + dt_.stderr
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        views = conn.execute("SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1").fetchall()
        assert [v[0] for v in views] == ["conversion_monitoring", "fraud_monitoring", "merchant_features", "slow_view"]
        assert "accuracy" in views[0][1]
        assert conn.execute("SELECT count(*) FROM information_schema.views WHERE table_schema = 'public'").fetchone() == (4,)
        keys = conn.execute(
            "SELECT tc.table_name, tc.constraint_type, string_agg(k.column_name, ',' ORDER BY k.ordinal_position) "
            "FROM information_schema.table_constraints tc JOIN information_schema.key_column_usage k "
            "ON k.constraint_name = tc.constraint_name GROUP BY 1, 2 ORDER BY 1").fetchall()
        assert keys[:3] == [("conversion_monitoring", "UNIQUE", "utm_source,model_version,created_at"),
                            ("fraud_monitoring", "UNIQUE", "model_version,merchant_category,created_at"),
                            ("merchant_features", "PRIMARY KEY", "merchant")]
        index = conn.execute("SELECT i.indisunique, i.indisprimary, i.indkey, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                             "WHERE i.indrelid = 'merchant_features'::regclass").fetchone()
        assert index[:3] == (True, True, "1") and index[3].endswith("USING btree (merchant)")
        # int2vector::varchar prints as PostgreSQL does (SQLAlchemy 1.4's get_indexes, under Superset)
        assert conn.execute("SELECT indkey::varchar FROM pg_index WHERE indrelid = 'conversion_monitoring'::regclass"
                            ).fetchone() == ("1 2 3",)
        # The keyed view answers an online lookup in SQL, equal to hand-written SQL at metrics.as_of.
        conn.execute("SET metrics.as_of = '2026-02-25 12:00:00'")
        rows = conn.execute("SELECT merchant, merchant_fraud_rate_7d FROM merchant_features "
                            "WHERE merchant IN (1, 2, 3, 4, 5) ORDER BY 1").fetchall()
    expected = truth(
        "SELECT t.merchant_id, count(c.transaction_id) / count(*) FROM transactions t LEFT JOIN (SELECT DISTINCT transaction_id "
        "FROM chargebacks WHERE charged_back_at <= TIMESTAMP '2026-02-25 12:00:00') c ON c.transaction_id = t.id "
        "WHERE t.created_at > TIMESTAMP '2026-02-18 12:00:00' AND t.created_at <= TIMESTAMP '2026-02-25 12:00:00' "
        "AND t.merchant_id IN (1, 2, 3, 4, 5) GROUP BY 1 ORDER BY 1")
    assert len(rows) == len(expected) > 0
    assert_rows(rows, expected, "merchant_features by merchant")
    engine = sa.create_engine(endpoint.url(driver="postgresql+psycopg"), connect_args={"options": "-c metrics.views_as=table"})
    try:
        inspector = sa.inspect(engine)
        assert "conversion_monitoring" in inspector.get_table_names() and inspector.get_view_names() == []
        frame = pd.read_sql_table("fraud_monitoring", engine, columns=["merchant_category", "fraud_loss"])
        assert set(frame["merchant_category"]) == {row[0] for row in expected_fraud(truth)}
    finally:
        engine.dispose()
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="views_as"):
            conn.execute("SET metrics.views_as = 'materialized'")


# ---- JDBC ------------------------------------------------------------------------------------

def _jdbc_jar() -> str | None:
    for candidate in (os.environ.get("PGJDBC_JAR"), "/usr/share/java/postgresql.jar"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def test_jdbc(endpoint, truth, tmp_path):
    jar = _jdbc_jar()
    if shutil.which("javac") is None or shutil.which("java") is None or jar is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs java, javac and the PostgreSQL JDBC driver (apt-get install default-jdk-headless libpostgresql-jdbc-java)")
        pytest.skip("java, javac or the PostgreSQL JDBC driver is missing")
    subprocess.run(["javac", "-d", str(tmp_path), str(HERE / "jdbc" / "JdbcSmoke.java")], check=True, timeout=120)
    url = f"jdbc:postgresql://127.0.0.1:{endpoint.port}/metrics"
    result = subprocess.run(
        ["java", "-cp", f"{jar}{os.pathsep}{tmp_path}", "JdbcSmoke", url, "analyst", PASSWORD, "conversion_monitoring",
         "SELECT model_version, accuracy FROM conversion_monitoring WHERE model_version = ? ORDER BY 1", "v1",
         "SELECT utm_source, created_at FROM conversion_monitoring", Q_FRAUD],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines[-1] == ["OK"]
    tables = {line[1]: line[2] for line in lines if line[0] == "TABLE"}
    assert tables == {"conversion_monitoring": "VIEW", "fraud_monitoring": "VIEW", "merchant_features": "VIEW",
                      "slow_view": "VIEW"}
    columns = {line[2]: (int(line[3]), line[4]) for line in lines if line[0] == "COLUMN"}
    assert columns["accuracy"] == (8, "float8") and columns["lead_count"] == (-5, "int8")
    assert columns["created_at"] == (93, "timestamp") and columns["utm_source"] == (12, "text")
    expected_v1 = dict(expected_accuracy(truth))["v1"]
    prepared = [line for line in lines if line[0] == "PREPARED"]
    assert len(prepared) == 6 and all(line[2] == "v1" and same(float(line[3]), expected_v1) for line in prepared)
    fetched = int(next(line[1] for line in lines if line[0] == "FETCH"))
    assert fetched == truth("SELECT count(*) FROM (SELECT DISTINCT utm_source, created_at FROM leads)")[0][0]
    query = [dict(cell.split("=", 1) for cell in line[1:]) for line in lines if line[0] == "QUERY"]
    assert_rows([(q["merchant_category"], decimal.Decimal(q["fraud_loss"])) for q in query], expected_fraud(truth), "jdbc")


# ---- access control -----------------------------------------------------------------------------

def test_users_and_view_access(endpoint):
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(endpoint.dsn(password="wrong"))
    assert "password authentication failed" in str(info.value)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(endpoint.dsn(user="nobody", password="x"))
    with psycopg.connect(endpoint.dsn("fraud_team", "fraud-pw"), autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1").fetchall()]
        assert tables == ["fraud_monitoring"]
        assert conn.execute("SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'conversion_monitoring'").fetchone() == (0,)
        assert conn.execute("SELECT false_alarms FROM fraud_monitoring").fetchone()[0] > 0
        with pytest.raises(psycopg.errors.UndefinedTable) as info:
            conn.execute("SELECT accuracy FROM conversion_monitoring")
        assert "fraud_monitoring" in str(info.value)
    out = psql(endpoint, r"\dv", user="fraud_team", password="fraud-pw").stdout
    assert "fraud_monitoring" in out and "conversion_monitoring" not in out


# ---- catalog statements captured from real clients ----------------------------------------------

# file name -> what the result must show (rows containing these values)
GOLDEN_EXPECT = {
    "psql_dt_01.sql": {"conversion_monitoring", "fraud_monitoring"},  # under metrics.views_as = table (GOLDEN_AS_TABLES)
    "psql_dv_01.sql": {"conversion_monitoring", "fraud_monitoring", "merchant_features", "view"},
    "psql_d_01.sql": {"conversion_monitoring", "fraud_monitoring"},
    "psql_d_conversion_monitoring_03.sql": {"accuracy", "double precision", "timestamp without time zone", "bigint"},
    "psql_dt_plus_01.sql": {"Quality of the lead-conversion model, by model version, channel and time."},
    "jdbc_04.sql": {"conversion_monitoring", "fraud_monitoring", "VIEW"},
    "jdbc_05.sql": {"utm_source", "model_version", "created_at", "accuracy", "lead_count"},
    "sqlalchemy_inspector_07.sql": {"conversion_monitoring", "fraud_monitoring"},
    "sqlalchemy_inspector_09.sql": {"accuracy", "double precision", "lead_count", "bigint"},
    "sqlalchemy_inspector_17.sql": {"conversion_monitoring"},
    # BI tools whose statements come from their public sources (header of each file)
    "dbeaver_02.sql": {"metrics"},
    "dbeaver_04.sql": {"public", "pg_catalog"},
    "dbeaver_05.sql": {"int4", "text", "timestamp", "float8"},
    "dbeaver_06.sql": {"conversion_monitoring", "fraud_monitoring",
                       "Quality of the lead-conversion model, by model version, channel and time."},
    "dbeaver_07.sql": {"accuracy", "lead_count", "merchant_category", "Share of leads that converted."},
    "dbeaver_08.sql": {"conversion_monitoring", "accuracy", "created_at"},
    "dbeaver_16.sql": {"True", "_aclitem"},
    "npgsql_02.sql": {"int4", "text", "timestamp", "float8", "numeric", "_int4", "a", "b"},
    "npgsql4_01.sql": {"int4", "text", "timestamp", "_int4", "a"},
    "metabase_03.sql": {"conversion_monitoring", "fraud_monitoring", "VIEW"},
    "metabase_04.sql": {"accuracy", "float8", "timestamp", "int8", "numeric", "fraud_loss", "Share of leads that converted."},
    "grafana_01.sql": {"1500"},
    "grafana_03.sql": {"public"},
    "grafana_04.sql": {"conversion_monitoring", "fraud_monitoring"},
    "grafana_06.sql": {"accuracy", "double precision", "timestamp without time zone", "bigint"},
    "grafana_08.sql": {"accuracy", "lead_count"},
    "grafana_09.sql": {"conversion_monitoring", "created_at"},
}
# Statements of tools that list only tables, captured with the views shown as tables.
GOLDEN_AS_TABLES = {"psql_dt_01.sql", "psql_dt_plus_01.sql", "sqlalchemy_inspector_07.sql", "pandas_02.sql"}


def _golden(path: Path) -> tuple[str, list]:
    text = path.read_text()
    params = []
    for line in text.splitlines():
        if line.startswith("-- params: "):
            params = json.loads(line[len("-- params: "):])
    sql = "\n".join(line for line in text.splitlines() if not line.startswith("-- ")).strip()
    return sql, params


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.sql")), ids=lambda p: p.name)
def test_captured_catalog_statement(endpoint, path):
    asyncpg = pytest.importorskip("asyncpg")
    sql, params = _golden(path)

    async def go():
        settings = {"metrics.views_as": "table"} if path.name in GOLDEN_AS_TABLES else {}
        conn = await asyncpg.connect(endpoint.url(), server_settings=settings)
        try:
            if sql.lower().startswith(("set ", "show ")):
                await conn.execute(sql)
                return []
            statement = await conn.prepare(sql)  # Parse/Describe as drivers do
            # the log shows parameters as text; bind them as the types the endpoint described
            kinds = [t.name for t in statement.get_parameters()]
            values = [int(v) if k in ("int2", "int4", "int8", "oid") else (v in ("t", "true")) if k == "bool" else v
                      for v, k in zip(params, kinds)]
            return await statement.fetch(*values)
        finally:
            await conn.close()

    rows = asyncio.run(go())
    values = {str(v) for row in rows for v in row}
    missing = GOLDEN_EXPECT.get(path.name, set()) - values
    assert not missing, f"{path.name}: missing {missing} in {rows[:5]}"


def test_npgsql_type_loading_batch(endpoint):
    """Npgsql sends its type-loading statements as one simple Query (PostgresDatabaseInfo.cs) and
    fails to connect unless every result comes back; arrays are told by typreceive = array_recv."""
    batch = "\n".join(_golden(GOLDEN / f"npgsql_0{i}.sql")[0] for i in range(1, 5))
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        cur = psycopg.ClientCursor(conn)  # simple query protocol, several results
        cur.execute(batch)
        assert cur.fetchone()[0].startswith("PostgreSQL 15")
        assert cur.nextset()
        types = {r[2]: r for r in cur.fetchall()}
        assert types["int4"][3] == "b" and types["_int4"][3] == "a" and types["_int4"][5] == 23
        assert {"text", "timestamp", "float8", "numeric", "record", "void"} <= set(types)
        assert "conversion_monitoring" not in types  # table row types are not loaded (as in PostgreSQL)
        assert cur.nextset() and cur.fetchall() == []  # composite fields
        assert cur.nextset() and cur.fetchall() == []  # enum labels
        assert not cur.nextset()


def test_metabase_table_privileges(endpoint):
    """Metabase syncs only the tables this statement says it may SELECT (postgres.clj,
    current-user-table-privileges); the endpoint is read-only, so no write privilege."""
    sql, _ = _golden(GOLDEN / "metabase_02.sql")  # `... AS select,`: a keyword as a label
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        rows = conn.execute(sql).fetchall()
    rows = {r[2]: r[1:] for r in rows}
    assert {"conversion_monitoring", "fraud_monitoring"} <= set(rows)
    assert all(row == ("public", name, False, True, False, False) for name, row in rows.items())


def test_prepare_error_arrives_before_sync(endpoint):
    """asyncpg prepares with Parse, Describe, Flush and waits: the error must come at once."""
    asyncpg = pytest.importorskip("asyncpg")

    async def go():
        conn = await asyncpg.connect(endpoint.url())
        try:
            with pytest.raises(asyncpg.PostgresError) as e:
                await asyncio.wait_for(conn.prepare("SELECT nope FROM conversion_monitoring"), 60)
            assert e.value.sqlstate == "42703"
            return await asyncio.wait_for(conn.fetchval("SELECT 1"), 60)  # the connection goes on
        finally:
            await conn.close()

    assert asyncio.run(go()) == 1


def test_session_functions_and_settings(endpoint):
    with psycopg.connect(endpoint.dsn(), autocommit=True, application_name="tests") as conn:
        row = conn.execute(
            "SELECT current_user, session_user, current_database(), current_catalog, current_schema(), "
            "current_setting('application_name'), has_table_privilege('conversion_monitoring', 'SELECT'), "
            "pg_encoding_to_char(6), 'fraud_monitoring'::regclass::oid > 0, format_type(1114, -1), "
            "col_description('conversion_monitoring'::regclass, 4), obj_description('fraud_monitoring'::regclass, 'pg_class') IS NOT NULL, "
            "to_regtype('integer')::oid, pg_backend_pid() > 0, version() LIKE 'PostgreSQL 15%'").fetchone()
        assert row[:6] == ("analyst", "analyst", "metrics", "metrics", "public", "tests")
        assert row[6:10] == (True, "UTF8", True, "timestamp without time zone")
        assert row[10].startswith("Share of predicted leads") and row[11] is True and row[12] == 23
        assert row[13:] == (True, True)
        assert conn.execute("SELECT set_config('application_name', 'renamed', false)").fetchone() == ("renamed",)
        assert conn.execute("SHOW application_name").fetchone() == ("renamed",)
        keywords = conn.execute("SELECT count(*) FROM pg_get_keywords() WHERE catcode = 'R'").fetchone()[0]
        assert keywords > 50
        assert conn.execute("SELECT pg_postmaster_start_time() <= now()").fetchone() == (True,)
        names = conn.execute(
            "SELECT format('%I.%I', table_schema, table_name)::regclass::text FROM information_schema.tables "
            "WHERE table_schema = 'public' ORDER BY 1").fetchall()
        assert names[0] == ("conversion_monitoring",)
        explain = conn.execute("EXPLAIN SELECT model_version, accuracy FROM conversion_monitoring").fetchall()
        assert "SELECT" in "\n".join(r[0] for r in explain)


# ---- the endpoint over the PostgreSQL engine ------------------------------------------------------

def test_endpoint_over_postgres_types_and_numbers(tmp_path, demo_postgres_url):
    folder = make_project(tmp_path / "pgproj", demo_postgres_url, USERS_YAML)
    os.environ["ML_TEST_FRAUD_PW"] = "fraud-pw"
    ep = Endpoint(folder).start()
    try:
        with psycopg.connect(demo_postgres_url) as pg:
            truth_fraud = [tuple(r[:2]) for r in pg.execute(reference.fraud_by_merchant_category()).fetchall()]
            truth_acc = [tuple(r[:2]) for r in pg.execute(reference.conversion_metrics_by_model_version()).fetchall()]
        with psycopg.connect(ep.dsn(), autocommit=True) as conn:
            catalog = dict(conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a JOIN pg_class c "
                "ON c.oid = a.attrelid WHERE c.relname = 'fraud_monitoring' AND a.attnum > 0").fetchall())
            assert catalog["fraud_loss"] == "numeric" and catalog["false_alarms"] == "bigint"
            assert catalog["fraud_precision"] == "double precision" and catalog["created_at"] == "timestamp without time zone"
            cur = conn.execute("SELECT merchant_category, fraud_loss, false_alarms, fraud_precision FROM fraud_monitoring GROUP BY 1 ORDER BY 1")
            rows = cur.fetchall()
            assert [d.type_code for d in cur.description] == [25, 1700, 20, 701]
            assert_rows([r[:2] for r in rows], truth_fraud, "fraud_loss over PostgreSQL")
            assert_rows(conn.execute(Q_ACCURACY).fetchall(), truth_acc, "accuracy over PostgreSQL")
    finally:
        ep.stop()


# ---- describe results kept per model (the server asks cached_describe before a worker trip) -------

def test_describe_results_are_kept_per_model_and_per_user_views(tmp_path, demo_duckdb_path):
    import shutil as _shutil

    from metrics_layer.model import load_model
    from metrics_layer.project import load_project
    from metrics_layer.service import MetricsService
    from metrics_layer.serve.pgwire.backend import BackendError
    from metrics_layer.serve.pgwire.semantic import SemanticBackend

    data = tmp_path / "demo.duckdb"
    _shutil.copyfile(demo_duckdb_path, data)
    folder = make_project(tmp_path / "proj", f"duckdb:///{data}")
    service = MetricsService(load_project(folder))
    backend = SemanticBackend(service, {"fraud_team": ["fraud_monitoring"]})
    analyst = backend.open_session("analyst", "metrics", {})
    fraud = backend.open_session("fraud_team", "metrics", {})
    sql = "SELECT model_version, accuracy FROM conversion_monitoring WHERE model_version = $1"

    assert analyst.cached_describe(sql, [0]) is None
    described = analyst.describe(sql, [0])
    again = analyst.cached_describe(sql, [0])
    assert again == described and again is not described
    again.columns.append("changed")  # callers get copies
    assert analyst.cached_describe(sql, [0]) == described
    assert analyst.cached_describe(sql, [25]) is None  # other parameter types: described anew
    assert fraud.cached_describe(sql, [0]) is None  # other views: not shared
    with pytest.raises(BackendError):
        fraud.describe(sql, [0])
    assert fraud.cached_describe(sql, [0]) is None  # failures are not kept
    assert analyst.cached_describe("SELECT 1", []) is None and analyst.describe("SELECT 1", []).columns
    assert analyst.cached_describe("SELECT 1", []) is None  # catalog statements are described by running them

    service.replace_model(load_model(folder / "metrics"))  # a reload starts afresh
    assert analyst.cached_describe(sql, [0]) is None
    assert analyst.describe(sql, [0]) == described


# ---- constant expressions as values (issue 9, item 1) ---------------------------------------

SUPERSET_RANGE = ("SELECT date_trunc('day', created_at) AS created_at, lead_count AS lead_count "
                  "FROM public.conversion_monitoring "
                  "WHERE created_at >= TO_TIMESTAMP('{lo} 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') "
                  "AND created_at < TO_TIMESTAMP('{hi} 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') "
                  "GROUP BY date_trunc('day', created_at) ORDER BY created_at LIMIT 10000")


@pytest.mark.parametrize("lo, hi", [("2026-11-01", "2026-11-08"), ("2026-02-10", "2026-02-17")])
def test_superset_time_range_with_to_timestamp(endpoint, truth, lo, hi):
    """Superset's time-series chart with a time range (the exact statement of issue 9, and the
    same form over the demo's dates) answers what hand-written SQL on the data does."""
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        rows = conn.execute(SUPERSET_RANGE.format(lo=lo, hi=hi)).fetchall()
    expected = truth(f"SELECT date_trunc('day', created_at), count(DISTINCT id) FROM leads "
                     f"WHERE created_at >= TIMESTAMP '{lo}' AND created_at < TIMESTAMP '{hi}' GROUP BY 1 ORDER BY 1")
    assert_rows(rows, expected, f"leads per day {lo}..{hi}")
    if lo.startswith("2026-02"):
        assert len(rows) == 7


def test_relative_ranges_read_now_from_metrics_as_of(endpoint, truth):
    """NOW() / CURRENT_DATE and interval arithmetic are "now" = metrics.as_of when it is set."""
    sql = ("SELECT utm_source, lead_count FROM conversion_monitoring "
           "WHERE created_at >= CAST(NOW() AS DATE) - INTERVAL '3 day' AND created_at < CURRENT_DATE "
           "GROUP BY 1 ORDER BY 1")
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        conn.execute("SET metrics.as_of = '2026-02-25 12:00:00'")
        rows = conn.execute(sql).fetchall()
    expected = truth("SELECT utm_source, count(DISTINCT id) FROM leads WHERE created_at >= TIMESTAMP '2026-02-22' "
                     "AND created_at < TIMESTAMP '2026-02-25' GROUP BY 1 ORDER BY 1")
    assert rows and len(rows) == len(expected)
    assert_rows(rows, expected, "leads by source over the 3 days before as_of")


def test_unfoldable_function_is_refused_by_name(endpoint):
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as info:
            conn.execute("SELECT lead_count FROM conversion_monitoring WHERE utm_source = md5('x')")
        assert "MD5()" in str(info.value)
        assert conn.execute("SELECT 1").fetchone() == (1,)


# ---- time predicates (issue 9, item 2) -----------------------------------------------------

TIME_PREDICATES = [
    # (client WHERE, hand-written WHERE on leads)
    ("date_trunc('day', created_at) >= TIMESTAMP '2026-02-20 05:00'", "created_at >= TIMESTAMP '2026-02-21'"),
    ("CAST(created_at AS DATE) BETWEEN '2026-02-10' AND '2026-02-12 18:00'",
     "created_at >= TIMESTAMP '2026-02-10' AND created_at < TIMESTAMP '2026-02-13'"),
    ("created_at::date = DATE '2026-02-11'", "created_at >= TIMESTAMP '2026-02-11' AND created_at < TIMESTAMP '2026-02-12'"),
    ("EXTRACT(YEAR FROM created_at) = 2026", "created_at >= TIMESTAMP '2026-01-01' AND created_at < TIMESTAMP '2027-01-01'"),
    ("EXTRACT(YEAR FROM created_at) < 2026", "created_at < TIMESTAMP '2026-01-01'"),
    ("EXTRACT(EPOCH FROM created_at) < 1771200000", "created_at < TIMESTAMP '2026-02-16 00:00:00'"),
    ("created_at >= '2026-02-03 06:00' AND created_at < '2026-02-05'",
     "created_at >= TIMESTAMP '2026-02-03 06:00' AND created_at < TIMESTAMP '2026-02-05'"),
]


@pytest.mark.parametrize("where, reference_where", TIME_PREDICATES)
def test_time_predicates_grained_and_ungrained(endpoint, truth, where, reference_where):
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        by_day = conn.execute(f"SELECT date_trunc('day', created_at) AS d, lead_count FROM conversion_monitoring "
                              f"WHERE {where} GROUP BY 1 ORDER BY 1").fetchall()
        by_source = conn.execute(f"SELECT utm_source, lead_count FROM conversion_monitoring WHERE {where} "
                                 "GROUP BY 1 ORDER BY 1").fetchall()
        raw = conn.execute(f"SELECT created_at, utm_source FROM conversion_monitoring WHERE {where} "
                           "ORDER BY 1, 2 LIMIT 50").fetchall()
    assert_rows(by_day, truth(f"SELECT date_trunc('day', created_at), count(DISTINCT id) FROM leads WHERE {reference_where} "
                              "GROUP BY 1 ORDER BY 1"), f"by day: {where}")
    assert_rows(by_source, truth(f"SELECT utm_source, count(DISTINCT id) FROM leads WHERE {reference_where} "
                                 "GROUP BY 1 ORDER BY 1"), f"by source: {where}")
    assert_rows(raw, truth(f"SELECT DISTINCT created_at, utm_source FROM leads WHERE {reference_where} ORDER BY 1, 2 LIMIT 50"),
                f"ungrained: {where}")


@pytest.mark.parametrize("where, buckets", [
    ("CAST(created_at AS DATE) BETWEEN '2026-02-20' AND '2026-02-22'",
     "bucket >= TIMESTAMP '2026-02-20' AND bucket < TIMESTAMP '2026-02-23'"),
    ("created_at >= TO_TIMESTAMP('2026-02-20 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') "
     "AND created_at < TO_TIMESTAMP('2026-02-23 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')",
     "bucket >= TIMESTAMP '2026-02-20' AND bucket < TIMESTAMP '2026-02-23'"),
    ("date_trunc('day', created_at) >= DATE '2026-02-25' - INTERVAL '3 day'", "bucket >= TIMESTAMP '2026-02-22'"),
])
def test_time_predicates_with_a_rolling_metric(endpoint, truth, where, buckets):
    """Time predicates on a rolling series pick buckets; each bucket's window still reads the
    leads before the range (the ranged-rolling semantics)."""
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        rows = conn.execute(f"SELECT date_trunc('day', created_at) AS d, accuracy_3h FROM conversion_monitoring "
                            f"WHERE {where} GROUP BY 1 ORDER BY 1").fetchall()
    expected = truth(reference.trailing_accuracy_series("day", buckets_where=buckets))
    assert rows and len(rows) == len(expected)
    assert_rows(rows, expected, f"accuracy_3h by day: {where}")


# ---- aggregate wrappers over measures (issue 9, item 3) -------------------------------------

def test_aggregate_wrappers_over_measures(endpoint, truth):
    """SUM / MIN / MAX of an additive measure and MAX / AVG of a ratio, grouped: the metric of each group."""
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        rows = conn.execute('SELECT model_version, MAX(accuracy) AS "MAX(accuracy)", AVG(accuracy) FROM conversion_monitoring '
                            "GROUP BY model_version ORDER BY model_version").fetchall()
        counts = conn.execute("SELECT utm_source, SUM(lead_count), MIN(lead_count) FROM conversion_monitoring "
                              "GROUP BY 1 ORDER BY 1").fetchall()
        fraud = conn.execute("SELECT merchant_category, SUM(transaction_count), MAX(fraud_loss) FROM fraud_monitoring "
                             "GROUP BY 1 ORDER BY 1").fetchall()
        with pytest.raises(psycopg.errors.FeatureNotSupported) as info:
            conn.execute("SELECT SUM(accuracy) FROM conversion_monitoring")
    assert "not additive" in str(info.value)
    assert_rows(rows, [(v, a, a) for v, a in expected_accuracy(truth)], "MAX/AVG(accuracy) by model_version")
    expected = truth("SELECT utm_source, count(DISTINCT id) FROM leads GROUP BY 1 ORDER BY 1")
    assert_rows(counts, [(s, n, n) for s, n in expected], "SUM/MIN(lead_count) by source")
    n = dict(truth("SELECT merchant_category, count(*) FROM transactions GROUP BY 1"))
    assert_rows(fraud, [(c, n[c], loss) for c, loss in expected_fraud(truth)], "SUM(transaction_count), MAX(fraud_loss)")


# ---- aggregates of dimensions (issue 9, item 4) --------------------------------------------

def test_aggregates_of_dimensions_and_count_star(endpoint, truth):
    """What Metabase's fingerprinting and Superset's time-range pickers send."""
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT MIN(created_at), MAX(created_at), COUNT(DISTINCT utm_source), COUNT(*) "
                           "FROM conversion_monitoring").fetchone()
        by_version = conn.execute("SELECT model_version, COUNT(*) AS n, MAX(created_at) AS last FROM conversion_monitoring "
                                  "GROUP BY 1 ORDER BY 1").fetchall()
        versions = conn.execute("SELECT COUNT(DISTINCT model_version) FROM fraud_monitoring").fetchone()[0]
        conn.execute("SET metrics.as_of = '2026-02-20 00:00:00'")
        cut = conn.execute("SELECT MAX(created_at), COUNT(*) FROM conversion_monitoring").fetchone()
    assert_rows([row], truth("SELECT min(created_at), max(created_at), count(DISTINCT utm_source), count(DISTINCT id) FROM leads"),
                "dimension aggregates")
    assert isinstance(row[0], dt.datetime) and isinstance(row[3], int)
    expected = truth("""
        WITH p AS (SELECT * FROM prediction_events QUALIFY row_number() OVER (PARTITION BY lead_id ORDER BY predicted_at DESC) = 1)
        SELECT p.model_version, count(DISTINCT l.id), max(l.created_at) FROM leads l LEFT JOIN p ON p.lead_id = l.id
        GROUP BY 1 ORDER BY 1 NULLS LAST""")
    assert_rows(by_version, expected, "COUNT(*), MAX(created_at) by model_version")
    assert versions == truth(
        """SELECT count(DISTINCT model_version) FROM (SELECT * FROM fraud_scores
        QUALIFY row_number() OVER (PARTITION BY transaction_id ORDER BY scored_at DESC) = 1)""")[0][0]
    assert_rows([cut], truth("SELECT max(created_at), count(*) FROM leads WHERE created_at <= TIMESTAMP '2026-02-20'"),
                "as_of applies")


# ---- wrappers, subqueries and CTEs (issue 9, item 5) ---------------------------------------

def test_subqueries_and_ctes(endpoint, truth):
    by_source = truth("SELECT utm_source, count(DISTINCT id) FROM leads GROUP BY 1 ORDER BY 1")
    with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
        tableau = conn.execute(
            'SELECT "t"."utm_source" AS "utm_source", SUM("t"."lead_count") AS "sum:lead_count:ok" '
            'FROM (SELECT utm_source, model_version, lead_count FROM conversion_monitoring) "t" GROUP BY 1 ORDER BY 1').fetchall()
        power_bi = conn.execute('select "_"."utm_source", "_"."lead_count" from (select utm_source, lead_count '
                                'from conversion_monitoring) "_" order by 1 limit 1000').fetchall()
        cte = conn.execute("WITH t AS (SELECT model_version, accuracy FROM conversion_monitoring GROUP BY 1) "
                           "SELECT model_version AS v, accuracy FROM t ORDER BY 1").fetchall()
        fraud = conn.execute(
            "SELECT merchant_category, SUM(missed_fraud_amount) AS m, SUM(transaction_count) AS n FROM "
            "(SELECT merchant_category, model_version, missed_fraud_amount, transaction_count FROM fraud_monitoring) q "
            "GROUP BY merchant_category HAVING SUM(transaction_count) > 0 ORDER BY 1").fetchall()
        total = conn.execute("SELECT SUM(lead_count) FROM (SELECT utm_source, lead_count FROM conversion_monitoring) t").fetchone()
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("SELECT MAX(accuracy) FROM (SELECT utm_source, accuracy FROM conversion_monitoring) t")
    assert_rows(tableau, by_source, "Tableau re-aggregation")
    assert_rows(power_bi, by_source, "Power BI wrapper")
    assert_rows(cte, expected_accuracy(truth), "CTE")
    expected = truth("SELECT merchant_category, SUM(amount) FILTER (WHERE s.is_fraud = 0 AND c.transaction_id IS NOT NULL), "
                     "count(*) FROM transactions t "
                     "LEFT JOIN (SELECT * FROM fraud_scores QUALIFY row_number() OVER (PARTITION BY transaction_id "
                     "ORDER BY scored_at DESC) = 1) s ON s.transaction_id = t.id "
                     "LEFT JOIN (SELECT DISTINCT transaction_id FROM chargebacks) c ON c.transaction_id = t.id "
                     "GROUP BY 1 ORDER BY 1")
    assert_rows(fraud, expected, "re-aggregated sums by merchant category")
    assert total[0] == truth("SELECT count(*) FROM leads")[0][0]


# ---- catalog depth (issue 9, item 6) --------------------------------------------------------

def test_set_follows_postgresql_and_pg_stat_activity_shows_the_session(endpoint, demo_postgres_url):
    """SET of an unknown non-custom parameter is an error as on the real PostgreSQL; custom
    (dotted) ones and real ones are accepted. pg_stat_activity has the session's own row."""
    statements = ["SET no_such_parameter = 1", "SET myapp.tenant = 'x'", "SET enable_seqscan = off",
                  "SET extra_float_digits = 3", "SET lock_timeout = '5s'"]

    def outcomes(dsn):
        out = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            for sql in statements:
                try:
                    conn.execute(sql)
                    out.append(None)
                except psycopg.Error as e:
                    out.append(e.sqlstate)
        return out

    assert outcomes(endpoint.dsn()) == outcomes(demo_postgres_url) == ["42704", None, None, None, None]
    with psycopg.connect(endpoint.dsn(), autocommit=True, application_name="superset") as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        rows = conn.execute("SELECT pid, usename, datname, application_name, state FROM pg_stat_activity "
                            f"WHERE pid = {pid}").fetchall()
    assert rows == [(pid, "analyst", "metrics", "superset", "active")]


def test_views_as_is_a_project_setting(tmp_path):
    from metrics_layer.project import ProjectError, load_project
    from metrics_layer.serve.pgwire.endpoint import views_as_config
    from metrics_layer.serve.pgwire.semantic import Settings

    folder = make_project(tmp_path / "p", "\"duckdb:///:memory:\"", "sql:\n  views_as: table\n")
    assert views_as_config(load_project(folder)) == "table"
    assert Settings("15.6", "u", {}, "table").get("metrics.views_as") == "table"
    assert Settings("15.6", "u", {"options": "-c metrics.views_as=view"}, "table").get("metrics.views_as") == "view"
    (folder / "metrics_layer.yml").write_text("engine: \"duckdb:///:memory:\"\nsql:\n  views_as: tables\n")
    with pytest.raises(ProjectError, match=r"sql.views_as: must be one of view, table, got 'tables'"):
        views_as_config(load_project(folder))
