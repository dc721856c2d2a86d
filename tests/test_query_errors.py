"""Bad queries against the demo model: a QueryError that says what is wrong and what is valid,
with a PostgreSQL SQLSTATE, and user values that never become SQL text."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from metrics_layer.compile import compile_query
from metrics_layer.model import load_model
from metrics_layer.query import DimensionRef, Filter, OrderBy, QueryError, SemanticQuery

REPO = Path(__file__).resolve().parent.parent
DIALECTS = ("duckdb", "postgres")


@pytest.fixture(scope="module")
def model():
    return load_model(REPO / "metrics")


def query_error(model, dialect: str = "duckdb", **query) -> QueryError:
    """The QueryError that building and compiling `query` raises (nothing else may escape)."""
    with pytest.raises(QueryError) as info:
        compile_query(model, SemanticQuery(**query), dialect)
    return info.value


def dim(name: str, grain: str | None = None) -> DimensionRef:
    return DimensionRef(name, grain)


# ---- names -------------------------------------------------------------------------------

def test_unknown_metric_suggests_the_closest(model):
    error = query_error(model, metrics=("accuracyy",))
    assert error.code == "42703"
    assert "unknown metric 'accuracyy'; did you mean 'accuracy'?" in error.message


def test_unknown_measure_suggests_the_closest(model):
    error = query_error(model, metrics=("leads.lead_cnt",))
    assert error.code == "42703"
    assert "did you mean 'leads.lead_count'?" in error.message


def test_unknown_dimension_suggests_the_closest(model):
    error = query_error(model, metrics=("accuracy",), dimensions=(dim("leads.utm_sourc"),))
    assert error.code == "42703"
    assert "unknown dimension 'leads.utm_sourc'; did you mean 'leads.utm_source'?" in error.message


def test_unknown_filter_field_is_an_unknown_dimension(model):
    error = query_error(model, metrics=("accuracy",), filters=(Filter("leads.utm_sorce", "=", "google"),))
    assert error.code == "42703"
    assert "did you mean 'leads.utm_source'?" in error.message


def test_ambiguous_bare_dimension_lists_the_qualified_names(model):
    error = query_error(model, metrics=("accuracy",), dimensions=(dim("created_at"),))
    assert error.code == "42702"
    assert "dimension 'created_at' is ambiguous" in error.message
    assert "leads.created_at" in error.message and "transactions.created_at" in error.message


def test_unique_bare_dimension_name_is_accepted(model):
    assert "utm_source" in compile_query(model, SemanticQuery(metrics=("accuracy",), dimensions=(dim("utm_source"),)))


def test_a_field_asked_for_twice(model):
    error = query_error(model, metrics=("accuracy",), dimensions=(dim("leads.utm_source"), dim("leads.utm_source")))
    assert "'leads.utm_source' is asked for twice" in error.message


# ---- grains ------------------------------------------------------------------------------

def test_bad_grain_suggests_the_closest(model):
    error = query_error(model, metrics=("accuracy",), dimensions=(dim("leads.created_at", "hourly"),))
    assert error.code == "22023"
    assert "unknown grain 'hourly' for 'leads.created_at'; did you mean 'hour'?" in error.message


def test_bad_grain_without_a_close_match_lists_the_grains(model):
    error = query_error(model, metrics=("accuracy",), dimensions=(dim("leads.created_at", "fortnight"),))
    assert "grains: day, hour, minute, month, quarter, week, year" in error.message


def test_grain_on_a_dimension_that_is_not_time(model):
    error = query_error(model, metrics=("accuracy",), dimensions=(dim("leads.utm_source", "day"),))
    assert error.code == "22023"
    assert "grain 'day' applies only to time dimensions; 'leads.utm_source' is categorical" in error.message


def test_grain_that_is_not_text():
    with pytest.raises(QueryError, match="grain"):
        DimensionRef("leads.created_at", 5)


# ---- filter values and operators -----------------------------------------------------------

@pytest.mark.parametrize("value", ["one", "1 OR 1=1", "nan", "infinity", float("nan"), float("inf")])
def test_number_dimension_needs_a_finite_number(model, value):
    error = query_error(model, metrics=("accuracy",), filters=(Filter("predictions.label", "=", value),))
    assert error.code == "22P02"
    assert f"filter on number dimension 'predictions.label' needs a number, got {value!r}" in error.message


def test_metric_filter_needs_a_number_and_says_metric(model):
    error = query_error(model, metrics=("accuracy",), filters=(Filter("accuracy", ">", "high"),))
    assert error.code == "22P02"
    assert "filter on metric 'accuracy' needs a number, got 'high'" in error.message


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "2026-01-01T00:00:00+99:00"])
def test_time_dimension_needs_a_timestamp(model, value):
    error = query_error(model, metrics=("accuracy",), filters=(Filter("leads.created_at", ">", value),))
    assert error.code == "22007"
    assert f"filter on 'leads.created_at': {value!r} is not a timestamp; write ISO 8601" in error.message


def test_time_dimension_rejects_a_number(model):
    error = query_error(model, metrics=("accuracy",), filters=(Filter("leads.created_at", ">", 5),))
    assert error.code == "22007"
    assert "needs a timestamp, got 5" in error.message


def test_between_on_time_checks_both_ends(model):
    error = query_error(model, metrics=("accuracy",), filters=(Filter("leads.created_at", "between", ("2026-01-01", "later")),))
    assert error.code == "22007" and "'later' is not a timestamp" in error.message


def test_contains_needs_text(model):
    error = query_error(model, metrics=("accuracy",), filters=(Filter("leads.utm_source", "contains", 5),))
    assert error.code == "22P02"


@pytest.mark.parametrize("op", ["==", "like", "<>", "", None])
def test_unknown_operator_lists_the_valid_ones(op):
    with pytest.raises(QueryError) as info:
        Filter("leads.utm_source", op, "google")
    assert info.value.code == "42883"
    assert f"unknown filter operator {op!r} on 'leads.utm_source'" in info.value.message
    assert "valid operators: =, !=, <, <=, >, >=, in, not in, between, is null, is not null, contains, starts with" in info.value.message


@pytest.mark.parametrize(
    "args, words",
    [
        (("leads.utm_source", "=", None), "needs a value"),
        (("leads.utm_source", "between", ("a",)), "between needs exactly two values"),
        (("leads.utm_source", "=", {"a": 1}), "a value must be a scalar or a list of scalars"),
        (("leads.utm_source", "in", [["a"], "b"]), "a value must be a scalar or a list of scalars"),
        ((5, "=", "a"), "field must be a dimension or metric name"),
    ],
)
def test_malformed_filters(args, words):
    with pytest.raises(QueryError, match=words):
        Filter(*args)


def test_empty_in_list_matches_nothing(model):
    for op, literal in (("in", exp.false()), ("not in", exp.true())):
        sql = compile_query(model, SemanticQuery(metrics=("accuracy",), filters=(Filter("leads.utm_source", op, []),)))
        assert sqlglot.parse_one(sql, read="duckdb").find(exp.In) is None
        assert "IN ()" not in sql


# ---- joins and windows ---------------------------------------------------------------------

def test_unreachable_dimension_names_the_models_and_the_field(model):
    error = query_error(model, metrics=("accuracy",), dimensions=(dim("transactions.merchant_category"),))
    assert error.code == "0A000"
    assert "measures of 'leads' (leads.lead_count) cannot be sliced or filtered by transactions.merchant_category" in error.message
    assert "model 'transactions' cannot be reached from 'leads': they share no entity path" in error.message


def test_unreachable_filter_names_the_field(model):
    error = query_error(model, metrics=("fraud_loss",), filters=(Filter("leads.utm_source", "=", "google"),))
    assert error.code == "0A000"
    assert "cannot be sliced or filtered by leads.utm_source" in error.message


@pytest.fixture(scope="module")
def project_with_page_views(tmp_path_factory):
    """The demo YAML plus page_views: many rows per lead, no dedupe, no time."""
    folder = tmp_path_factory.mktemp("page_views")
    shutil.copytree(REPO / "metrics", folder, dirs_exist_ok=True)
    (folder / "page_views.yml").write_text(
        "models:\n"
        "  - name: page_views\n"
        "    table: page_views\n"
        "    entities: [{name: lead, type: foreign, expr: lead_id}]\n"
        "    dimensions: [{name: url}]\n"
        "    measures: [{name: view_count, agg: count}]\n"
    )
    return load_model(folder)


def test_fan_out_join_names_the_path(project_with_page_views):
    error = query_error(project_with_page_views, metrics=("leads.lead_count",), dimensions=(dim("page_views.url"),))
    assert error.code == "0A000"
    assert "cannot be sliced or filtered by page_views.url" in error.message
    assert "joining leads -> page_views through entity 'lead' would fan out" in error.message
    # The other direction is safe: many page views per lead, one lead per page view.
    compile_query(project_with_page_views, SemanticQuery(metrics=("page_views.view_count",), dimensions=(dim("leads.utm_source"),)))


def test_window_override_on_a_model_without_time(project_with_page_views):
    error = query_error(project_with_page_views, metrics=("page_views.view_count",), window="3 hours")
    assert error.code == "0A000"
    assert "needs the time of model 'page_views', which has none" in error.message


def test_windowed_metric_by_raw_time_needs_a_grain(model):
    error = query_error(model, metrics=("accuracy_3h",), dimensions=(dim("leads.created_at"),))
    assert "a trailing window sliced by 'leads.created_at' needs a grain (e.g. hour or day)" in error.message
    compile_query(model, SemanticQuery(metrics=("accuracy_3h",), dimensions=(dim("leads.created_at", "hour"),)))


@pytest.mark.parametrize("window", ["3 hourz", "0 hours", "-1 hour", "yesterday", "3"])
def test_bad_window_override(model, window):
    error = query_error(model, metrics=("accuracy",), window=window)
    assert error.code == "22023"
    assert f"window {window!r} is not a duration; write e.g. '3 hours'" in error.message


# ---- order, limit, shape ---------------------------------------------------------------------

def test_order_by_a_field_not_in_the_query(model):
    error = query_error(model, metrics=("accuracy",), dimensions=(dim("leads.utm_source"),), order_by=(OrderBy("precision"),))
    assert error.code == "42703"
    assert "cannot order by 'precision': it is not in the query; order by one of: leads.utm_source, accuracy" in error.message


@pytest.mark.parametrize("bound, value", [("limit", -1), ("offset", -5), ("limit", "10"), ("limit", True), ("limit", 1.5)])
def test_limit_and_offset_must_be_non_negative_integers(bound, value):
    with pytest.raises(QueryError, match=f"{bound} must be a non-negative integer, got {value!r}") as info:
        SemanticQuery(metrics=("accuracy",), **{bound: value})
    assert info.value.code == "22023"


@pytest.mark.parametrize(
    "query, words",
    [
        ({}, "a query needs at least one metric or dimension"),
        ({"metrics": "accuracy"}, "metrics must be a list"),
        ({"metrics": (5,)}, "a metric is named by text"),
        ({"metrics": ("accuracy",), "window": [3]}, "window must be a duration"),
        ({"metrics": ("accuracy",), "as_of": "not a date"}, "as_of: 'not a date' is not a timestamp"),
        ({"metrics": ("accuracy",), "as_of": 5}, "as_of must be a timestamp"),
    ],
)
def test_malformed_queries(query, words):
    with pytest.raises(QueryError, match=words):
        SemanticQuery(**query)


def test_unknown_dialect(model):
    with pytest.raises(QueryError, match="unknown dialect 'mysql'; valid dialects: duckdb, postgres"):
        compile_query(model, SemanticQuery(metrics=("accuracy",)), "mysql")


# ---- user values never become SQL text ------------------------------------------------------

def _string_literals(sql: str, dialect: str) -> list[str]:
    return [lit.this for lit in sqlglot.parse_one(sql, read=dialect).find_all(exp.Literal) if lit.is_string]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("value", ["x' OR 1=1 --", "a'); DROP TABLE leads; --", "back\\slash'", "two\nlines", "$$dollar$$"])
def test_filter_value_is_only_an_escaped_string_literal(model, dialect, value):
    def compiled(v):
        return compile_query(model, SemanticQuery(metrics=("accuracy",), filters=(Filter("leads.utm_source", "=", v),)), dialect)

    evil = sqlglot.parse_one(compiled(value), read=dialect)
    [condition] = [eq for eq in evil.find_all(exp.EQ) if isinstance(eq.this, exp.Column) and eq.this.name == "utm_source"]
    assert isinstance(condition.expression, exp.Literal) and condition.expression.is_string
    assert condition.expression.this == value
    # Apart from that one literal, the query is exactly the query for a harmless value.
    for literal in evil.find_all(exp.Literal):
        if literal.is_string and literal.this == value:
            literal.replace(exp.Literal.string("harmless"))
    assert evil.sql(dialect) == sqlglot.parse_one(compiled("harmless"), read=dialect).sql(dialect)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_in_list_values_are_escaped_literals(model, dialect):
    values = ("google", "x' OR '1'='1")
    sql = compile_query(model, SemanticQuery(metrics=("accuracy",), filters=(Filter("leads.utm_source", "in", values),)), dialect)
    [in_list] = list(sqlglot.parse_one(sql, read=dialect).find_all(exp.In))
    assert [e.this for e in in_list.expressions] == list(values)
    assert all(isinstance(e, exp.Literal) and e.is_string for e in in_list.expressions)


@pytest.mark.parametrize("value, number", [("1_000", "1000"), (" 7 ", "7"), ("1e3", "1E+3"), (0.25, "0.25"), (10**20, str(10**20))])
def test_numbers_are_written_from_the_parsed_value(model, value, number):
    sql = compile_query(model, SemanticQuery(metrics=("leads.lead_count",), filters=(Filter("predictions.label", "=", value),)))
    [condition] = [eq for eq in sqlglot.parse_one(sql).find_all(exp.EQ) if isinstance(eq.this, exp.Column) and eq.this.name == "label"]
    assert isinstance(condition.expression, exp.Literal) and not condition.expression.is_string
    assert condition.expression.this == number


def test_numbers_for_a_categorical_dimension_are_text_literals(model):
    sql = compile_query(model, SemanticQuery(metrics=("accuracy",), filters=(Filter("predictions.model_version", "in", (3, "v2")),)))
    [in_list] = list(sqlglot.parse_one(sql).find_all(exp.In))
    assert [(e.this, e.is_string) for e in in_list.expressions] == [("3", True), ("v2", True)]


@pytest.mark.parametrize(
    "query",
    [
        {"metrics": ("accuracy",), "dimensions": (dim("leads.utm_source; DROP TABLE leads --"),)},
        {"metrics": ("accuracy",), "dimensions": (dim('leads.utm_source" FROM leads --'),)},
        {"metrics": ("accuracy",), "filters": (Filter("leads.utm_source) OR (1=1", "=", "x"),)},
        {"metrics": ("accuracy; DROP TABLE leads",)},
        {"metrics": ("accuracy",), "order_by": (OrderBy("1; DROP TABLE leads"),)},
    ],
)
def test_names_with_sql_in_them_are_unknown(model, query):
    error = query_error(model, **query)
    assert error.code == "42703"
    assert "unknown" in error.message or "not in the query" in error.message


# ---- the CLI: exit 1, "error:", no traceback ----------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("metrics-layer")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "metrics_layer.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_LAYER_")}
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


@pytest.mark.parametrize(
    "args, words",
    [
        (["-m", "accuracyy"], "unknown metric 'accuracyy'; did you mean 'accuracy'?"),
        (["-m", "accuracy", "-b", "leads.created_at", "--grain", "fortnight"], "unknown grain 'fortnight'"),
        (["-m", "accuracy", "-f", "predictions.label = abc"], "needs a number, got 'abc'"),
        (["-m", "accuracy", "-b", "transactions.merchant_category"], "cannot be sliced or filtered by transactions.merchant_category"),
        (["-m", "accuracy", "--limit", "-1"], "limit must be a non-negative integer"),
        (["-m", "accuracy", "--window", "3 hourz"], "window '3 hourz' is not a duration"),
    ],
)
def test_cli_compile_errors_exit_1_without_traceback(args, words):
    result = _cli("compile", "--project", str(REPO), "--dialect", "duckdb", *args)
    assert result.returncode == 1, result
    assert result.stderr.startswith("error: "), result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_query_error_exits_1_before_touching_the_engine():
    result = _cli("query", "--project", str(REPO), "-m", "accuracy", "-b", "leads.utm_sorce")
    assert result.returncode == 1, result
    assert "error: unknown dimension 'leads.utm_sorce'; did you mean 'leads.utm_source'?" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_text_that_looks_like_a_special_number_stays_text():
    result = _cli("compile", "--project", str(REPO), "--dialect", "duckdb", "-m", "accuracy", "-f", "leads.utm_source = nan")
    assert result.returncode == 0, result.stderr
    [condition] = [eq for eq in sqlglot.parse_one(result.stdout).find_all(exp.EQ) if getattr(eq.this, "name", "") == "utm_source"]
    assert condition.expression.is_string and condition.expression.this == "nan"
