"""Unit tests of the semantic SQL mapping: client SQL -> one SemanticQuery, or a clear refusal."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from metrics_layer.compile import compile_query
from metrics_layer.model import load_model
from metrics_layer.query import DimensionRef, Filter, OrderBy, QueryError, SemanticQuery, TopGroups
from metrics_layer.serve.pgwire.mapping import Param, template_for
from metrics_layer.serve.pgwire.semantic import classify
from metrics_layer.views import public_views

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model():
    return load_model(REPO / "metrics")


def mapped(model, sql, params=(), **bind):
    template = template_for(sql, model, public_views(model))
    query = template.bind(list(params), **bind)
    compile_query(model, query)  # every accepted statement compiles
    return template, query


def refused(model, sql, code="0A000"):
    with pytest.raises(QueryError) as info:
        template_for(sql, model, public_views(model)).bind([])
    assert info.value.code == code, info.value.message
    return info.value.message


MV = DimensionRef("predictions.model_version")


def test_dimension_and_metric(model):
    t, q = mapped(model, "SELECT model_version, accuracy FROM conversion_monitoring GROUP BY model_version")
    assert q.metrics == ("accuracy",) and q.dimensions == (MV,)
    assert [c.name for c in t.columns] == ["model_version", "accuracy"]
    assert t.identity


def test_group_by_is_optional_and_positional(model):
    _, a = mapped(model, "SELECT model_version, accuracy FROM conversion_monitoring")
    _, b = mapped(model, "SELECT model_version, accuracy FROM conversion_monitoring GROUP BY 1")
    assert a == b


def test_metric_forms(model):
    t, q = mapped(model, "SELECT MEASURE(accuracy), SUM(missed_fraud_amount) FROM fraud_monitoring".replace(
        "MEASURE(accuracy), ", "MEASURE(fraud_loss), "))
    assert q.metrics == ("fraud_loss", "transactions.missed_fraud_amount")
    assert [c.name for c in t.columns] == ["measure", "sum"]
    _, q = mapped(model, "SELECT COUNT(false_alarms), COUNT(transaction_count) FROM fraud_monitoring")
    assert q.metrics == ("transactions.false_alarms", "transactions.transaction_count")
    _, q = mapped(model, "SELECT COUNT(DISTINCT lead_count), COUNT(lead_count) AS n FROM conversion_monitoring")
    assert q.metrics == ("leads.lead_count",)


def test_mismatching_aggregate_is_refused_with_the_accepted_forms(model):
    message = refused(model, "SELECT SUM(accuracy) FROM conversion_monitoring")
    assert "accuracy" in message and "MEASURE(accuracy)" in message
    message = refused(model, "SELECT AVG(missed_fraud_amount) FROM fraud_monitoring")
    assert "SUM(missed_fraud_amount)" in message
    assert "not additive" in refused(model, "SELECT SUM(accuracy_3h) FROM conversion_monitoring")
    refused(model, "SELECT COUNT(DISTINCT false_alarms) FROM fraud_monitoring")
    refused(model, "SELECT SUM(utm_source) FROM conversion_monitoring")


def test_aggregate_wrappers_over_one_group(model):
    """BI tools wrap every measure: over one group an aggregate of the group's value is that value."""
    _, q = mapped(model, "SELECT model_version, SUM(lead_count), MIN(lead_count), MAX(accuracy), AVG(accuracy_3h), "
                         "MIN(f1) FROM conversion_monitoring GROUP BY 1")
    assert q.metrics == ("leads.lead_count", "accuracy", "accuracy_3h", "f1")
    _, q = mapped(model, "SELECT SUM(transaction_count), MAX(false_alarms), AVG(fraud_loss) FROM fraud_monitoring")
    assert q.metrics == ("transactions.transaction_count", "transactions.false_alarms", "fraud_loss")


def test_grains_and_names(model):
    t, q = mapped(model, "SELECT date_trunc('hour', created_at), accuracy FROM conversion_monitoring GROUP BY 1 ORDER BY 1")
    assert q.dimensions == (DimensionRef("leads.created_at", "hour"),)
    assert t.columns[0].name == "date_trunc"
    assert q.order_by == (OrderBy("leads.created_at"),)
    t, q = mapped(model, "SELECT CAST(created_at AS DATE), lead_count FROM conversion_monitoring GROUP BY 1")
    assert q.dimensions == (DimensionRef("leads.created_at", "day"),) and t.columns[0].as_date
    assert t.columns[0].name == "created_at"
    _, q2 = mapped(model, "SELECT created_at::date AS day, lead_count FROM conversion_monitoring GROUP BY day")
    assert q2 == q
    for grain in ("minute", "day", "week", "month", "quarter", "year"):
        _, q = mapped(model, f"SELECT DATE_TRUNC('{grain}', created_at) AS t, lead_count FROM conversion_monitoring GROUP BY t")
        assert q.dimensions[0].grain == grain


def test_extract_and_other_expressions_are_refused(model):
    assert "date_trunc" in refused(model, "SELECT EXTRACT(hour FROM created_at), lead_count FROM conversion_monitoring")
    refused(model, "SELECT accuracy * 100 FROM conversion_monitoring")
    refused(model, "SELECT upper(utm_source) FROM conversion_monitoring")
    refused(model, "SELECT SUM(*) FROM conversion_monitoring", "42809")
    refused(model, "SELECT date_trunc('fortnight', created_at) FROM conversion_monitoring")


