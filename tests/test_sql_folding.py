"""Constant folding of value-side expressions (metrics_layer/serve/pgwire/folding.py).

Every PostgreSQL expression is checked against the real PostgreSQL evaluating the same text
(TimeZone UTC, "now" replaced by the same timestamp literal); the forms PostgreSQL does not
have (DATEADD, TIMESTAMPADD, DATE_ADD of Tableau / Power BI / ODBC) against values written by
hand. Statements using them map onto SemanticQuery filters with the folded literal.
"""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from conftest import postgres_or_skip
from metrics_layer.compile import compile_query
from metrics_layer.model import load_model
from metrics_layer.query import Filter, QueryError
from metrics_layer.serve.pgwire.folding import Deferred, evaluate, fold, is_constant
from metrics_layer.serve.pgwire.mapping import template_for
from metrics_layer.views import public_views

REPO = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 2, 25, 12, 34, 56, 789012)

PG_EXPRESSIONS = [
    "TO_TIMESTAMP('2026-11-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')",
    "TO_TIMESTAMP('2026-11-08 13:45:10', 'YYYY-MM-DD HH24:MI:SS')",
    "TO_DATE('2026-01-02', 'YYYY-MM-DD')",
    "CAST('2026-01-01' AS timestamptz)",
    "CAST('2026-01-01 03:00:00+02' AS TIMESTAMP WITH TIME ZONE)",
    "'2026-01-01 10:11:12.5'::timestamp",
    "'2026-03-04'::date",
    "TIMESTAMP '2026-01-01 10:00'",
    "DATE '2026-01-01'",
    "NOW()",
    "CURRENT_DATE",
    "CURRENT_TIMESTAMP",
    "LOCALTIMESTAMP",
    "NOW() - INTERVAL '7 days'",
    "NOW() - INTERVAL '7' DAY",
    "CURRENT_DATE + INTERVAL '1 month'",
    "CAST(NOW() AS DATE) - INTERVAL '30 day'",
    "CAST(CURRENT_TIMESTAMP AS DATE)",
    "DATE_TRUNC('week', NOW())",
    "DATE_TRUNC('month', NOW()) - INTERVAL '1 month'",
    "DATE_TRUNC('quarter', TIMESTAMP '2026-08-17 10:00')",
    "DATE_TRUNC('year', DATE '2026-08-17')",
    "date_trunc('day', now()) - interval '1 day'",
    "TIMESTAMP '2026-01-31' + INTERVAL '1 month'",
    "TIMESTAMP '2024-02-29' + INTERVAL '1 year'",
    "TIMESTAMP '2026-01-01' + INTERVAL '1 day 02:30:00'",
    "TIMESTAMP '2026-01-01' + INTERVAL '1.5 days'",
    "TIMESTAMP '2026-03-31' - INTERVAL '1 mon'",
    "DATE '2026-01-01' - 1",
    "DATE '2026-01-01' + 31",
    "INTERVAL '2 hours' + TIMESTAMP '2026-01-01'",
    "TIMESTAMP '2026-01-01' + 3 * INTERVAL '1 hour'",
    "now()::date",
    "TO_TIMESTAMP(1700000000)",
    "1 + 2 * 3",
    "10 / 4",
    "-7 / 2",
    "-7 % 3",
    "7.0 / 2",
    "2.5 * 4",
    "-(3 - 10)",
]


