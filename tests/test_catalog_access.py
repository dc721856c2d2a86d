"""A user restricted to some views sees only those through every path of the SQL endpoint's
shadow catalog: OID casts, regclass, pg_description, obj_description/col_description,
format_type, pg_get_viewdef, pg_attribute, pg_class by OID, to_regclass, and schema-qualified
calls into the catalog of other users (`c1.regclass_out(16384)`, issue 13 item 6).

Real server process, real psycopg. The hidden names and descriptions are read first as a user
who sees everything; then every OID from 1 to the largest one + 100 goes through each path as
the restricted user, and none of that text may come back."""

from __future__ import annotations

import os

import psycopg
import pytest

from conftest import make_project
from test_sql_endpoint import USERS_YAML, Endpoint

HIDDEN_VIEW = "conversion_monitoring"
VISIBLE_VIEW = "fraud_monitoring"


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_duckdb_path):
    os.environ["ML_TEST_FRAUD_PW"] = "fraud-pw"
    folder = make_project(tmp_path_factory.mktemp("catalog_access"), f"duckdb:///{demo_duckdb_path}", USERS_YAML)
    ep = Endpoint(folder).start()
    yield ep
    ep.stop()


@pytest.fixture(scope="module")
def secrets(server):
    """What the restricted user must never read: the hidden view's name, its description, the
    names and descriptions of the columns only it has; and the largest OID of the full catalog."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        oid = conn.execute("SELECT oid FROM pg_class WHERE relname = %s", [HIDDEN_VIEW]).fetchone()[0]
        texts = {HIDDEN_VIEW}
        texts |= {r[0] for r in conn.execute("SELECT description FROM pg_description WHERE objoid = %s", [oid])}
        hidden_cols = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", [HIDDEN_VIEW])}
        visible_cols = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", [VISIBLE_VIEW])}
        visible_texts = {r[0] for r in conn.execute(
            "SELECT d.description FROM pg_description d JOIN pg_class c ON c.oid = d.objoid WHERE c.relname = %s",
            [VISIBLE_VIEW])}
        texts |= hidden_cols - visible_cols
        texts -= visible_texts  # a column description shared by both views is not a secret
        max_oid = max(conn.execute("SELECT max(oid) FROM pg_class").fetchone()[0],
                      conn.execute("SELECT max(oid) FROM pg_type").fetchone()[0])
    texts = {t for t in texts if t and len(t) > 3}
    assert HIDDEN_VIEW in texts and len(texts) > 3, texts
    return texts, int(max_oid) + 100


def _restricted(server):
    return psycopg.connect(server.dsn("fraud_team", "fraud-pw"), autocommit=True)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _leaks(rows, texts) -> list[str]:
    """Secrets found: a value equal to a hidden name, or containing the hidden view's name or a
    hidden description (column names such as `precision` are also ordinary words: "double precision")."""
    values = set(_strings(list(rows)))
    long_texts = {t for t in texts if " " in t or t == HIDDEN_VIEW}
    return sorted({t for t in texts if t in values} | {t for t in long_texts for v in values if t in v})


PATHS = {
    "o::regclass::text": "SELECT o, o::regclass::text FROM generate_series(1, {n}) g(o)",
    "CAST(o AS regclass)": "SELECT o, CAST(o AS regclass) FROM generate_series(1, {n}) g(o)",
    "o::regtype::text": "SELECT o, o::regtype::text FROM generate_series(1, {n}) g(o)",
    "obj_description(o)": "SELECT o, obj_description(o) FROM generate_series(1, {n}) g(o)",
    "obj_description(o, 'pg_class')": "SELECT o, obj_description(o, 'pg_class') FROM generate_series(1, {n}) g(o)",
    "col_description(o, k)": ("SELECT o, k, col_description(o, k) FROM generate_series(1, {n}) g(o), "
                              "generate_series(0, 40) h(k) WHERE col_description(o, k) IS NOT NULL"),
    "format_type(o, NULL)": "SELECT o, format_type(o, NULL) FROM generate_series(1, {n}) g(o)",
    "pg_get_viewdef(o)": "SELECT o, pg_get_viewdef(o) FROM generate_series(1, {n}) g(o)",
    "pg_get_indexdef(o)": "SELECT o, pg_get_indexdef(o) FROM generate_series(1, {n}) g(o)",
    "pg_get_constraintdef(o)": "SELECT o, pg_get_constraintdef(o) FROM generate_series(1, {n}) g(o)",
    "pg_class by OID": "SELECT g.o, c.* FROM generate_series(1, {n}) g(o) JOIN pg_class c ON c.oid = g.o",
    "pg_type by OID": "SELECT g.o, t.* FROM generate_series(1, {n}) g(o) JOIN pg_type t ON t.oid = g.o",
    "pg_attribute": "SELECT * FROM pg_attribute",
    "pg_description": "SELECT * FROM pg_description",
    "pg_class": "SELECT * FROM pg_catalog.pg_class",
    "information_schema.columns": "SELECT * FROM information_schema.columns",
    "pg_tables": "SELECT * FROM pg_tables",
    "pg_views": "SELECT * FROM pg_views",
    "pg_constraint": "SELECT conname, conrelid::regclass::text FROM pg_constraint",
    "pg_indexes": "SELECT * FROM pg_indexes",
}


@pytest.mark.parametrize("path", list(PATHS))
def test_every_oid_through_each_catalog_path_hides_the_other_view(server, secrets, path):
    texts, n = secrets
    with _restricted(server) as conn:
        rows = conn.execute(PATHS[path].format(n=n)).fetchall()
        assert rows or path in ("col_description(o, k)", "pg_get_viewdef(o)"), path
        assert _leaks(rows, texts) == [], path
        # The user's own view is there (the path works, it is not simply empty).
        if path in ("o::regclass::text", "CAST(o AS regclass)", "pg_class", "pg_views", "pg_constraint", "pg_indexes"):
            assert VISIBLE_VIEW in repr(rows), path


def test_one_oid_at_a_time_as_clients_send_them(server, secrets):
    texts, n = secrets
    with _restricted(server) as conn:
        for oid in range(16384 - 10, n):
            for sql in ("SELECT %s::regclass::text", "SELECT CAST(%s::oid AS regclass)::text",
                        "SELECT obj_description(%s::oid, 'pg_class')", "SELECT format_type(%s::oid, NULL)",
                        "SELECT '{oid}'::regclass::text"):
                row = conn.execute(sql.replace("{oid}", str(oid)), [oid] if "%s" in sql else None).fetchone()
                assert _leaks([row], texts) == [], (sql, oid, row)


def test_names_of_the_hidden_view_resolve_to_nothing(server, secrets):
    texts, _ = secrets
    with _restricted(server) as conn:
        assert conn.execute(f"SELECT to_regclass('{HIDDEN_VIEW}')").fetchone() == (None,)
        assert conn.execute(f"SELECT to_regclass('public.{HIDDEN_VIEW}')").fetchone() == (None,)
        assert conn.execute(f"SELECT to_regclass('{VISIBLE_VIEW}')").fetchone()[0] is not None
        for sql in (f"SELECT '{HIDDEN_VIEW}'::regclass", f"SELECT 'public.{HIDDEN_VIEW}'::regclass::oid",
                    f"SELECT CAST('{HIDDEN_VIEW}' AS regclass)"):
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute(sql)
            assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("sql", [
    "SELECT c1.regclass_out(16384)",
    "SELECT c1.obj_description__1(16384)",
    "SELECT * FROM c1.pg_description",
    "SELECT * FROM c1.pg_class",
    "SELECT * FROM c1.regclass_out(16384)",
    "SELECT c1.pg_class.relname FROM pg_class",
    'SELECT "c1".regclass_out(16384)',
    "SELECT main.regclass_out(16384)",
    "SELECT memory.c1.regclass_out(16384)",
])
def test_other_catalog_schemas_cannot_be_named(server, secrets, sql):
    texts, _ = secrets
    with _restricted(server) as conn:
        with pytest.raises(psycopg.Error) as info:
            conn.execute(sql)
        assert info.value.sqlstate in ("3F000", "42P01", "42883", "42601"), (sql, info.value.sqlstate, str(info.value))
        assert _leaks([str(info.value)], texts) == []
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection stays usable