def test_aliases_quoted_identifiers_and_qualified_names(model):
    t, q = mapped(model, 'SELECT v."model_version" AS "Model", v.accuracy AS acc FROM public.conversion_monitoring AS v ORDER BY acc DESC')
    assert [c.name for c in t.columns] == ["Model", "acc"]
    assert q.order_by == (OrderBy("accuracy", True),)
    _, q = mapped(model, 'SELECT "conversion_monitoring".utm_source FROM "conversion_monitoring"')
    assert q.dimensions == (DimensionRef("leads.utm_source"),)
    refused(model, 'SELECT "Model_Version" FROM conversion_monitoring', "42703")
    refused(model, "SELECT x.utm_source FROM conversion_monitoring v", "42P01")


def test_reordered_and_repeated_columns(model):
    t, q = mapped(model, "SELECT accuracy, model_version, accuracy AS again FROM conversion_monitoring")
    assert q.metrics == ("accuracy",) and q.dimensions == (MV,)
    assert [c.source for c in t.columns] == [1, 0, 1] and not t.identity


def test_select_star_is_every_dimension_then_every_metric(model):
    t, q = mapped(model, "SELECT * FROM fraud_monitoring WHERE merchant_category = 'travel' LIMIT 0")
    view = public_views(model)["fraud_monitoring"]
    assert [c.name for c in t.columns] == [f.name for f in view.dimensions + view.metrics]


def test_where_operators(model):
    sql = """SELECT utm_source, lead_count FROM conversion_monitoring
             WHERE utm_source IN ('google', 'bing') AND model_version <> 'v1' AND created_at >= TIMESTAMP '2026-02-20'
               AND created_at < '2026-02-25'::timestamp AND utm_source LIKE 'go%' AND model_version LIKE '%2%'
               AND utm_source IS NOT NULL AND model_version NOT IN ('v0') AND created_at BETWEEN '2026-01-01' AND '2026-03-01'
               AND (utm_source = 'google' OR utm_source = 'bing') AND NOT utm_source = 'x' AND utm_source LIKE 'google'"""
    _, q = mapped(model, sql)
    assert q.filters == (
        Filter("leads.utm_source", "in", ("google", "bing")),
        Filter("predictions.model_version", "!=", "v1"),
        Filter("leads.created_at", ">=", dt.datetime(2026, 2, 20)),
        Filter("leads.created_at", "<", dt.datetime(2026, 2, 25)),
        Filter("leads.utm_source", "starts with", "go"),
        Filter("predictions.model_version", "contains", "2"),
        Filter("leads.utm_source", "is not null"),
        Filter("predictions.model_version", "not in", ("v0",)),
        Filter("leads.created_at", "between", ("2026-01-01", "2026-03-01")),
        Filter("leads.utm_source", "in", ("google", "bing")),
        Filter("leads.utm_source", "!=", "x"),
        Filter("leads.utm_source", "=", "google"),
    )


def test_value_on_the_left_and_grain_filters(model):
    _, q = mapped(model, "SELECT lead_count FROM conversion_monitoring WHERE '2026-02-20' <= created_at AND created_at::date = '2026-02-21'")
    assert q.filters == (Filter("leads.created_at", ">=", "2026-02-20"), Filter("leads.created_at", "=", dt.date(2026, 2, 21), "day"))
    _, q = mapped(model, "SELECT lead_count FROM conversion_monitoring WHERE date_trunc('hour', created_at) = TIMESTAMP '2026-02-21 10:00'")
    assert q.filters == (Filter("leads.created_at", "=", dt.datetime(2026, 2, 21, 10), "hour"),)


def test_metric_filters_in_having_and_where(model):
    _, q = mapped(model, "SELECT merchant_category, fraud_loss FROM fraud_monitoring GROUP BY 1 HAVING fraud_loss > 100 AND SUM(missed_fraud_amount) < 1e9")
    assert q.filters == (Filter("fraud_loss", ">", 100), Filter("transactions.missed_fraud_amount", "<", 1e9))
    _, q = mapped(model, "SELECT merchant_category FROM fraud_monitoring WHERE false_alarms >= 3")
    assert q.filters == (Filter("transactions.false_alarms", ">=", 3),)


def test_refused_conditions(model):
    message = refused(model, "SELECT lead_count FROM conversion_monitoring WHERE utm_source = 'a' OR model_version = 'v1'")
    assert "OR" in message and "same column" in message
    assert "LIKE" in refused(model, "SELECT lead_count FROM conversion_monitoring WHERE utm_source LIKE 'a_c%'")
    refused(model, "SELECT lead_count FROM conversion_monitoring WHERE utm_source LIKE '%a'")
    refused(model, "SELECT lead_count FROM conversion_monitoring WHERE utm_source ILIKE 'a%'")
    refused(model, "SELECT lead_count FROM conversion_monitoring WHERE utm_source NOT LIKE 'a%'")
    refused(model, "SELECT lead_count FROM conversion_monitoring WHERE utm_source = model_version")
    assert "MD5()" in refused(model, "SELECT lead_count FROM conversion_monitoring WHERE utm_source = md5('a')")
    assert "reads column" in refused(model, "SELECT lead_count FROM conversion_monitoring WHERE created_at > created_at - INTERVAL '1 day'")
    refused(model, "SELECT lead_count FROM conversion_monitoring WHERE utm_source IN (SELECT 1)")
    refused(model, "SELECT lead_count FROM conversion_monitoring WHERE lower(utm_source) = 'a'")
    refused(model, "SELECT lead_count FROM conversion_monitoring WHERE created_at NOT BETWEEN '2026-01-01' AND '2026-02-01'")


def test_group_by_must_match_the_selected_dimensions(model):
    assert refused(model, "SELECT model_version, utm_source, accuracy FROM conversion_monitoring GROUP BY 1", "42803")
    refused(model, "SELECT accuracy FROM conversion_monitoring GROUP BY model_version")
    refused(model, "SELECT model_version, accuracy FROM conversion_monitoring GROUP BY ROLLUP (model_version)")
    refused(model, "SELECT model_version, accuracy FROM conversion_monitoring GROUP BY 2")