@pytest.fixture(scope="module")
def pg():
    import psycopg

    with psycopg.connect(postgres_or_skip(), autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn


def _now_literal(node: exp.Expression) -> exp.Expression:
    """The expression with every "now" replaced by the fixed NOW (what PostgreSQL evaluates)."""
    def replace(n):
        if isinstance(n, exp.CurrentDate):
            return exp.Cast(this=exp.Literal.string(NOW.date().isoformat()), to=exp.DataType.build("date"))
        if isinstance(n, (exp.CurrentTimestamp, exp.Localtimestamp)):
            return exp.Cast(this=exp.Literal.string(NOW.isoformat(" ")), to=exp.DataType.build("timestamp"))
        return n
    return node.copy().transform(replace)


def _expr(text: str) -> exp.Expression:
    return sqlglot.parse_one(f"SELECT {text}", read="postgres").expressions[0]


def _as_python(v):
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        return v.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return v


@pytest.mark.parametrize("text", PG_EXPRESSIONS)
def test_folded_value_equals_postgresql(pg, text):
    node = _expr(text)
    assert is_constant(node)
    folded = evaluate(node, NOW)
    (expected,) = pg.execute(f"SELECT ({_now_literal(node).sql('postgres')})").fetchone()
    expected = _as_python(expected)
    if isinstance(expected, dt.datetime) and isinstance(folded, dt.date) and not isinstance(folded, dt.datetime):
        pytest.fail(f"{text}: folded a date {folded}, PostgreSQL gives a timestamp {expected}")
    if isinstance(expected, (decimal.Decimal, float)):
        assert decimal.Decimal(str(folded)) == decimal.Decimal(str(expected)), text
    else:
        assert folded == expected and type(folded) is type(expected), (text, folded, expected)


@pytest.mark.parametrize("text, expected", [
    ("DATEADD(day, -7, CURRENT_DATE)", dt.datetime(2026, 2, 18)),
    ("DATEADD('month', 1, '2026-01-31')", dt.datetime(2026, 2, 28)),
    ("DATEADD(hh, 3, TIMESTAMP '2026-01-01 22:00')", dt.datetime(2026, 1, 2, 1)),
    ("DATE_ADD('day', 3, TIMESTAMP '2026-01-01')", dt.datetime(2026, 1, 4)),
    ("DATE_ADD(TIMESTAMP '2026-01-01', INTERVAL '1 day')", dt.datetime(2026, 1, 2)),
    ("DATE_SUB(TIMESTAMP '2026-01-01', INTERVAL 1 DAY)", dt.datetime(2025, 12, 31)),
    ("TIMESTAMPADD(SQL_TSI_DAY, 1, TIMESTAMP '2026-01-01')", dt.datetime(2026, 1, 2)),
    ("TIMESTAMPADD(SQL_TSI_MONTH, -1, TIMESTAMP '2026-03-31 08:00')", dt.datetime(2026, 2, 28, 8)),
    ("TIMESTAMPADD(SQL_TSI_QUARTER, 1, DATE '2026-01-15')", dt.datetime(2026, 4, 15)),
    ("now() AT TIME ZONE 'UTC'", NOW),
])
def test_tool_date_add_forms(text, expected):
    assert evaluate(_expr(text), NOW) == expected


def test_now_is_deferred_and_constants_are_not():
    assert isinstance(fold(_expr("NOW() - INTERVAL '1 day'")), Deferred)
    assert fold(_expr("TIMESTAMP '2026-01-01' - INTERVAL '1 day'")) == dt.datetime(2025, 12, 31)


@pytest.mark.parametrize("text, words", [
    ("upper('a')", "UPPER()"),
    ("md5('a')", "MD5()"),
    ("random()", "RANDOM()"),
    ("TO_CHAR(now(), 'YYYY')", "TO_CHAR()"),
    ("now() AT TIME ZONE 'Europe/Paris'", "UTC"),
    ("TO_TIMESTAMP('2026-13-01', 'YYYY-MM-DD')", "TO_TIMESTAMP"),
    ("'not a date'::timestamp", "not a date"),
    ("1 / 0", "division by zero"),
])
def test_refused_with_the_reason(text, words):
    with pytest.raises(QueryError) as info:
        fold(_expr(text))
    assert words in info.value.message


# ---- in statements -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    return load_model(REPO / "metrics")


def bound(model, sql, **bind):
    template = template_for(sql, model, public_views(model))
    query = template.bind([], **bind)
    compile_query(model, query)
    return query


SUPERSET = ("SELECT date_trunc('day', created_at) AS created_at, lead_count AS lead_count FROM conversion_monitoring "
            "WHERE created_at >= TO_TIMESTAMP('2026-11-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') "
            "AND created_at < TO_TIMESTAMP('2026-11-08 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') "
            "GROUP BY date_trunc('day', created_at) LIMIT 10000")


def test_superset_time_range_maps_to_literals(model):
    q = bound(model, SUPERSET)
    assert q.filters == (Filter("leads.created_at", ">=", dt.datetime(2026, 11, 1)),
                         Filter("leads.created_at", "<", dt.datetime(2026, 11, 8)))
    assert q.limit == 10000


def test_now_is_the_as_of_or_the_statement_time(model):
    sql = "SELECT lead_count FROM conversion_monitoring WHERE created_at >= NOW() - INTERVAL '7 days'"
    q = bound(model, sql, as_of=dt.datetime(2026, 2, 25, 12))
    assert q.filters == (Filter("leads.created_at", ">=", dt.datetime(2026, 2, 18, 12)),)
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    q = bound(model, sql)  # the same cached template, evaluated again
    after = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert before - dt.timedelta(days=7) <= q.filters[0].value <= after - dt.timedelta(days=7)


def test_in_between_and_limit_fold(model):
    q = bound(model, "SELECT model_version, lead_count FROM conversion_monitoring "
                     "WHERE created_at BETWEEN DATE '2026-02-01' AND DATE '2026-02-01' + 7 "
                     "AND utm_source IN ('a' || 'ds', 'seo') LIMIT 10 * 10")
    assert q.filters == (Filter("leads.created_at", "between", (dt.date(2026, 2, 1), dt.date(2026, 2, 8))),
                         Filter("leads.utm_source", "in", ("ads", "seo")))
    assert q.limit == 100
    q = bound(model, "SELECT lead_count FROM conversion_monitoring WHERE DATEADD(day, -7, DATE '2026-02-25') <= created_at")
    assert q.filters == (Filter("leads.created_at", ">=", dt.datetime(2026, 2, 18)),)


# ---- time predicates BI tools write (issue 9, item 2) --------------------------------------

Y2026 = dt.datetime(2026, 1, 1)


@pytest.mark.parametrize("where, expected", [
    ("EXTRACT(YEAR FROM created_at) = 2026", Filter("leads.created_at", "=", Y2026, "year")),
    ("2025 < EXTRACT(YEAR FROM created_at)", Filter("leads.created_at", ">", dt.datetime(2025, 1, 1), "year")),
    ("date_part('year', created_at) IN (2025, 2026)",
     Filter("leads.created_at", "in", (dt.datetime(2025, 1, 1), Y2026), "year")),
    ("EXTRACT(YEAR FROM created_at) BETWEEN 2025 AND 2026",
     Filter("leads.created_at", "between", (dt.datetime(2025, 1, 1), Y2026), "year")),
    ("EXTRACT(EPOCH FROM created_at) >= 1771000000", Filter("leads.created_at", ">=", dt.datetime(2026, 2, 13, 16, 26, 40))),
    ("CAST(created_at AS DATE) = '2026-02-07 12:00'", Filter("leads.created_at", "=", dt.date(2026, 2, 7), "day")),
    ("created_at::date BETWEEN '2026-02-01' AND '2026-02-07'",
     Filter("leads.created_at", "between", (dt.date(2026, 2, 1), dt.date(2026, 2, 7)), "day")),
    ("date_trunc('day', created_at) >= TIMESTAMP '2026-02-10 05:00'",
     Filter("leads.created_at", ">=", dt.datetime(2026, 2, 10, 5), "day")),
])
def test_time_predicates_map_exactly(model, where, expected):
    q = bound(model, f"SELECT lead_count FROM conversion_monitoring WHERE {where}")
    assert q.filters == (expected,)


@pytest.mark.parametrize("where, words", [
    ("EXTRACT(MONTH FROM created_at) = 2", "merges periods"),
    ("EXTRACT(DOW FROM created_at) = 1", "merges periods"),
    ("EXTRACT(YEAR FROM created_at) = 2026.5", "not a year"),
    ("EXTRACT(YEAR FROM created_at) = $1", "constant"),
    ("EXTRACT(YEAR FROM utm_source) = 2026", "time dimensions"),
])
def test_time_predicates_refused(model, where, words):
    with pytest.raises(QueryError) as info:
        template_for(f"SELECT lead_count FROM conversion_monitoring WHERE {where}", model, public_views(model)).bind([None])
    assert words in info.value.message
