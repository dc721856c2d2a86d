"""GraphQL over real HTTP: the numbers equal hand-written SQL; the schema follows the model;
bad queries get clear errors and the server keeps serving."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest
from graphql import get_introspection_query

import reference
from conftest import readme_block
from http_server import project_over, serve_project

AS_OF = "2026-02-25T12:00:00"


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_duckdb_path):
    folder = project_over(tmp_path_factory.mktemp("graphql"), f"duckdb:///{demo_duckdb_path}")
    live = serve_project(folder)
    yield live
    live.stop()


def gql(server, query: str, variables: dict | None = None, **kwargs) -> dict:
    response = httpx.post(f"{server.url}/graphql", json={"query": query, "variables": variables}, timeout=60, **kwargs)
    assert response.status_code == 200, response.text
    return json.loads(response.content, parse_float=Decimal)  # numbers exactly as sent


def data(server, query: str, variables: dict | None = None) -> dict:
    document = gql(server, query, variables)
    assert "errors" not in document, document["errors"]
    return document["data"]


def error(server, query: str, variables: dict | None = None) -> dict:
    document = gql(server, query, variables)
    assert document.get("errors"), document
    return document["errors"][0]


def reference_rows(server, sql: str) -> list[tuple]:
    return server.service.engine.execute(sql).rows


def close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-15)


def iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def test_accuracy_by_model_version_per_hour_equals_hand_written_sql(server):
    rows = data(server, """{ conversion_monitoring { model_version created_at { hour } accuracy precision } }""")["conversion_monitoring"]
    expected = reference_rows(server, reference.accuracy_precision_by_model_version_and_hour())
    assert len(rows) == len(expected) > 100
    got = {(r["model_version"], r["created_at"]["hour"]): (r["accuracy"], r["precision"]) for r in rows}
    for version, hour, accuracy, precision in expected:
        accuracy_got, precision_got = got[(version, iso(hour))]
        assert close(accuracy_got, accuracy) and close(precision_got, precision), (version, hour)


def test_fraud_loss_by_merchant_category_is_exact(server):
    rows = data(server, "{ fraud_monitoring { merchant_category fraud_loss missed_fraud_amount false_alarms } }")["fraud_monitoring"]
    expected = reference_rows(server, reference.fraud_by_merchant_category())
    assert len(rows) == len(expected) == 6
    got = {r["merchant_category"]: r for r in rows}
    for category, fraud_loss, missed, false_alarms in expected:
        row = got[category]
        assert Decimal(str(row["fraud_loss"])) == Decimal(str(fraud_loss))  # not rounded through a float
        assert Decimal(str(row["missed_fraud_amount"])) == Decimal(str(missed))
        assert row["false_alarms"] == false_alarms and isinstance(row["false_alarms"], int)


@pytest.mark.parametrize("as_of", [AS_OF, "2026-02-10T07:30:00", "2026-02-28T23:59:59Z"])
def test_accuracy_3h_as_of_equals_hand_written_sql(server, as_of):
    rows = data(server, f'{{ conversion_monitoring(asOf: "{as_of}") {{ accuracy_3h }} }}')["conversion_monitoring"]
    moment = dt.datetime.fromisoformat(as_of.replace("Z", ""))
    (expected,), = reference_rows(server, reference.accuracy_3h_at(moment))
    assert len(rows) == 1 and close(rows[0]["accuracy_3h"], expected)


def test_two_grains_of_one_time_dimension(server):
    rows = data(server, "{ conversion_monitoring { created_at { hour day week } accuracy } }")["conversion_monitoring"]
    expected = reference_rows(server, reference.conversion_metrics_by_hour())
    assert len(rows) == len(expected)
    by_hour = {r["created_at"]["hour"]: r for r in rows}
    for hour, accuracy, _precision, _recall in expected:
        row = by_hour[iso(hour)]
        assert row["created_at"]["day"] == iso(hour.replace(hour=0))
        monday = (hour - dt.timedelta(days=hour.weekday())).replace(hour=0)
        assert row["created_at"]["week"] == iso(monday)
        assert close(row["accuracy"], accuracy)
    # A week can span two months: refused with a way out, not answered wrongly.
    err = error(server, "{ conversion_monitoring { created_at { week month } accuracy } }")
    assert "week" in err["message"] and "month" in err["message"] and err["path"] == ["conversion_monitoring"]
    assert data(server, "{ conversion_monitoring(limit: 1) { created_at { day week month } lead_count } }")


def test_where_order_limit_and_variables(server):
    query = """query($versions: [String!], $min: Number) {
      conversion_monitoring(where: {model_version: {in: $versions}, lead_count: {gte: $min}},
                            orderBy: [{accuracy: desc}], limit: 5) {
        model_version created_at { day } accuracy lead_count
      }
    }"""
    rows = data(server, query, {"versions": ["v2"], "min": 50})["conversion_monitoring"]
    assert 0 < len(rows) <= 5
    assert all(r["model_version"] == "v2" and r["lead_count"] >= 50 for r in rows)
    accuracies = [r["accuracy"] for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    # A day range, both ends included.
    days = data(server, """{ conversion_monitoring(where: {created_at: {inDateRange: ["2026-02-01", "2026-02-02"]}}) {
        created_at { day } lead_count } }""")["conversion_monitoring"]
    assert [d["created_at"]["day"] for d in days] == ["2026-02-01T00:00:00", "2026-02-02T00:00:00"]
    # Several root fields run as separate queries; aliases work.
    both = data(server, "{ c: conversion_monitoring { n: lead_count } f: fraud_monitoring { transaction_count } }")
    assert both["c"][0]["n"] > 1000 and both["f"][0]["transaction_count"] > 1000


def test_get_request_and_graphiql_page(server):
    response = httpx.get(f"{server.url}/graphql", params={"query": "{ fraud_monitoring { transaction_count } }"})
    assert response.status_code == 200 and response.json()["data"]["fraud_monitoring"][0]["transaction_count"] > 0
    page = httpx.get(f"{server.url}/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql.min.js" in page.text and "conversion_monitoring" in page.text
    for asset in ("graphiql.min.js", "graphiql.min.css", "react.production.min.js", "react-dom.production.min.js"):
        assert httpx.get(f"{server.url}/static/{asset}").status_code == 200


def test_introspection_shows_views_with_descriptions(server):
    schema = data(server, get_introspection_query(descriptions=True))["__schema"]
    types = {t["name"]: t for t in schema["types"]}
    query = types[schema["queryType"]["name"]]
    roots = {f["name"]: f for f in query["fields"]}
    assert {"conversion_monitoring", "fraud_monitoring", "catalog"} <= set(roots)
    assert roots["conversion_monitoring"]["description"].startswith("Quality of the lead-conversion model")
    row = types["ConversionMonitoring"]
    fields = {f["name"]: f for f in row["fields"]}
    assert fields["accuracy"]["description"].startswith("Share of predicted leads")
    assert "percent" in fields["accuracy"]["description"]
    assert fields["utm_source"]["description"] == "Marketing channel that brought the lead."
    grains = {f["name"] for f in types[fields["created_at"]["type"]["name"]]["fields"]}
    assert grains == {"value", "minute", "hour", "day", "week", "month", "quarter", "year"}
    where = {f["name"]: f["type"]["name"] for f in types["ConversionMonitoringWhere"]["inputFields"]}
    assert where["utm_source"] == "StringFilter" and where["created_at"] == "TimeFilter" and where["accuracy"] == "NumberFilter"
    args = {a["name"] for a in roots["conversion_monitoring"]["args"]}
    assert args == {"where", "orderBy", "limit", "offset", "window", "asOf"}


def test_catalog(server):
    catalog = data(server, "{ catalog { views { name fields { name kind ref } } metrics { name type format labelDelay } dimensions { name type } } }")["catalog"]
    metrics = {m["name"]: m for m in catalog["metrics"]}
    assert metrics["accuracy_3h"]["labelDelay"] == "1 day" and metrics["fraud_loss"]["format"] == "currency"
    assert "transactions.false_alarms" in metrics
    views = {v["name"]: v for v in catalog["views"]}
    assert {"name": "model_version", "kind": "dimension", "ref": "predictions.model_version"} in views["conversion_monitoring"]["fields"]


@pytest.mark.parametrize("query, expected", [
    ("{ conversion_monitoring { acuracy } }", "Did you mean 'accuracy'?"),
    ("{ conversion_monitoring { created_at { hours } } }", "Did you mean 'hour'?"),
    ("{ conversion_monitoring(orderBy: {accuracy: up}) { accuracy } }", "'up' does not exist in 'OrderDirection'"),
    ('{ conversion_monitoring(limit: "x") { accuracy } }', 'Int cannot represent non-integer value: "x"'),
    ('{ conversion_monitoring(asOf: "yesterday") { accuracy } }', "DateTime cannot represent 'yesterday'"),
    ('{ conversion_monitoring(window: "3 lightyears") { accuracy } }', "window '3 lightyears' is not a duration"),
    ("{ conversion_monitoring(limit: -1) { accuracy } }", "limit must be a non-negative integer"),
    ("{ conversion_monitoring(orderBy: {accuracy: desc}) { lead_count } }", "cannot order by 'accuracy'"),
    ("{ conversion_monitoring { created_at { value } accuracy_3h } }", "needs a grain"),
    ("{ conversion_monitoring(where: {nope: {equals: 1}}) { accuracy } }", "'nope' is not defined by type 'ConversionMonitoringWhere'"),
    ("{ nothing_here { x } }", "Cannot query field 'nothing_here' on type 'Query'"),
    ("{ conversion_monitoring { accuracy ", "Syntax Error"),
])
def test_bad_queries_get_clear_errors(server, query, expected):
    err = error(server, query)
    assert expected in err["message"], err
    assert err.get("locations") or err.get("path"), err
    # ... and the server keeps serving.
    assert data(server, "{ fraud_monitoring { transaction_count } }")["fraud_monitoring"][0]["transaction_count"] > 0


def test_bad_variables_and_requests(server):
    err = error(server, "query($d: DateTime) { conversion_monitoring(asOf: $d) { accuracy } }", {"d": "soon"})
    assert "$d" in err["message"] and "DateTime cannot represent 'soon'" in err["message"]
    bad = httpx.post(f"{server.url}/graphql", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["errors"][0]["message"]
    empty = httpx.post(f"{server.url}/graphql", json={"variables": {}})
    assert empty.status_code == 400 and "no query" in empty.json()["errors"][0]["message"]


def test_concurrent_requests(server):
    query = "{ fraud_monitoring { merchant_category fraud_loss } }"
    first = data(server, query)

    def one(_):
        return data(server, query)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(48)))
    assert all(r == first for r in results)


def test_engine_down_is_a_clear_error(tmp_path):
    with __import__("socket").socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    live = serve_project(project_over(tmp_path, f"postgresql://nobody@127.0.0.1:{port}/nowhere"))
    try:
        err = error(live, "{ fraud_monitoring { fraud_loss } }")
        assert "cannot connect to postgres" in err["message"] and err["extensions"]["code"].startswith("08")
        assert err["path"] == ["fraud_monitoring"]
        assert data(live, "{ catalog { views { name } } }")["catalog"]["views"]  # still serving
    finally:
        live.stop()


def test_schema_also_runs_on_plain_graphql_core(server):
    """The schema is ordinary graphql-core: without our execution context it still answers."""
    import asyncio

    from graphql import graphql

    from metrics_layer.serve.graphql_schema import build_schema

    async def run(_context, model, query, transform):
        return transform(server.service.run(query, model=model))

    schema = build_schema(server.service.model, run)
    result = asyncio.run(graphql(schema, "{ fraud_monitoring { merchant_category false_alarms } }"))
    assert not result.errors and len(result.data["fraud_monitoring"]) == 6
    assert all(isinstance(r["false_alarms"], int) for r in result.data["fraud_monitoring"])


def test_readme_graphql_examples_work_as_written(server):
    """The bodies of the README's curl examples (where, orderBy, limit by example) as a user sends them."""
    bodies = re.findall(r"-d '(.*?)'", readme_block("With `metrics-layer serve` running"))
    assert len(bodies) >= 2 and any("where:" in b and "orderBy:" in b for b in bodies)
    for body in bodies:
        response = httpx.post(f"{server.url}/graphql", content=body, headers={"Content-Type": "application/json"}, timeout=60)
        document = response.json()
        assert response.status_code == 200 and "errors" not in document, (body, document)
        assert all(rows for rows in document["data"].values()), (body, document)
        if "where: {utm_source: {in: [" in body:  # the filter applied, not just accepted
            assert {r["utm_source"] for r in document["data"]["conversion_monitoring"]} == {"google", "newsletter"}