def test_order_limit_offset(model):
    _, q = mapped(model, "SELECT model_version, accuracy FROM conversion_monitoring ORDER BY 2 DESC, model_version LIMIT 5 OFFSET 2")
    assert q.order_by == (OrderBy("accuracy", True), OrderBy("predictions.model_version"))
    assert (q.limit, q.offset) == (5, 2)
    _, q = mapped(model, "SELECT model_version FROM conversion_monitoring FETCH FIRST 3 ROWS ONLY")
    assert q.limit == 3
    _, q = mapped(model, "SELECT model_version, accuracy FROM conversion_monitoring ORDER BY accuracy DESC NULLS FIRST")
    assert q.order_by == (OrderBy("accuracy", True),)
    refused(model, "SELECT model_version, accuracy FROM conversion_monitoring ORDER BY accuracy NULLS FIRST")
    refused(model, "SELECT model_version FROM conversion_monitoring ORDER BY accuracy")


def test_parameters_bind_at_execute(model):
    sql = "SELECT merchant_category, fraud_loss FROM fraud_monitoring WHERE model_version = $1 AND created_at >= $2 GROUP BY 1 HAVING fraud_loss > $3 LIMIT $4"
    t, q = mapped(model, sql, ["fraud-v2", dt.datetime(2026, 2, 10), 10, 3])
    assert t.param_count == 4 and t.param_fields[4] == "int8"
    assert t.filters[0].value == Param(1)
    assert q.filters == (
        Filter("fraud_scores.model_version", "=", "fraud-v2"), Filter("transactions.created_at", ">=", dt.datetime(2026, 2, 10)),
        Filter("fraud_loss", ">", 10),
    )
    assert q.limit == 3
    assert template_for(sql, model, public_views(model)) is t  # parsed once per text
    q2 = t.bind(["fraud-v1", "2026-02-01", 1, None])
    assert q2.filters[0].value == "fraud-v1" and q2.limit is None
    t, q = mapped(model, "SELECT lead_count FROM conversion_monitoring WHERE utm_source LIKE $1", ["goo%"])
    assert q.filters == (Filter("leads.utm_source", "starts with", "goo"),)
    with pytest.raises(QueryError):
        t.bind(["g_o%"])


def test_session_settings_reach_the_query(model):
    t = template_for("SELECT accuracy_3h FROM conversion_monitoring", model, public_views(model))
    q = t.bind([], window="6 hours", as_of=dt.datetime(2026, 2, 25, 12))
    assert q.window == "6 hours" and q.as_of == dt.datetime(2026, 2, 25, 12)


def test_wrappers(model):
    t, q = mapped(model, "SELECT * FROM (SELECT utm_source, lead_count FROM conversion_monitoring ORDER BY 2 DESC) AS t LIMIT 2")
    assert q.limit == 2 and q.order_by == (OrderBy("leads.lead_count", True),)
    t, q = mapped(model, "SELECT * FROM (SELECT utm_source FROM conversion_monitoring LIMIT 4) t LIMIT 2 OFFSET 1")
    assert q.limit == 4 and t.bind_post([]) == (1, 2)
    t, q = mapped(model, "SELECT count(*) FROM (SELECT utm_source, lead_count FROM conversion_monitoring) AS t")
    assert t.count_rows and q.dimensions == (DimensionRef("leads.utm_source"),)
    _, q = mapped(model, "SELECT utm_source FROM (SELECT utm_source, lead_count FROM conversion_monitoring) t WHERE lead_count > 1")
    assert q.filters == (Filter("leads.lead_count", ">", 1),) and q.metrics == ()
    _, q = mapped(model, "SELECT sum(lead_count) FROM (SELECT utm_source, lead_count FROM conversion_monitoring) t")
    assert q.metrics == ("leads.lead_count",) and q.dimensions == ()


SUPERSET_VIRTUAL_DATASET = (  # captured from Superset 6.1.0 (tests/test_superset.py, virtual dataset bar chart)
    'SELECT utm_source AS utm_source, sum(lead_count) AS "SUM(lead_count)" \n'
    'FROM (SELECT utm_source, model_version, lead_count FROM conversion_monitoring\n'
    ') AS virtual_table GROUP BY utm_source ORDER BY "SUM(lead_count)" DESC \n LIMIT 10000')


def test_quoted_labels_and_aliases_over_a_subquery_keep_their_case(model):
    """An outer "SUM(x)" label is ordered by as written (Superset's virtual datasets); quoted
    subquery and CTE names are exact, as in PostgreSQL."""
    t, q = mapped(model, SUPERSET_VIRTUAL_DATASET)
    assert [c.name for c in t.columns] == ["utm_source", "SUM(lead_count)"]
    assert q.dimensions == (DimensionRef("leads.utm_source"),) and q.order_by == (OrderBy("leads.lead_count", True),)
    assert q.limit == 10000
    t, _ = mapped(model, 'SELECT "T".utm_source FROM (SELECT utm_source, lead_count FROM conversion_monitoring) AS "T"')
    assert [c.name for c in t.columns] == ["utm_source"]
    t, _ = mapped(model, 'WITH "Q" AS (SELECT utm_source, lead_count FROM conversion_monitoring) SELECT * FROM "Q"')
    assert [c.name for c in t.columns] == ["utm_source", "lead_count"]
    t, _ = mapped(model, 'SELECT count(*) AS "Rows" FROM (SELECT utm_source, lead_count FROM conversion_monitoring) t')
    assert t.count_rows and t.count_name == "Rows"
    assert "missing FROM-clause entry" in refused(model, 'SELECT "T".utm_source FROM (SELECT utm_source FROM conversion_monitoring) AS t', "42P01")


