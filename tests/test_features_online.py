"""Issue 11's doors: online feature values, REST training sets, and the demo's merchant_fraud_rate_7d.

Hand-made fraud data near the present (online values are "now"): merchants with transactions
inside and outside the trailing 7 days, chargebacks that arrive after some spine times (they
would change the value if they leaked) and later duplicate chargebacks (dedupe: the first one).
Every value is checked against plain Python written here, on DuckDB and on PostgreSQL; online
values also against the same metric queried as_of now, before and after a real deploy of the
demo's materializations (then the response must say it read `merchant_fraud_now`).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys

import httpx
import pyarrow as pa
import pytest

from conftest import PG_URL, REPO, make_project, postgres_or_skip
from http_server import LiveServer
from metrics_layer import deploy, demo_data
from metrics_layer.project import load_project
from metrics_layer.query import Filter, QueryError, SemanticQuery
from metrics_layer.serve.http import create_app
from metrics_layer.service import MetricsService

H = dt.timedelta(hours=1)
NOW = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
T0 = NOW - 10 * 24 * H  # data from 10 days ago to 1 hour ago
SCHEMA = f"ml_online_{os.getpid()}"

# transactions(id, created_at, merchant_category, amount, merchant_id); merchant 4 only has old rows.
TRANSACTIONS = []
for i in range(1, 121):
    merchant = 4 if i % 10 == 0 else 1 + i % 3
    created = (T0 - 20 * H) if merchant == 4 else T0 + i * 1.9 * H  # last one ~ NOW - 12 h
    TRANSACTIONS.append((i, created, "gaming" if merchant == 1 else "grocery", 10 + i, merchant))
CHARGEBACKS = []  # (id, transaction_id, charged_back_at, amount)
for tx, created, _, amount, merchant in TRANSACTIONS:
    if tx % 4 == 1 or (merchant == 4 and tx % 20 == 0):
        late = created + (5 + tx % 50) * H  # many arrive after later spine times
        CHARGEBACKS.append((tx * 10, tx, min(late, NOW - H), amount))
        if tx % 8 == 1:  # a later duplicate: dedupe keeps the first
            CHARGEBACKS.append((tx * 10 + 1, tx, min(late + 30 * H, NOW - H / 2), amount))


def _ts(value: dt.datetime) -> str:
    return f"TIMESTAMP '{value.isoformat(sep=' ')}'"


def _tables_sql(engine: int) -> list[str]:
    """Every demo table (the demo YAML is deployed whole), the fraud ones with the rows above."""
    sql = [f"CREATE TABLE {t} ({', '.join(f'{c} {types[engine - 1]}' for c, *types in cols)})"
           for t, cols in demo_data.TABLES.items()]
    sql.append("INSERT INTO transactions VALUES " + ", ".join(
        f"({i}, {_ts(c)}, '{cat}', {a}, {m})" for i, c, cat, a, m in TRANSACTIONS))
    sql.append("INSERT INTO chargebacks VALUES " + ", ".join(f"({i}, {t}, {_ts(c)}, {a})" for i, t, c, a in CHARGEBACKS))
    return sql


def fraud_rate(at: dt.datetime, merchant, leaky: bool = False):
    """Plain Python: of the merchant's transactions in (at - 7 days, at], the share with a
    chargeback at or before `at` (first chargeback per transaction). `leaky`: any chargeback."""
    first = {}
    for _, tx, charged, _ in sorted(CHARGEBACKS, key=lambda r: r[2]):
        if (leaky or charged <= at) and tx not in first:
            first[tx] = charged
    window = [tx for tx, created, _, _, m in TRANSACTIONS if m == merchant and at - 7 * 24 * H < created <= at]
    return len([tx for tx in window if tx in first]) / len(window) if window else None


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) < 1e-9


def _with_counts_view(folder):
    """A second feature view, with a count: over no rows a count reads 0 where a ratio reads null."""
    (folder / "metrics" / "counts_view.yml").write_text(
        "views:\n  - name: merchant_counts\n    entity: transactions.merchant\n"
        "    metrics: [transactions.transaction_count, merchant_fraud_rate_7d, transactions.amount]\n")
    return folder


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def service(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"online_{request.param}")
    settings = f"result_cache: false\ndeploy:\n  schema: {SCHEMA}\n"
    if request.param == "duckdb":
        import duckdb

        path = folder / "f.duckdb"
        con = duckdb.connect(str(path))
        for sql in _tables_sql(1):
            con.execute(sql)
        con.close()
        svc = MetricsService(load_project(_with_counts_view(make_project(folder / "p", f"duckdb:///{path}", settings))))
        svc.read_only_engine = False  # the materializations are deployed through it
        yield svc
        svc.engine.close()
        return
    import psycopg

    url = postgres_or_skip(PG_URL)
    schema = f"ml_test_{os.getpid()}_online"
    with psycopg.connect(url, autocommit=True) as conn:
        for s in (schema, SCHEMA):
            conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path = "{schema}"')
        for sql in _tables_sql(2):
            conn.execute(sql)
    svc = MetricsService(load_project(_with_counts_view(make_project(folder / "p", f"{url}?options=-csearch_path%3D{schema}", settings))))
    yield svc
    svc.engine.close()
    with psycopg.connect(url, autocommit=True) as conn:
        for s in (schema, SCHEMA):
            conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')


KEYS = ["1", "2", "3", "4", "999"]


def _as_of_now(service, key: str):
    query = SemanticQuery(("merchant_fraud_rate_7d",), filters=(Filter("transactions.merchant", "=", key),), as_of=NOW)
    return service.run(query).rows[0][0]


def test_merchant_fraud_rate_training_set_has_no_leak(service):
    """Per-merchant point-in-time values equal plain Python; late chargebacks do not leak."""
    from metrics_layer.features import training_set

    times = [T0 - H, T0 + 30 * H, T0 + 30 * H, T0 + 80 * H, T0 + 150 * H, T0 + 200 * H, NOW - 2 * H, T0 + 100 * H]
    merchants = [1, 2, 1, 3, 4, 999, 2, None]
    spine = pa.table({"at": pa.array(times, pa.timestamp("us")), "merchant": pa.array(merchants, pa.int64())})
    out = training_set(service, spine, ["merchant_fraud_rate_7d"], entity="transactions.merchant")
    assert out.column("merchant").to_pylist() == merchants
    leaks = 0
    for row in out.to_pylist():
        expected = fraud_rate(row["at"], row["merchant"])
        assert _close(row["merchant_fraud_rate_7d"], expected), row
        leaks += not _close(expected, fraud_rate(row["at"], row["merchant"], leaky=True))
    assert leaks >= 2  # the data does test leakage: later chargebacks would change these rows


def test_online_values_equal_as_of_now_then_from_a_materialization(service):
    """The query path first, then after a real deploy: same values, and the source says which."""
    from metrics_layer.features import online_values

    expected = {k: fraud_rate(NOW, int(k)) for k in KEYS}
    assert expected["4"] is None and expected["999"] is None and expected["1"] not in (None, 0)
    service.forget_routes()
    got = online_values(service, "merchant_features", KEYS)
    assert got["source"] == "query" and got["entity"] == "transactions.merchant"
    assert [r["key"] for r in got["rows"]] == KEYS
    for row in got["rows"]:
        value = row["values"]["merchant_fraud_rate_7d"]
        assert _close(value, expected[row["key"]]), row
        assert _close(value, _as_of_now(service, row["key"])), row

    counts = online_values(service, "merchant_counts", ["4", "999", "1"])
    assert counts["source"] == "query"
    by_key = {r["key"]: r["values"] for r in counts["rows"]}
    assert by_key["999"] == {"transactions.transaction_count": 0, "merchant_fraud_rate_7d": None, "transactions.amount": None}
    assert by_key["4"]["transactions.transaction_count"] == len([t for t in TRANSACTIONS if t[4] == 4])
    assert by_key["4"]["merchant_fraud_rate_7d"] is None
    assert float(by_key["1"]["transactions.amount"]) == sum(t[3] for t in TRANSACTIONS if t[4] == 1)

    plan = deploy.plan_deploy(service.model, service.engine, SCHEMA)
    deploy.apply(service.engine, plan)
    deploy.refresh(service.engine, SCHEMA)
    service.forget_routes()
    routed = online_values(service, "merchant_features", KEYS)
    assert routed["source"] == "materialization merchant_fraud_now", routed["sql"]
    assert routed["freshness"]["materialization"] == "merchant_fraud_now" and routed["freshness"]["refreshed_at"]
    assert SCHEMA in routed["sql"]
    for row in routed["rows"]:
        assert _close(row["values"]["merchant_fraud_rate_7d"], expected[row["key"]]), row
        assert _close(row["values"]["merchant_fraud_rate_7d"], _as_of_now(service, row["key"])), row

    # Keys the refreshed materialization holds are looked up in its rows, read once per refresh.
    held = ["3", "1", "2"]
    for _ in range(2):
        looked_up = online_values(service, "merchant_features", held)
        assert looked_up["source"] == "materialization merchant_fraud_now"
        assert [r["key"] for r in looked_up["rows"]] == held
        for row in looked_up["rows"]:
            assert _close(row["values"]["merchant_fraud_rate_7d"], expected[row["key"]]), row
    (model, (_, refreshed_at), values), = service.online_tables.values()
    assert model is service.model and set(values) == {"1", "2", "3"}
    assert refreshed_at == looked_up["freshness"]["refreshed_at"]
    deploy.refresh(service.engine, SCHEMA)
    service.forget_routes()
    again = online_values(service, "merchant_features", held)
    (_, (_, reread_at), _), = service.online_tables.values()
    assert reread_at == again["freshness"]["refreshed_at"] != refreshed_at  # read afresh after the refresh
    assert [r["values"] for r in again["rows"]] == [r["values"] for r in looked_up["rows"]]

    # The same document over REST and GraphQL, from a real server on a loopback port.
    server = LiveServer(create_app(service), service).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            rest = client.get("/api/features/merchant_features", params=[("key", k) for k in KEYS]).json()
            assert rest["source"] == "materialization merchant_fraud_now"
            assert [r["key"] for r in rest["rows"]] == KEYS
            for row in rest["rows"]:
                assert _close(row["values"]["merchant_fraud_rate_7d"], expected[row["key"]])
            graphql = client.post("/graphql", json={"query": """query ($keys: [String!]!) {
                features(view: "merchant_features", keys: $keys) { source freshness rows { key values { metric value } } } }""",
                "variables": {"keys": KEYS}}).json()
            features = graphql["data"]["features"]
            assert graphql["extensions"]["freshness"][0]["materialization"] == "merchant_fraud_now"
            assert features["source"] == "materialization merchant_fraud_now"
            assert json.loads(features["freshness"])["materialization"] == "merchant_fraud_now"
            for row in features["rows"]:
                assert row["values"][0]["metric"] == "merchant_fraud_rate_7d"
                assert _close(row["values"][0]["value"], expected[row["key"]])
            for path, words in [("/api/features/merchant_features", "at least one key"),
                                ("/api/features/nope?key=1", "unknown feature view"),
                                ("/api/features/fraud_monitoring?key=1", "has no entity"),
                                ("/api/features/merchant_features?key=abc", "not a value of transactions.merchant")]:
                answer = client.get(path)
                assert answer.status_code == 400 and words in answer.json()["error"]["message"], (path, answer.text)
            bad = client.post("/graphql", json={"query": '{ features(view: "nope", keys: ["1"]) { source } }'}).json()
            assert "unknown feature view" in bad["errors"][0]["message"]
    finally:
        server.stop()


def test_rest_training_set_json_csv_arrow_and_errors(service, tmp_path):
    times = ["2000-01-01T00:00:00", (T0 + 30 * H).isoformat(), (T0 + 150 * H).isoformat() + "Z", (NOW - 2 * H).isoformat()]
    merchants = [1, 1, 4, 2]
    expected = [fraud_rate(dt.datetime.fromisoformat(t.rstrip("Z")), m) for t, m in zip(times, merchants)]
    body = {"spine": [{"at": t, "merchant": m, "n": i} for i, (t, m) in enumerate(zip(times, merchants))],
            "metrics": ["merchant_fraud_rate_7d"], "entity": "transactions.merchant"}
    csv_body = "at,merchant,n\n" + "".join(f"{t},{m},{i}\n" for i, (t, m) in enumerate(zip(times, merchants)))
    csv_params = {"metric": "merchant_fraud_rate_7d", "entity": "transactions.merchant"}
    server = LiveServer(create_app(service), service).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            answer = client.post("/api/features/training-set", json=body)
            assert answer.status_code == 200, answer.text
            rows = answer.json()["rows"]
            assert [r["n"] for r in rows] == [0, 1, 2, 3] and [r["at"] for r in rows] == times
            assert all(_close(r["merchant_fraud_rate_7d"], e) for r, e in zip(rows, expected)), rows

            answer = client.post("/api/features/training-set", params=csv_params, content=csv_body,
                                 headers={"content-type": "text/csv", "accept": "text/csv"})
            assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv"), answer.text
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(io.BytesIO(answer.content))
            assert table.column_names == ["at", "merchant", "n", "merchant_fraud_rate_7d"]
            assert all(_close(v, e) for v, e in zip(table.column("merchant_fraud_rate_7d").to_pylist(), expected))

            many = {**body, "spine": body["spine"] * 5000}  # 20000 rows: several streamed batches
            with client.stream("POST", "/api/features/training-set", json=many,
                               headers={"accept": "application/vnd.apache.arrow.stream"}) as streamed:
                assert streamed.status_code == 200
                assert streamed.headers.get("content-length") is None  # streamed, not one buffered body
                data = b"".join(streamed.iter_bytes())
            table = pa.ipc.open_stream(data).read_all()
            assert table.num_rows == 20000 and table.column("n").to_pylist()[:8] == [0, 1, 2, 3, 0, 1, 2, 3]
            assert all(_close(v, expected[i % 4]) for i, v in enumerate(table.column("merchant_fraud_rate_7d").to_pylist()))

            for bad, words in [
                ({**body, "spine": [{"ts": times[0], "merchant": 1}]}, "no column 'at'"),
                ({**body, "spine": [{"at": "yesterday", "merchant": 1}]}, "not a timestamp"),
                ({**body, "metrics": ["no_such_metric"]}, "unknown metric 'no_such_metric'"),
                ({**body, "spine": []}, "non-empty list"),
                ({**body, "entity": "transactions.nope"}, "unknown entity"),
                ({**body, "extra": 1}, "unknown field"),
            ]:
                answer = client.post("/api/features/training-set", json=bad)
                assert answer.status_code == 400 and words in answer.json()["error"]["message"], (bad, answer.text)
            answer = client.post("/api/features/training-set", content=b"{nope", headers={"content-type": "application/json"})
            assert answer.status_code == 400 and "not valid JSON" in answer.text
    finally:
        server.stop()

    small = MetricsService(load_project(make_project(tmp_path / "small", service.project.engine_url,
                                                     "http:\n  training_set_max_mb: 0.001\n")))
    server = LiveServer(create_app(small), small).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            answer = client.post("/api/features/training-set", json={**body, "spine": body["spine"] * 100})
            assert answer.status_code == 413 and "training_set_max_mb" in answer.text
    finally:
        server.stop()


def test_view_entity_is_validated(tmp_path):
    from metrics_layer.model import ValidationFailed, load_model

    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "conversion.yml").write_text((REPO / "metrics" / "conversion.yml").read_text())
    source = (REPO / "metrics" / "fraud.yml").read_text()
    for old, new, words in [
        ("entity: transactions.merchant", "entity: transactions.nope", "'transactions.nope' is not an entity"),
        ("entity: transactions.merchant", "entity: merchant", "'merchant' is not an entity; write model.entity"),
        ("metrics: [merchant_fraud_rate_7d]", "metrics: [merchant_fraud_rate_7d, accuracy]",
         "metric 'accuracy' aggregates model 'leads', which has no entity 'merchant'"),
    ]:
        (folder / "fraud.yml").write_text(source.replace(old, new))
        with pytest.raises(ValidationFailed) as raised:
            load_model(folder)
        message = str(raised.value)
        assert "view 'merchant_features' entity" in message and words in message, message


def test_spine_sql_is_one_select_and_the_demo_has_a_spine(demo_duckdb_path, tmp_path):
    from metrics_layer.features import DEMO_SPINE, spine_from_sql, spine_from_table, write_demo_spine

    svc = MetricsService(load_project(make_project(tmp_path / "demo", f"duckdb:///{demo_duckdb_path}")))
    for sql in ("DROP TABLE leads", "SELECT 1 AS at; DELETE FROM leads", "INSERT INTO leads VALUES (1, NULL, NULL)",
                "SELEC 1", "WITH x AS (SELECT 1) DELETE FROM leads"):
        with pytest.raises(QueryError, match="spine-sql"):
            spine_from_sql(svc, sql)
    table = spine_from_sql(svc, "SELECT id AS transaction_id, merchant_id AS merchant, created_at AS at FROM transactions "
                                "ORDER BY id LIMIT 5")
    assert table.column_names == ["transaction_id", "merchant", "at"] and table.num_rows == 5
    assert spine_from_table(svc, "chargebacks").num_rows > 0

    spine = write_demo_spine(str(demo_duckdb_path), str(tmp_path / DEMO_SPINE))
    import duckdb

    con = duckdb.connect(str(demo_duckdb_path), read_only=True)
    events = con.execute("SELECT count(*) FROM prediction_events").fetchone()[0]
    con.close()
    import pyarrow.csv as pcsv

    written = pcsv.read_csv(spine)
    assert written.num_rows == events and written.column_names == ["event_id", "lead_id", "at", "model_version"]
    assert pa.types.is_timestamp(written.schema.field("at").type)


def test_cli_features_by_merchant_on_the_demo(demo_duckdb_path, tmp_path):
    """`features --entity transactions.merchant --spine-sql ...` on the demo equals per-row SQL."""
    import duckdb
    import pyarrow.parquet as pq

    folder = make_project(tmp_path / "demo", f"duckdb:///{demo_duckdb_path}")
    out = tmp_path / "merchants.parquet"
    sql = "SELECT id AS transaction_id, merchant_id AS merchant, created_at AS at FROM transactions WHERE id % 97 = 0"
    done = subprocess.run([sys.executable, "-m", "metrics_layer.cli", "features", "--project", str(folder), "--spine-sql", sql,
                           "--entity", "transactions.merchant", "--metric", "merchant_fraud_rate_7d", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    con = duckdb.connect(str(demo_duckdb_path), read_only=True)
    assert table.num_rows == con.execute("SELECT count(*) FROM transactions WHERE id % 97 = 0").fetchone()[0] > 0
    for row in table.to_pylist():
        expected = con.execute("""
            SELECT CAST(count(c.transaction_id) AS DOUBLE) / NULLIF(count(*), 0)
            FROM transactions t
            LEFT JOIN (SELECT DISTINCT transaction_id FROM chargebacks WHERE charged_back_at <= ?) c ON c.transaction_id = t.id
            WHERE t.merchant_id = ? AND t.created_at <= ? AND t.created_at > ? - INTERVAL 7 DAY""",
            [row["at"], row["merchant"], row["at"], row["at"]]).fetchone()[0]
        assert _close(row["merchant_fraud_rate_7d"], expected), row
    con.close()


def test_spine_from_the_engine(service):
    """--spine-sql / --spine-table on both engines: the spine is read by one SELECT, then used as is."""
    from metrics_layer.features import spine_from_sql, spine_from_table, training_set

    spine = spine_from_sql(service, "SELECT id, merchant_id AS merchant, created_at AS at FROM transactions WHERE id % 7 = 0 ORDER BY id")
    assert spine.column("id").to_pylist() == [t[0] for t in TRANSACTIONS if t[0] % 7 == 0]
    out = training_set(service, spine, ["merchant_fraud_rate_7d"], entity="transactions.merchant")
    for row in out.to_pylist():
        assert _close(row["merchant_fraud_rate_7d"], fraud_rate(row["at"], row["merchant"])), row
    assert spine_from_table(service, "chargebacks").num_rows == len(CHARGEBACKS)
    with pytest.raises(QueryError, match="one SELECT"):
        spine_from_sql(service, "UPDATE transactions SET amount = 0")