SUPERSET_SERIES_LIMIT = (  # captured from Superset 6.1.0: a time series limited to its top 2 series
    "SELECT DATE_TRUNC('DAY', created_at) AS created_at, utm_source AS utm_source, SUM(lead_count) AS \"SUM(lead_count)\" "
    "FROM public.conversion_monitoring JOIN (SELECT utm_source AS utm_source__, SUM(lead_count) AS mme_inner__ "
    "FROM public.conversion_monitoring WHERE created_at >= TO_TIMESTAMP('2026-02-10 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') "
    "GROUP BY utm_source ORDER BY SUM(lead_count) DESC LIMIT 2) AS series_limit ON utm_source = utm_source__ "
    "WHERE created_at >= TO_TIMESTAMP('2026-02-10 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') "
    "GROUP BY DATE_TRUNC('DAY', created_at), utm_source LIMIT 10000")


def test_top_n_series_join_maps_to_a_top_groups_restriction(model):
    t, q = mapped(model, SUPERSET_SERIES_LIMIT)
    since = Filter("leads.created_at", ">=", dt.datetime(2026, 2, 10))
    assert [c.name for c in t.columns] == ["created_at", "utm_source", "SUM(lead_count)"]
    assert q.dimensions == (DimensionRef("leads.created_at", "day"), DimensionRef("leads.utm_source"))
    assert q.filters == (since,) and q.limit == 10000
    assert q.top == TopGroups((DimensionRef("leads.utm_source"),), "leads.lead_count", 2, True, (since,))
    # the other spellings Superset writes (older versions order by the alias; qualified ON sides)
    _, q2 = mapped(model, SUPERSET_SERIES_LIMIT.replace("ORDER BY SUM(lead_count) DESC", "ORDER BY mme_inner__ DESC")
                   .replace("ON utm_source = utm_source__", "ON series_limit.utm_source__ = conversion_monitoring.utm_source"))
    assert q2 == q
    # ranked by another metric than the one selected, ascending, LIMIT as a folded constant or $n
    _, q3 = mapped(model, series_limit_sql("utm_source", 1 + 2, order="MAX(conversion_rate) ASC"))
    assert q3.top == TopGroups((DimensionRef("leads.utm_source"),), "conversion_rate", 3, False, (since,))
    t4, q4 = mapped(model, series_limit_sql("utm_source", "$1"), [4])
    assert t4.param_count == 1 and q4.top.limit == 4


def series_limit_sql(columns: str = "utm_source", limit=2, order: str = "SUM(lead_count) DESC",
                     inner_since: str = "2026-02-10", outer_since: str = "2026-02-10", grain: str = "DAY") -> str:
    """Superset 6.1's statement for a daily time series of `columns` limited to the top `limit` series."""
    names = [c.strip() for c in columns.split(",")]
    inner = ", ".join(f"{c} AS {c}__" for c in names)
    on = " AND ".join(f"{c} = {c}__" for c in names)
    def since(day):
        return f"created_at >= TO_TIMESTAMP('{day} 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')"
    return (f"SELECT DATE_TRUNC('{grain}', created_at) AS created_at, {', '.join(f'{c} AS {c}' for c in names)}, "
            f"SUM(lead_count) AS \"SUM(lead_count)\" FROM public.conversion_monitoring JOIN (SELECT {inner}, "
            f"SUM(lead_count) AS mme_inner__ FROM public.conversion_monitoring WHERE {since(inner_since)} "
            f"GROUP BY {', '.join(names)} ORDER BY {order} LIMIT {limit}) AS series_limit ON {on} "
            f"WHERE {since(outer_since)} GROUP BY DATE_TRUNC('{grain}', created_at), {', '.join(names)} LIMIT 10000")


def test_captured_statement_is_what_series_limit_sql_writes():
    assert series_limit_sql() == SUPERSET_SERIES_LIMIT


@pytest.mark.parametrize("sql, words", [
    (SUPERSET_SERIES_LIMIT.replace(" JOIN (", " LEFT JOIN ("), "LEFT JOIN"),
    (SUPERSET_SERIES_LIMIT.replace("ON utm_source = utm_source__", "ON utm_source <> utm_source__"), "AND of"),
    (SUPERSET_SERIES_LIMIT.replace("ON utm_source = utm_source__", "ON model_version = utm_source__"), "different columns"),
    (SUPERSET_SERIES_LIMIT.replace("ON utm_source = utm_source__", "ON true"), "AND of"),
    (SUPERSET_SERIES_LIMIT.replace("ORDER BY SUM(lead_count) DESC ", ""), "ordered by one metric"),
    (SUPERSET_SERIES_LIMIT.replace("ORDER BY SUM(lead_count) DESC", "ORDER BY utm_source__"), "ordered by a metric"),
    (SUPERSET_SERIES_LIMIT.replace("ORDER BY SUM(lead_count) DESC", "ORDER BY SUM(accuracy) DESC"), "not additive"),
    (SUPERSET_SERIES_LIMIT.replace("LIMIT 2)", "LIMIT 2 OFFSET 1)"), "OFFSET"),
    ("SELECT utm_source, SUM(lead_count) FROM conversion_monitoring JOIN (SELECT merchant_category AS m__, "
     "SUM(transaction_count) AS mme_inner__ FROM fraud_monitoring GROUP BY merchant_category ORDER BY 2 DESC LIMIT 2) "
     "AS series_limit ON utm_source = m__ GROUP BY utm_source", "same view"),
    (SUPERSET_SERIES_LIMIT.replace("utm_source AS utm_source, ", "").replace(", utm_source LIMIT 10000", " LIMIT 10000"),
     "must be selected and grouped by"),
    (SUPERSET_SERIES_LIMIT.replace("utm_source AS utm_source__", "utm_source AS utm_source").replace("= utm_source__", "= utm_source"),
     "ambiguous"),
])
def test_series_limit_shapes_that_are_refused(model, sql, words):
    with pytest.raises(QueryError) as info:
        template_for(sql, model, public_views(model)).bind([])
    assert words in info.value.message, info.value.message


VIRTUAL = "(SELECT utm_source, model_version, lead_count, created_at FROM conversion_monitoring) AS virtual_table"


def virtual_series_limit_sql(limit=2, since="2026-02-10") -> str:
    """Superset's statement for the same chart over a virtual dataset: FROM (<its SQL>) AS virtual_table."""
    after = f"created_at >= TO_TIMESTAMP('{since} 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')"
    return (f"SELECT DATE_TRUNC('DAY', created_at) AS created_at, utm_source AS utm_source, sum(lead_count) AS \"SUM(lead_count)\" "
            f"FROM {VIRTUAL} JOIN (SELECT utm_source AS utm_source__, sum(lead_count) AS mme_inner__ FROM {VIRTUAL} "
            f"WHERE {after} GROUP BY utm_source ORDER BY sum(lead_count) DESC LIMIT {limit}) AS series_limit "
            f"ON utm_source = utm_source__ WHERE {after} GROUP BY DATE_TRUNC('DAY', created_at), utm_source "
            f"ORDER BY \"SUM(lead_count)\" DESC LIMIT 10000")


def test_series_limit_over_a_virtual_dataset(model):
    """Both the query and the ranking read the virtual dataset's subquery; a grain of its raw time
    re-aggregates its groups (exact for SUM of a sum or count)."""
    t, q = mapped(model, virtual_series_limit_sql())
    _, plain = mapped(model, SUPERSET_SERIES_LIMIT)
    assert [c.name for c in t.columns] == ["created_at", "utm_source", "SUM(lead_count)"]
    assert (q.dimensions, q.filters, q.top) == (plain.dimensions, plain.filters, plain.top)
    assert q.order_by == (OrderBy("leads.lead_count", True),)
    # without a series limit, the same time series over the virtual dataset
    _, q = mapped(model, f"SELECT DATE_TRUNC('DAY', created_at) AS created_at, sum(lead_count) FROM {VIRTUAL} GROUP BY 1")
    assert q.dimensions == (DimensionRef("leads.created_at", "day"),) and q.top is None
    assert "only SUM" in refused(model, f"SELECT DATE_TRUNC('DAY', created_at), MAX(accuracy) FROM "
                                        "(SELECT created_at, accuracy FROM conversion_monitoring) t GROUP BY 1")


def test_a_join_that_is_not_a_series_limit_is_refused(model):
    message = refused(model, "SELECT v.utm_source FROM conversion_monitoring v JOIN conversion_monitoring w ON true")
    assert "JOIN cannot be mapped" in message and "series limit" not in message
    assert "JOIN" in refused(model, "SELECT utm_source FROM conversion_monitoring JOIN (SELECT utm_source AS u FROM "
                                    "conversion_monitoring LIMIT 2) s ON utm_source = u")  # no GROUP BY: not a top N
    assert "wrapped" in refused(model, f"SELECT utm_source FROM ({SUPERSET_SERIES_LIMIT}) t WHERE utm_source <> 'x'")


# ---- series limits against the engine: DuckDB over the demo data, numbers from hand-written SQL --

# Extra leads in 2030, away from the demo's days: per source a fixed count (a tie, a NULL group
# that would rank first, a source only in the inner range), so each ranking is known by hand.
EXTRA = {"alpha": 3, "beta": 3, "gamma": 1, None: 5, "delta": 2}
EXTRA_DAYS = (dt.datetime(2030, 1, 1, 10), dt.datetime(2030, 1, 2, 11))


@pytest.fixture(scope="module")
def series_service(demo_duckdb_path, tmp_path_factory):
    import shutil

    import duckdb

    from conftest import make_project
    from metrics_layer.project import load_project
    from metrics_layer.service import MetricsService

    folder = tmp_path_factory.mktemp("series")
    path = folder / "demo.duckdb"
    shutil.copy(demo_duckdb_path, path)
    with duckdb.connect(str(path)) as con:
        next_id = con.execute("SELECT max(id) + 1 FROM leads").fetchall()[0][0]
        rows = []
        for source, count in EXTRA.items():
            for k in range(count):
                rows.append((next_id, EXTRA_DAYS[k % 2], source))
                next_id += 1
        con.executemany("INSERT INTO leads (id, created_at, utm_source) VALUES (?, ?, ?)", rows)
    service = MetricsService(load_project(make_project(folder / "project", f"duckdb:///{path}")))
    yield service
    service.engine.close()


def run_mapped(service, sql, params=()):
    template = template_for(sql, service.model, public_views(service.model))
    result = service.run(template.bind(list(params)))
    assert template.identity
    return sorted(result.rows, key=lambda r: tuple((v is None, str(v)) for v in r))


def hand_top(service, columns: list[str], limit: int, desc: bool, inner_since: str, outer_since: str,
             grain: str = "day") -> list[tuple]:
    """The chart by hand: the top `limit` groups of `columns` by their lead count since
    `inner_since` (ties by the columns, NULL last), joined on equality (no NULL group), by `grain`."""
    cols = ", ".join(columns)
    direction = "DESC" if desc else "ASC"
    conversion = (
        "SELECT l.id, l.created_at, l.utm_source, p.model_version FROM leads l LEFT JOIN ("
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY lead_id ORDER BY predicted_at DESC) AS rn "
        "FROM prediction_events) WHERE rn = 1) p ON p.lead_id = l.id")
    on = " AND ".join(f"x.{c} = top.{c}" for c in columns)
    sql = (f"WITH x AS ({conversion}), top AS (SELECT {cols} FROM x WHERE created_at >= TIMESTAMP '{inner_since}' "
           f"GROUP BY {cols} ORDER BY count(DISTINCT id) {direction}, "
           f"{', '.join(f'{c} ASC NULLS LAST' for c in columns)} LIMIT {limit}) "
           f"SELECT date_trunc('{grain}', x.created_at) AS t, {', '.join(f'x.{c}' for c in columns)}, count(DISTINCT x.id) "
           f"FROM x JOIN top ON {on} WHERE x.created_at >= TIMESTAMP '{outer_since}' GROUP BY 1, {', '.join(f'x.{c}' for c in columns)}")
    return sorted(service.engine.execute(sql).rows, key=lambda r: tuple((v is None, str(v)) for v in r))


def test_superset_series_limit_equals_hand_written_sql(series_service):
    got = run_mapped(series_service, SUPERSET_SERIES_LIMIT)
    want = hand_top(series_service, ["utm_source"], 2, True, "2026-02-10", "2026-02-10")
    assert got == want and len({r[1] for r in got}) == 2
    assert not any(r[1] is None for r in got)


@pytest.mark.parametrize("limit, desc, sources", [
    (2, True, {"alpha"}),  # NULL (5) ranks first and is dropped; alpha and beta tie at 3: alpha by name
    (3, True, {"alpha", "beta"}),
    (1, False, {"gamma"}),
    (2, False, {"gamma", "delta"}),
    (3, False, {"gamma", "delta", "alpha"}),  # the tie at 3 broken by name, ascending too
    (50, True, {"alpha", "beta", "gamma", "delta"}),  # more than there are groups: every non-NULL one
    (0, True, set()),
])
def test_ties_nulls_and_limits_on_known_groups(series_service, limit, desc, sources):
    order = "SUM(lead_count) DESC" if desc else "SUM(lead_count) ASC"
    sql = series_limit_sql("utm_source", limit, order, inner_since="2030-01-01", outer_since="2030-01-01")
    got = run_mapped(series_service, sql)
    assert got == hand_top(series_service, ["utm_source"], limit, desc, "2030-01-01", "2030-01-01")
    assert {r[1] for r in got} == sources


def test_inner_range_differs_from_the_outer_one(series_service):
    """The ranking reads the subquery's own WHERE: top sources of late February, shown since Feb 10."""
    sql = series_limit_sql("utm_source", 3, inner_since="2026-02-25", outer_since="2026-02-10")
    got = run_mapped(series_service, sql)
    assert got == hand_top(series_service, ["utm_source"], 3, True, "2026-02-25", "2026-02-10")
    assert len({r[1] for r in got}) == 3


@pytest.mark.parametrize("limit", [1, 4, 7, 1000])
def test_two_series_columns(series_service, limit):
    """Two series columns (one of them from the joined, deduplicated predictions model)."""
    sql = series_limit_sql("utm_source, model_version", limit, inner_since="2026-02-20", outer_since="2026-02-15")
    got = run_mapped(series_service, sql)
    want = hand_top(series_service, ["utm_source", "model_version"], limit, True, "2026-02-20", "2026-02-15")
    assert got == want and got
    pairs = {(r[1], r[2]) for r in got}
    assert len(pairs) <= limit and not any(None in p for p in pairs)


def test_series_limit_over_a_virtual_dataset_equals_hand_written_sql(series_service):
    got = run_mapped(series_service, virtual_series_limit_sql(3, "2026-02-20"))
    assert got == hand_top(series_service, ["utm_source"], 3, True, "2026-02-20", "2026-02-20")


def test_a_series_column_at_a_grain(series_service):
    """The series are days: the 3 days with most leads since Feb 20, by source."""
    sql = ("SELECT DATE_TRUNC('DAY', created_at) AS day, utm_source, SUM(lead_count) FROM conversion_monitoring "
           "JOIN (SELECT DATE_TRUNC('DAY', created_at) AS day__, SUM(lead_count) AS n FROM conversion_monitoring "
           "WHERE created_at >= '2026-02-20' GROUP BY 1 ORDER BY 2 DESC LIMIT 3) AS s ON DATE_TRUNC('DAY', created_at) = day__ "
           "GROUP BY 1, 2")
    got = run_mapped(series_service, sql)
    want = series_service.engine.execute(
        "WITH top AS (SELECT date_trunc('day', created_at) AS day FROM leads WHERE created_at >= TIMESTAMP '2026-02-20' "
        "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 3) SELECT date_trunc('day', l.created_at), l.utm_source, count(*) "
        "FROM leads l JOIN top ON date_trunc('day', l.created_at) = top.day GROUP BY 1, 2").rows
    assert got == sorted(want, key=lambda r: tuple((v is None, str(v)) for v in r)) and len({r[0] for r in got}) == 3


def test_series_limit_inside_a_wrapper_and_with_a_weekly_grain(series_service):
    got = run_mapped(series_service, f"SELECT * FROM ({series_limit_sql('utm_source', 2, grain='WEEK')}) AS t")
    assert got == hand_top(series_service, ["utm_source"], 2, True, "2026-02-10", "2026-02-10", grain="week")


def test_top_groups_change_the_compiled_query_and_its_cache_key(series_service):
    plain = template_for(SUPERSET_SERIES_LIMIT, series_service.model, public_views(series_service.model)).bind([])
    import dataclasses

    unlimited = dataclasses.replace(plain, top=None)
    other = dataclasses.replace(plain, top=dataclasses.replace(plain.top, limit=3))
    assert len({plain, unlimited, other}) == 3
    sqls = {compile_query(series_service.model, q) for q in (plain, unlimited, other)}
    assert len(sqls) == 3 and " IN (SELECT " in compile_query(series_service.model, plain)


def test_top_groups_refusals(model):
    since = (Filter("leads.created_at", ">=", "2026-02-10"),)
    query = SemanticQuery(("leads.lead_count",), (DimensionRef("leads.created_at", "day"),),
                          top=TopGroups(("leads.utm_source",), "leads.lead_count", 2, filters=since))
    with pytest.raises(QueryError) as info:
        compile_query(model, query)
    assert "must be one of the query's dimensions" in info.value.message and info.value.code == "0A000"
    query = SemanticQuery(("leads.lead_count",), (DimensionRef("leads.created_at", "day"),),
                          top=TopGroups((DimensionRef("leads.created_at", "week"),), "leads.lead_count", 2))
    with pytest.raises(QueryError) as info:
        compile_query(model, query)
    assert "same grain" in info.value.message
    with pytest.raises(QueryError):
        TopGroups((), "leads.lead_count", 2)
    with pytest.raises(QueryError):
        TopGroups(("leads.utm_source",), "leads.lead_count", -1)
    with pytest.raises(QueryError) as info:
        compile_query(model, SemanticQuery(("leads.lead_count",), ("leads.utm_source",),
                                           top=TopGroups(("leads.utm_source",), "acuracy", 2)))
    assert "did you mean 'accuracy'" in info.value.message


TABLEAU_REAGG = ('SELECT "t"."utm_source" AS "utm_source", SUM("t"."lead_count") AS "sum:lead_count:ok" '
                 'FROM (SELECT utm_source, model_version, lead_count FROM conversion_monitoring) "t" GROUP BY 1')


def test_subqueries_and_ctes_fold_into_one_query(model):
    t, q = mapped(model, TABLEAU_REAGG)
    assert [c.name for c in t.columns] == ["utm_source", "sum:lead_count:ok"]
    assert q.dimensions == (DimensionRef("leads.utm_source"),) and q.metrics == ("leads.lead_count",)
    t, q = mapped(model, 'select "_"."utm_source", "_"."lead_count" from (select utm_source, lead_count from conversion_monitoring) "_" limit 1000')
    assert q.limit == 1000 and [c.name for c in t.columns] == ["utm_source", "lead_count"]
    t, q = mapped(model, "WITH t AS (SELECT model_version, accuracy FROM conversion_monitoring GROUP BY 1) "
                         "SELECT model_version AS v, accuracy FROM t WHERE model_version IS NOT NULL ORDER BY 1")
    assert [c.name for c in t.columns] == ["v", "accuracy"] and q.filters == (Filter("predictions.model_version", "is not null"),)
    _, q = mapped(model, "SELECT merchant_category, SUM(missed_fraud_amount) AS m, SUM(transaction_count) FROM "
                         "(SELECT merchant_category, model_version, missed_fraud_amount, transaction_count FROM fraud_monitoring) q "
                         "WHERE merchant_category <> 'x' GROUP BY merchant_category HAVING SUM(transaction_count) > 5 ORDER BY m DESC")
    assert q.filters == (Filter("transactions.merchant_category", "!=", "x"), Filter("transactions.transaction_count", ">", 5))
    assert q.order_by == (OrderBy("transactions.missed_fraud_amount", True),)


@pytest.mark.parametrize("sql, words", [
    ("SELECT MAX(accuracy) FROM (SELECT utm_source, accuracy FROM conversion_monitoring) t", "only SUM"),
    ("SELECT utm_source, SUM(accuracy) FROM (SELECT utm_source, accuracy FROM conversion_monitoring) t GROUP BY 1", "not additive"),
    ("SELECT utm_source, accuracy FROM (SELECT utm_source, model_version, accuracy FROM conversion_monitoring) t GROUP BY 1", "SUM"),
    ("SELECT SUM(lead_count) FROM (SELECT utm_source, lead_count FROM conversion_monitoring HAVING lead_count > 5) t", "HAVING"),
    ("SELECT SUM(lead_count) FROM (SELECT utm_source, lead_count FROM conversion_monitoring LIMIT 3) t", "LIMIT"),
    ("SELECT utm_source, SUM(lead_count) FROM (SELECT utm_source, model_version, lead_count FROM conversion_monitoring) t "
     "WHERE lead_count > 10 GROUP BY 1", "WHERE on its metric"),
    ("SELECT x FROM (SELECT utm_source FROM conversion_monitoring) t", "does not exist"),
    ("WITH a AS (SELECT utm_source FROM conversion_monitoring), b AS (SELECT 2) SELECT * FROM a", "one common table"),
    ("SELECT utm_source FROM (SELECT utm_source FROM conversion_monitoring) t JOIN conversion_monitoring c ON true", "JOIN"),
])
def test_subqueries_refused(model, sql, words):
    with pytest.raises(QueryError) as info:
        template_for(sql, model, public_views(model)).bind([])
    assert words in info.value.message, info.value.message


def test_unknown_names(model):
    message = refused(model, "SELECT acuracy FROM conversion_monitoring", "42703")
    assert "did you mean 'accuracy'" in message
    message = refused(model, "SELECT accuracy FROM conversion_monitorin", "42P01")
    assert "did you mean 'conversion_monitoring'" in message
    message = refused(model, "SELECT id FROM leads", "42P01")
    assert "not a view" in message and "conversion_monitoring" in message
    refused(model, "SELECT accuracy FROM other_schema.conversion_monitoring", "42P01")


def test_shapes_that_cannot_be_mapped(model):
    refused(model, "SELECT a.utm_source FROM conversion_monitoring a JOIN fraud_monitoring b ON true")
    refused(model, "SELECT utm_source FROM conversion_monitoring UNION SELECT merchant_category FROM fraud_monitoring")
    refused(model, "WITH x AS (SELECT 1) SELECT utm_source FROM conversion_monitoring")
    refused(model, "SELECT DISTINCT ON (utm_source) utm_source FROM conversion_monitoring")
    refused(model, "SELECT date_trunc('day', created_at), date_trunc('hour', created_at), lead_count FROM conversion_monitoring")


def test_classification():
    assert classify("SELECT * FROM pg_catalog.pg_class").kind == "catalog"
    assert classify("select version()").kind == "catalog"
    assert classify("SELECT accuracy FROM conversion_monitoring").kind == "semantic"
    assert classify("set application_name = 'x'").kind == "set"
    assert classify("SHOW TimeZone").kind == "show"
    assert classify("EXPLAIN SELECT accuracy FROM conversion_monitoring").kind == "explain"
    for sql, code in [
        ("INSERT INTO conversion_monitoring VALUES (1)", "25006"), ("CREATE LOCAL TEMPORARY TABLE t (a int)", "25006"),
        ("DROP TABLE conversion_monitoring", "25006"), ("UPDATE x SET a = 1", "25006"), ("DELETE FROM x", "25006"),
        ("COPY x TO STDOUT", "0A000"), ("LISTEN x", "0A000"),
        ("SELECT c.relname, v.accuracy FROM pg_class c, conversion_monitoring v", "0A000"),
        ("WITH d AS (DELETE FROM x RETURNING *) SELECT * FROM d", "25006"),
    ]:
        with pytest.raises(QueryError) as info:
            classify(sql)
        assert info.value.code == code, sql


def test_aggregates_of_dimensions_and_count_star(model):
    t, q = mapped(model, "SELECT MIN(created_at), MAX(created_at), COUNT(DISTINCT utm_source), COUNT(*) FROM conversion_monitoring")
    assert q.metrics == ("leads.min(created_at)", "leads.max(created_at)", "leads.count_distinct(utm_source)", "leads.lead_count")
    assert [c.name for c in t.columns] == ["min", "max", "count", "count"]
    assert "COUNT(DISTINCT utm_source)" in refused(model, "SELECT AVG(utm_source) FROM conversion_monitoring")


def test_count_star_needs_the_view_count(tmp_path):
    import shutil

    shutil.copytree(REPO / "metrics", tmp_path / "metrics")
    path = tmp_path / "metrics" / "conversion.yml"
    import re

    path.write_text(re.sub(r"    count: leads.lead_count.*\n", "#\n", path.read_text()))
    bare = load_model(tmp_path / "metrics")
    with pytest.raises(QueryError) as info:
        template_for("SELECT COUNT(*) FROM conversion_monitoring", bare, public_views(bare))
    assert "count: <model>.<count measure>" in info.value.message and "lead_count" in info.value.message
    path.write_text(path.read_text().replace("#\n", "    count: leads.avg_score\n", 1))
    with pytest.raises(Exception) as info:
        load_model(tmp_path / "metrics")
    assert "conversion.yml" in str(info.value) and "not a count measure" in str(info.value)


# ---- a property: the mapped series limit equals a plain Python reference ----------------------

SOURCES = (None, "a", "b", "c", "d")


def python_series_limit(rows, limit, desc, inner_from, outer_from):
    """Per (day, source) lead counts since `outer_from`, for the sources among the top `limit`
    by count since `inner_from` (ties by name, NULL last; the NULL source ranks but is not kept)."""
    ranked: dict = {}
    for day, source in rows:
        if day >= inner_from:
            ranked[source] = ranked.get(source, 0) + 1
    order = sorted(ranked, key=lambda s: (-ranked[s] if desc else ranked[s], s is None, s or ""))
    kept = {s for s in order[:limit] if s is not None}
    counts: dict = {}
    for day, source in rows:
        if day >= outer_from and source in kept:
            counts[(day, source)] = counts.get((day, source), 0) + 1
    return counts


def test_series_limit_property_against_python(model):
    import duckdb
    from hypothesis import given, settings, strategies as st

    con = duckdb.connect()
    base = dt.datetime(2030, 1, 1)

    @settings(max_examples=80, deadline=None)
    @given(rows=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(SOURCES)), max_size=40),
           limit=st.integers(0, 6), desc=st.booleans(), inner_from=st.integers(0, 3), outer_from=st.integers(0, 3))
    def check(rows, limit, desc, inner_from, outer_from):
        con.execute("CREATE OR REPLACE TABLE leads (id INTEGER, created_at TIMESTAMP, utm_source VARCHAR)")
        if rows:
            con.executemany("INSERT INTO leads VALUES (?, ?, ?)",
                            [(i, base + dt.timedelta(days=day, hours=i % 24), source) for i, (day, source) in enumerate(rows)])
        day = lambda d: (base + dt.timedelta(days=d)).date().isoformat()
        sql = series_limit_sql("utm_source", limit, "SUM(lead_count) DESC" if desc else "SUM(lead_count) ASC",
                               inner_since=day(inner_from), outer_since=day(outer_from))
        query = template_for(sql, model, public_views(model)).bind([])
        got = {((t - base).days, s): n for t, s, n in con.execute(compile_query(model, query)).fetchall()}
        assert got == python_series_limit(rows, limit, desc, inner_from, outer_from)

    check()
