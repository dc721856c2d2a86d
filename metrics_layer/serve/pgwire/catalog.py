"""Answers the metadata queries clients send (pg_catalog, information_schema, version()...).

A shadow catalog lives in a private in-memory DuckDB, separate from the data engine: tables named
like PostgreSQL 15's system catalogs (`catalog_tables.py`), filled from the public views of the
current model (one DuckDB schema per model and set of visible views, so that a user restricted
to some views sees only those). A client's statement is parsed with sqlglot (PostgreSQL syntax)
and rewritten before it runs there:

* `pg_catalog.pg_class`, `pg_class`, `information_schema.columns`... -> the shadow tables (the
  per-session ones, pg_database, pg_roles, pg_settings, information_schema.*, become table
  macros or inline VALUES with the session's database, user and settings);
* session functions (`version()`, `current_user`, `current_setting('x')`, `set_config`...) ->
  literals; PostgreSQL-only functions (`format_type`, `col_description`, `pg_get_expr`,
  privilege checks, `pg_get_keywords()`...) -> macros of the shadow schema;
* `::regclass` / `::regtype` / `::regnamespace` casts -> OID lookups or name lookups;
  `OPERATOR(pg_catalog.~)` -> regular expressions; COLLATE clauses are dropped;
* regproc columns (typreceive, aggfnoid...) hold function names, and `'array_in'::regproc` is
  the name; compared with an OID (`proc.oid = typ.typreceive`, Npgsql's type loading) the column
  goes through regproc_oid(), a constant map onto the shadow pg_proc (the functions pg_type
  names and a few aggregates);
* a scalar function in FROM (`FROM string_to_array(x, ',') s`) is a one-row subquery;
  integer / integer is integer division; has_*_privilege() is false for write privileges
  (INSERT, UPDATE, DELETE, CREATE, TEMP...): the endpoint is read-only.

The shadow DuckDB has external access disabled and locked, and the rewrite refuses DuckDB
file/table functions, so a catalog query can read nothing but the shadow catalog.

Views are views (relkind 'v': psql's \\dv, SQLAlchemy's get_view_names, pg_views, VIEW in
information_schema.tables and pgjdbc's getTables), or tables (relkind 'r', BASE TABLE) for a session
whose metrics.views_as is 'table' (tools that list only tables: \\dt, get_table_names). A view
with dimensions has a unique index and constraint on them (its rows are one per group; a keyed
view's entity is its primary key): pg_index, pg_constraint, pg_indexes, information_schema.
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import re
import secrets
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import duckdb
from sqlglot import exp

from ...query import QueryError
from ...views import PublicView
from .protocol import clip_name
from .values import array_text
from .catalog_tables import (
    AGGREGATES, ARRAY_TYPES, BASE_TYPES, INFORMATION_SCHEMA, NAMESPACES, PG_CATALOG, PG_VIEWS, REGPROC_COLUMNS,
    SYSTEM_RELATIONS,
)

OWNER_OID = 10
FIRST_VIEW_OID = 16384
FIRST_PROC_OID = 9000  # the shadow pg_proc's functions (below 10000, as PostgreSQL's built-in ones)
PUBLIC_NAMESPACE = 2200
_STARTED = dt.datetime.now(dt.timezone.utc)

# DuckDB result type -> PostgreSQL type OID.
_DUCK_OIDS = {
    "BOOLEAN": 16, "TINYINT": 21, "SMALLINT": 21, "INTEGER": 23, "BIGINT": 20, "UTINYINT": 21,
    "USMALLINT": 23, "UINTEGER": 26, "UBIGINT": 1700, "HUGEINT": 1700, "FLOAT": 700, "DOUBLE": 701,
    "VARCHAR": 25, "DATE": 1082, "TIME": 1083, "TIMESTAMP": 1114, "TIMESTAMP WITH TIME ZONE": 1184,
    "INTERVAL": 1186, "UUID": 2950, "JSON": 114, "BLOB": 17, "NULL": 25, '"NULL"': 25,
}

# DuckDB list element type -> PostgreSQL array type OID (values.ARRAY_ELEMENTS encodes them).
_ARRAY_OIDS = {"VARCHAR": 1009, "UINTEGER": 1028, "BOOLEAN": 1000, "SMALLINT": 1005, "INTEGER": 1007, "BIGINT": 1016}
# Catalog columns of type int2vector / oidvector (PostgreSQL prints them space-separated).
_VECTOR_COLUMNS = {"indkey", "indoption", "indcollation", "indclass", "proargtypes"}

# Table-valued objects resolved per session (database, user): created as DuckDB table macros.
_SESSION_TABLES = {"pg_database", "pg_roles", "pg_user", "pg_authid", "pg_tables", "pg_stat_activity"}

# DuckDB functions a client statement may not call (files, other databases, settings).
_DENIED_FUNCTION = re.compile(
    r"^(read_|scan_|parquet_|sniff_|glob$|query$|query_table$|duckdb_|pragma_|iceberg|delta_|"
    r"getenv$|which_secret|load_|install|sqlite_|postgres_|mysql_|json_execute|httpfs|s3_|"
    r"enable_|disable_|checkpoint|force_checkpoint|current_setting$|set_config$|export_|import_|"
    r"arrow_|to_arrow|from_arrow|ducklake|attach|detach|make_secret|create_secret|summary$|"
    r"test_|repeat_row$|range$|generate_series$|unnest$)"
)
_ALLOWED_TABLE_FUNCTIONS = {"generate_series", "unnest", "pg_get_keywords", "generate_subscripts", "range"}


@dataclass
class SessionInfo:
    """What the rewrite inlines for one session."""

    user: str
    database: str
    settings: Any  # semantic.Settings: get(name) / set(name, value) / rows()
    backend_pid: int


@dataclass
class CatalogResult:
    names: list[str]
    oids: list[int]
    rows: list[tuple]


@dataclass(frozen=True)
class FieldType:
    oid: int
    typmod: int = -1


class ShadowCatalog:
    """The private DuckDB holding one shadow pg_catalog per (model, visible views)."""

    def __init__(self) -> None:
        self._db = duckdb.connect(":memory:", config={"enable_external_access": False, "threads": 1})
        self._lock = threading.Lock()
        self._local = threading.local()
        self._schemas: dict[tuple, tuple[weakref.ref, str, dict]] = {}
        self._counter = itertools.count(1)
        self._db.execute("SET lock_configuration = true")

    def _cursor(self):
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._db.cursor()
        return cursor

    # ---- building ---------------------------------------------------------------------

    def schema_for(self, model: Any, views: dict[str, PublicView], types: Callable[[PublicView], list[FieldType]],
                   views_as: str = "view") -> tuple[str, dict]:
        """The shadow schema for `views` of `model` (built on first use) and its name index;
        `views_as` ("view" or "table", the session's metrics.views_as) is their relkind."""
        key = (id(model), tuple(sorted(views)), views_as)
        with self._lock:
            entry = self._schemas.get(key)
            if entry is not None and entry[0]() is model:
                return entry[1], entry[2]
            # Drop schemas of models that are gone (hot reload replaced them).
            for old_key, (ref, name, _) in list(self._schemas.items()):
                if ref() is None or (old_key[0] == id(model) and ref() is not model):
                    self._db.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
                    del self._schemas[old_key]
            # Unguessable as well as refused by the rewrite: one session cannot name another's schema.
            name = f"c{next(self._counter)}_{secrets.token_hex(6)}"
            try:
                index = self._build(name, views, types, VIEWS_AS[views_as])
            except BaseException:
                self._db.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
                raise
            self._schemas[key] = (weakref.ref(model), name, index)
            return name, index

    def _build(self, s: str, views: dict[str, PublicView], types: Callable[[PublicView], list[FieldType]], relkind: str) -> dict:
        db = self._db
        db.execute(f"CREATE SCHEMA {s}")
        for table, columns in PG_CATALOG.items():
            db.execute(f"CREATE TABLE {s}.{table} ({columns})")
        db.execute(f"CREATE TABLE {s}.ml_types (oid UINTEGER, typname VARCHAR, sqlname VARCHAR)")
        db.execute(f"CREATE TABLE {s}.ml_type_alias (alias VARCHAR, oid UINTEGER)")
        db.execute(f"CREATE TABLE {s}.ml_defs (oid UINTEGER, col INTEGER, definition VARCHAR)")
        db.execute(f"CREATE TABLE {s}.ml_key_columns (conoid UINTEGER, relid UINTEGER, attname VARCHAR, position INTEGER)")

        def insert(table: str, rows: list[tuple]) -> None:
            if rows:
                marks = ", ".join("?" * len(rows[0]))
                db.executemany(f"INSERT INTO {s}.{table} VALUES ({marks})", rows)

        def insert_named(table: str, rows: list[dict]) -> None:
            for row in rows:
                cols = ", ".join(row)
                db.execute(f"INSERT INTO {s}.{table} ({cols}) VALUES ({', '.join('?' * len(row))})", list(row.values()))

        insert("pg_namespace", [(oid, name, OWNER_OID, None) for oid, name in NAMESPACES])
        insert("ml_types", [(t[0], t[1], t[2]) for t in BASE_TYPES] + [(a[0], a[1], next(b[2] for b in BASE_TYPES if b[0] == a[2]) + "[]") for a in ARRAY_TYPES])
        aliases = {"int": 23, "integer": 23, "int4": 23, "smallint": 21, "bigint": 20, "float": 701, "real": 700,
                   "double precision": 701, "float8": 701, "float4": 700, "decimal": 1700, "numeric": 1700,
                   "varchar": 1043, "character varying": 1043, "char": 1042, "character": 1042, "bool": 16,
                   "boolean": 16, "timestamp": 1114, "timestamp without time zone": 1114, "timestamptz": 1184,
                   "timestamp with time zone": 1184, "time": 1083, "date": 1082, "text": 25, "name": 19,
                   "oid": 26, "regclass": 2205, "regtype": 2206, "json": 114, "jsonb": 3802, "uuid": 2950,
                   "interval": 1186, "bytea": 17, '"char"': 18}
        insert("ml_type_alias", list(aliases.items()))

        type_rows = []
        for oid, name, sqlname, length, category, elem, array, coll in BASE_TYPES:
            type_rows.append(dict(
                oid=oid, typname=name, typnamespace=11, typowner=OWNER_OID, typlen=length,
                typbyval=length in (1, 2, 4, 8), typtype="p" if category in ("P", "X") else "b", typcategory=category,
                typispreferred=name in ("text", "float8", "bool", "oid", "timestamptz", "interval"),
                typisdefined=True, typdelim=",", typrelid=0, typsubscript="-", typelem=elem, typarray=array,
                typinput=f"{name}in", typoutput=f"{name}out", typreceive=f"{name}recv", typsend=f"{name}send",
                typmodin="-", typmodout="-", typanalyze="-", typalign="d" if length == 8 else "i",
                typstorage="p" if length > 0 else "x", typnotnull=False, typbasetype=0, typtypmod=-1,
                typndims=0, typcollation=coll,
            ))
        for oid, name, elem in ARRAY_TYPES:
            type_rows.append(dict(
                oid=oid, typname=name, typnamespace=11, typowner=OWNER_OID, typlen=-1, typbyval=False,
                typtype="b", typcategory="A", typispreferred=False, typisdefined=True, typdelim=",", typrelid=0,
                typsubscript="array_subscript_handler", typelem=elem, typarray=0, typinput="array_in",
                typoutput="array_out", typreceive="array_recv", typsend="array_send", typmodin="-",
                typmodout="-", typanalyze="array_typanalyze", typalign="i", typstorage="x", typnotnull=False,
                typbasetype=0, typtypmod=-1, typndims=0, typcollation=0,
            ))

        class_rows, attr_rows, desc_rows = [], [], []
        key_rows: dict[str, list] = {"pg_index": [], "pg_constraint": [], "pg_indexes": [], "ml_key_columns": []}
        definitions: list[tuple] = []  # (oid, column, text): pg_get_viewdef / pg_get_indexdef / pg_get_constraintdef
        for rel, oid in SYSTEM_RELATIONS.items():
            class_rows.append(_class_row(oid, rel, 11, 0, "v" if oid >= 12000 else "r", 0))
        names: dict[str, int] = {rel: oid for rel, oid in SYSTEM_RELATIONS.items()}
        type_lengths = {t[0]: t[3] for t in BASE_TYPES}
        next_oid = FIRST_VIEW_OID
        for view_name in sorted(views):
            view = views[view_name]
            rel_oid, row_type = next_oid, next_oid + 1
            next_oid += 2
            names[view_name] = rel_oid
            fields = view.dimensions + view.metrics
            class_rows.append(_class_row(rel_oid, view_name, PUBLIC_NAMESPACE, row_type, relkind, len(fields), bool(view.key)))
            definitions.append((rel_oid, 0, _view_definition(view)))
            type_rows.append(dict(
                oid=row_type, typname=view_name, typnamespace=PUBLIC_NAMESPACE, typowner=OWNER_OID, typlen=-1,
                typbyval=False, typtype="c", typcategory="C", typispreferred=False, typisdefined=True,
                typdelim=",", typrelid=rel_oid, typsubscript="-", typelem=0, typarray=0, typinput="record_in",
                typoutput="record_out", typreceive="record_recv", typsend="record_send", typmodin="-",
                typmodout="-", typanalyze="-", typalign="d", typstorage="x", typnotnull=False, typbasetype=0,
                typtypmod=-1, typndims=0, typcollation=0,
            ))
            if view.description:
                desc_rows.append((rel_oid, 1259, 0, " ".join(view.description.split())))
            for attnum, (f, ftype) in enumerate(zip(fields, types(view)), start=1):
                length = type_lengths.get(ftype.oid, -1)
                attr_rows.append(dict(
                    attrelid=rel_oid, attname=f.name, atttypid=ftype.oid, attstattarget=-1, attlen=length,
                    attnum=attnum, attndims=0, attcacheoff=-1, atttypmod=ftype.typmod, attbyval=length in (1, 2, 4, 8),
                    attalign="d" if length == 8 else "i", attstorage="p" if length > 0 else "x", attcompression="",
                    attnotnull=False, atthasdef=False, atthasmissing=False, attidentity="", attgenerated="",
                    attisdropped=False, attislocal=True, attinhcount=0,
                    attcollation=100 if ftype.oid in (25, 1043, 1042) else 0,
                ))
                if f.description:
                    desc_rows.append((rel_oid, 1259, attnum, " ".join(f.description.split())))
            if view.key:
                next_oid = self._key(view, rel_oid, next_oid, fields, attr_rows, class_rows, key_rows, definitions)
        db.executemany(
            f"INSERT INTO {s}.pg_class (oid, relname, relnamespace, reltype, reloftype, relowner, relam, relfilenode, "
            "reltablespace, relpages, reltuples, relallvisible, reltoastrelid, relhasindex, relisshared, relpersistence, "
            "relkind, relnatts, relchecks, relhasrules, relhastriggers, relhassubclass, relrowsecurity, "
            "relforcerowsecurity, relispopulated, relreplident, relispartition, relrewrite, relfrozenxid, relminmxid, "
            f"relhasoids) VALUES ({', '.join('?' * 31)})",
            class_rows,
        )
        insert_named("pg_type", type_rows)
        insert_named("pg_attribute", attr_rows)
        for table, rows in key_rows.items():
            insert(table, rows)
        insert("ml_defs", definitions)
        proc_oids = self._procedures(type_rows, insert_named)
        insert("pg_description", desc_rows)
        insert("pg_am", [(2, "heap", "heap_tableam_handler", "t"), (403, "btree", "bthandler", "i"),
                         (405, "hash", "hashhandler", "i"), (783, "gist", "gisthandler", "i"),
                         (2742, "gin", "ginhandler", "i"), (3580, "brin", "brinhandler", "i")])
        insert("pg_collation", [(100, "default", 11, OWNER_OID, "d", True, -1, None, None, None, None),
                                (950, "C", 11, OWNER_OID, "c", True, -1, "C", "C", None, None),
                                (951, "POSIX", 11, OWNER_OID, "c", True, -1, "POSIX", "POSIX", None, None)])
        insert("pg_tablespace", [(1663, "pg_default", OWNER_OID, None, None), (1664, "pg_global", OWNER_OID, None, None)])
        insert("pg_language", [(12, "internal", OWNER_OID, False, False), (13, "c", OWNER_OID, False, False),
                               (14, "sql", OWNER_OID, False, True)])

        # Per-session tables as table macros of (database, user).
        db.execute(
            f"CREATE MACRO {s}.pg_database(db, usr) AS TABLE SELECT CAST(16383 AS UINTEGER) AS oid, db AS datname, "
            "CAST(10 AS UINTEGER) AS datdba, 6 AS encoding, 'c' AS datlocprovider, false AS datistemplate, "
            "true AS datallowconn, -1 AS datconnlimit, CAST(0 AS UINTEGER) AS datfrozenxid, CAST(1 AS UINTEGER) AS datminmxid, "
            "CAST(1663 AS UINTEGER) AS dattablespace, 'C.UTF-8' AS datcollate, 'C.UTF-8' AS datctype, "
            "CAST(NULL AS VARCHAR) AS daticulocale, CAST(NULL AS VARCHAR) AS datcollversion, CAST(NULL AS VARCHAR[]) AS datacl"
        )
        db.execute(
            f"CREATE MACRO {s}.pg_roles(db, usr) AS TABLE SELECT usr AS rolname, false AS rolsuper, true AS rolinherit, "
            "false AS rolcreaterole, false AS rolcreatedb, true AS rolcanlogin, false AS rolreplication, -1 AS rolconnlimit, "
            "'********' AS rolpassword, CAST(NULL AS TIMESTAMPTZ) AS rolvaliduntil, false AS rolbypassrls, "
            "CAST(NULL AS VARCHAR[]) AS rolconfig, CAST(10 AS UINTEGER) AS oid"
        )
        db.execute(
            f"CREATE MACRO {s}.pg_authid(db, usr) AS TABLE SELECT CAST(10 AS UINTEGER) AS oid, usr AS rolname, "
            "false AS rolsuper, true AS rolinherit, false AS rolcreaterole, false AS rolcreatedb, true AS rolcanlogin, "
            "false AS rolreplication, false AS rolbypassrls, -1 AS rolconnlimit, CAST(NULL AS VARCHAR) AS rolpassword, "
            "CAST(NULL AS TIMESTAMPTZ) AS rolvaliduntil"
        )
        db.execute(
            f"CREATE MACRO {s}.pg_user(db, usr) AS TABLE SELECT usr AS usename, CAST(10 AS UINTEGER) AS usesysid, "
            "false AS usecreatedb, false AS usesuper, false AS userepl, false AS usebypassrls, '********' AS passwd, "
            "CAST(NULL AS TIMESTAMPTZ) AS valuntil, CAST(NULL AS VARCHAR[]) AS useconfig"
        )
        # The session's own row (PostgreSQL shows other users' sessions without their query; we
        # show none of them): Superset cancels through pg_backend_pid() and this view.
        db.execute(
            f"CREATE MACRO {s}.pg_stat_activity(db, usr, pid, app) AS TABLE SELECT CAST(16383 AS UINTEGER) AS datid, "
            "db AS datname, CAST(pid AS INTEGER) AS pid, CAST(NULL AS INTEGER) AS leader_pid, CAST(10 AS UINTEGER) AS usesysid, "
            "usr AS usename, app AS application_name, CAST(NULL AS VARCHAR) AS client_addr, CAST(NULL AS VARCHAR) AS client_hostname, "
            "CAST(NULL AS INTEGER) AS client_port, CAST(NULL AS TIMESTAMPTZ) AS backend_start, CAST(NULL AS TIMESTAMPTZ) AS xact_start, "
            "CAST(NULL AS TIMESTAMPTZ) AS query_start, CAST(NULL AS TIMESTAMPTZ) AS state_change, CAST(NULL AS VARCHAR) AS wait_event_type, "
            "CAST(NULL AS VARCHAR) AS wait_event, 'active' AS state, CAST(NULL AS UINTEGER) AS backend_xid, "
            "CAST(NULL AS UINTEGER) AS backend_xmin, CAST(NULL AS BIGINT) AS query_id, '' AS query, 'client backend' AS backend_type"
        )
        for view, body in PG_VIEWS.items():
            sql = body.replace("'{owner}'", "usr").replace("'{db}'", "db").replace("{s}", s)
            db.execute(f"CREATE MACRO {s}.{view}(db, usr) AS TABLE {sql}")
        for view, body in INFORMATION_SCHEMA.items():
            sql = body.replace("'{owner}'", "usr").replace("'{db}'", "db").replace("{s}", s)
            db.execute(f"CREATE MACRO {s}.is_{view}(db, usr) AS TABLE {sql}")

        # Functions.
        macros = {
            "format_type(t, m)": (
                f"CASE WHEN t IS NULL THEN NULL WHEN t = 1700 AND m >= 4 THEN 'numeric(' || CAST(((m - 4) // 65536) AS VARCHAR) "
                f"|| ',' || CAST(((m - 4) % 65536) AS VARCHAR) || ')' WHEN t = 1043 AND m >= 4 THEN 'character varying(' "
                f"|| CAST(m - 4 AS VARCHAR) || ')' WHEN t = 1042 AND m >= 4 THEN 'character(' || CAST(m - 4 AS VARCHAR) || ')' "
                f"ELSE coalesce((SELECT x.sqlname FROM {s}.ml_types x WHERE x.oid = t), "
                f"(SELECT y.typname FROM {s}.pg_type y WHERE y.oid = t), '???') END"
            ),
            "obj_description__1(o)": f"(SELECT d.description FROM {s}.pg_description d WHERE d.objoid = o AND d.objsubid = 0 LIMIT 1)",
            "obj_description__2(o, c)": (
                f"(SELECT d.description FROM {s}.pg_description d WHERE d.objoid = o AND d.objsubid = 0 AND d.classoid = "
                f"(SELECT k.oid FROM {s}.pg_class k WHERE k.relname = c AND k.relnamespace = 11) LIMIT 1)"
            ),
            "col_description(o, n)": (
                f"(SELECT d.description FROM {s}.pg_description d WHERE d.objoid = o AND d.classoid = 1259 AND d.objsubid = n LIMIT 1)"
            ),
            "regclass_in(x)": (
                f"(SELECT k.oid FROM {s}.pg_class k WHERE k.relname = CASE WHEN contains(x, '\"') "
                "THEN replace(regexp_replace(x, '^\"?(public|pg_catalog|information_schema)\"?\\.', ''), '\"', '') "
                "ELSE lower(regexp_replace(x, '^(public|pg_catalog|information_schema)\\.', '')) END LIMIT 1)"
            ),
            # The definitions of the views and their keys (ml_defs; col 0 the whole, col n an index column).
            "pg_get_viewdef(v)": (
                f"(SELECT d.definition FROM {s}.ml_defs d WHERE d.col = 0 AND d.oid = "
                f"CASE WHEN TRY_CAST(v AS UINTEGER) IS NOT NULL THEN TRY_CAST(v AS UINTEGER) ELSE {s}.regclass_in(CAST(v AS VARCHAR)) END)"
            ),
            "pg_get_indexdef(o, c)": f"(SELECT d.definition FROM {s}.ml_defs d WHERE d.oid = o AND d.col = coalesce(c, 0))",
            "pg_get_constraintdef(o)": f"(SELECT d.definition FROM {s}.ml_defs d WHERE d.oid = o AND d.col = 0)",
            "regclass_out(o)": f"coalesce((SELECT k.relname FROM {s}.pg_class k WHERE k.oid = o), CAST(o AS VARCHAR))",
            "regtype_in(x)": (
                f"coalesce((SELECT a.oid FROM {s}.ml_type_alias a WHERE a.alias = lower(trim(regexp_replace(x, '^pg_catalog\\.', '')))), "
                f"(SELECT y.oid FROM {s}.pg_type y WHERE y.typname = lower(trim(regexp_replace(x, '^(pg_catalog|public)\\.', ''))) LIMIT 1))"
            ),
            "regtype_out(o)": (
                f"coalesce((SELECT x.sqlname FROM {s}.ml_types x WHERE x.oid = o), "
                f"(SELECT y.typname FROM {s}.pg_type y WHERE y.oid = o), CAST(o AS VARCHAR))"
            ),
            "regnamespace_in(x)": f"(SELECT n.oid FROM {s}.pg_namespace n WHERE n.nspname = x)",
            "regnamespace_out(o)": f"coalesce((SELECT n.nspname FROM {s}.pg_namespace n WHERE n.oid = o), CAST(o AS VARCHAR))",
            "quote_ident(x)": (
                "CASE WHEN regexp_full_match(CAST(x AS VARCHAR), '[a-z_][a-z0-9_$]*') THEN CAST(x AS VARCHAR) "
                "ELSE '\"' || replace(CAST(x AS VARCHAR), '\"', '\"\"') || '\"' END"
            ),
            "quote_literal(x)": "'''' || replace(CAST(x AS VARCHAR), '''', '''''') || ''''",
            "pg_size_pretty(n)": "CAST(n AS VARCHAR) || ' bytes'",
            "pg_encoding_to_char(n)": "CASE n WHEN 6 THEN 'UTF8' WHEN 0 THEN 'SQL_ASCII' ELSE '' END",
            "array_upper(a, d)": "CASE WHEN d = 1 AND len(a) > 0 THEN len(a) END",
            "parse_ident(x)": (
                "list_transform(string_split(x, '.'), lambda p: CASE WHEN trim(p) LIKE '\"%\"' "
                "THEN replace(trim(p)[2:-2], '\"\"', '\"') ELSE lower(trim(p)) END)"
            ),
            # information_schema._pg_expandarray(a): one row per element, (x, n)
            "_pg_expandarray(a)": "unnest(list_transform(generate_series(1, len(a)), lambda i: {'x': a[i], 'n': i}))",
            "array_lower(a, d)": "CASE WHEN d = 1 AND len(a) > 0 THEN 1 END",
        }
        # regproc columns hold function names: regproc_oid(name) is the function's pg_proc OID
        # (0 for '-' or an unknown name), a constant map so that joins on it stay plain joins.
        entries = ", ".join(f"'{name}': CAST({oid} AS UINTEGER)" for name, oid in sorted(proc_oids.items()))
        macros["regproc_oid(x)"] = (
            f"coalesce(MAP {{{entries}}}[regexp_replace(CAST(x AS VARCHAR), '^pg_catalog\\.', '')], CAST(0 AS UINTEGER))"
        )
        for signature, body in macros.items():
            db.execute(f"CREATE MACRO {s}.{signature} AS {body}")
        db.execute(
            f"CREATE MACRO {s}.pg_get_keywords() AS TABLE SELECT keyword_name AS word, "
            "CASE keyword_category WHEN 'reserved' THEN 'R' WHEN 'unreserved' THEN 'U' WHEN 'column_name' THEN 'C' ELSE 'T' END AS catcode, "
            "CASE keyword_category WHEN 'reserved' THEN 'reserved' WHEN 'unreserved' THEN 'unreserved' "
            "WHEN 'column_name' THEN 'unreserved (cannot be function or type name)' "
            "ELSE 'reserved (can be function or type name)' END AS catdesc, "
            "CASE keyword_category WHEN 'reserved' THEN 'reserved' WHEN 'unreserved' THEN 'unreserved' "
            "WHEN 'column_name' THEN 'unreserved (cannot be function or type name)' "
            "ELSE 'reserved (can be function or type name)' END AS barelabel FROM duckdb_keywords()"
        )
        return {"relations": names}

    @staticmethod
    def _key(view: PublicView, rel_oid: int, next_oid: int, fields, attr_rows, class_rows, key_rows, definitions) -> int:
        """The view's dimension key (PublicView.key) as PostgreSQL shows a table's: a unique index
        (NULLS NOT DISTINCT: a NULL dimension value is one group) and its constraint, a primary key
        for a keyed view (its entity). Returns the next free OID."""
        index_oid, constraint_oid = next_oid, next_oid + 1
        primary = view.entity is not None
        name = clip_name(f"{view.name}_pkey" if primary else f"{view.name}_dimensions_key")
        attnums = [fields.index(f) + 1 for f in view.key]
        class_rows.append(_class_row(index_oid, name, PUBLIC_NAMESPACE, 0, "i", len(attnums)))
        collations = []
        for position, (attnum, f) in enumerate(zip(attnums, view.key), start=1):
            column = next(a for a in attr_rows if a["attrelid"] == rel_oid and a["attnum"] == attnum)
            attr_rows.append({**column, "attrelid": index_oid, "attnum": position})
            collations.append(column["attcollation"])
            key_rows["ml_key_columns"].append((constraint_oid, rel_oid, f.name, position))
            definitions.append((index_oid, position, _ident(f.name)))
        columns = ", ".join(_ident(f.name) for f in view.key)
        nulls = "" if primary else " NULLS NOT DISTINCT"
        index_def = f"CREATE UNIQUE INDEX {_ident(name)} ON public.{_ident(view.name)} USING btree ({columns}){nulls}"
        definitions += [(index_oid, 0, index_def),
                        (constraint_oid, 0, f"PRIMARY KEY ({columns})" if primary else f"UNIQUE{nulls} ({columns})")]
        n = len(attnums)
        key_rows["pg_index"].append((
            index_oid, rel_oid, n, n, True, not primary, primary, False, True, False, True, False, True, True, False,
            attnums, collations, [0] * n, [0] * n, None, None,
        ))
        key_rows["pg_constraint"].append((
            constraint_oid, name, PUBLIC_NAMESPACE, "p" if primary else "u", False, False, True, rel_oid, 0, index_oid,
            0, 0, " ", " ", " ", True, 0, True, attnums, None, None, None, None, None, None, None,
        ))
        key_rows["pg_indexes"].append(("public", view.name, name, None, index_def))
        return next_oid + 2

    @staticmethod
    def _procedures(type_rows: list[dict], insert_named: Callable) -> dict[str, int]:
        """pg_proc rows for the functions pg_type names (typinput, typreceive...) and a few
        aggregates, and pg_aggregate; returns {function name: OID} (one function per name)."""
        oids: dict[str, int] = {}
        rows: list[dict] = []

        def add(name: str, rettype: int, argtypes: list[int], kind: str = "f") -> None:
            if name in oids or name == "-":
                return
            oids[name] = FIRST_PROC_OID + len(oids)
            rows.append(dict(
                oid=oids[name], proname=name, pronamespace=11, proowner=OWNER_OID, prolang=12, procost=1.0,
                prorows=0.0, provariadic=0, prosupport="-", prokind=kind, prosecdef=False, proleakproof=False,
                proisstrict=kind == "f", proretset=False, provolatile="i", proparallel="s",
                pronargs=len(argtypes), pronargdefaults=0, prorettype=rettype, proargtypes=argtypes,
                prosrc=name if kind == "f" else "aggregate_dummy",
            ))

        for t in type_rows:
            if t["typtype"] == "c":
                own = 2249  # record_in / record_recv... of the views' row types
            elif t["typcategory"] == "A":
                own = 2277  # array_in / array_recv... of every array type
            else:
                own = t["oid"]
            add(t["typinput"], own, [2275, 26, 23])
            add(t["typoutput"], 2275, [own])
            add(t["typreceive"], own, [2281, 26, 23])
            add(t["typsend"], 17, [own])
        for name, rettype, argtype in AGGREGATES:
            add(name, rettype, [argtype], kind="a")
        insert_named("pg_proc", rows)
        insert_named("pg_aggregate", [
            dict(aggfnoid=name, aggkind="n", aggnumdirectargs=0, aggtransfn="-", aggfinalfn="-", aggcombinefn="-",
                 aggtranstype=rettype) for name, rettype, _ in AGGREGATES
        ])
        return oids

    # ---- running ----------------------------------------------------------------------

    def run(self, tree: exp.Expression, schema: str, index: dict, session: SessionInfo, describe_only: bool = False,
            cancel: Any = None) -> CatalogResult:
        """Run a (parameter-free) catalog statement; raises QueryError. `cancel` (engines.Cancel)
        interrupts it: a CancelRequest or the statement time-out, as for semantic queries."""
        names = output_names(tree)
        rewritten = Rewriter(schema, index, session).rewrite(tree)
        sql = rewritten.sql(dialect="duckdb")
        if describe_only:
            sql = f"SELECT * FROM ({sql}) AS _q LIMIT 0"
        cursor = self._cursor()
        if cancel is not None:
            cancel.bind(cursor.interrupt)
        try:
            cursor.execute(sql)
            description = cursor.description or []
            rows = cursor.fetchall()
        except duckdb.Error as e:
            if cancel is not None and cancel.cancelled:
                raise QueryError(cancel.reason, "57014") from None
            raise _catalog_error(e) from None
        finally:
            if cancel is not None:
                cancel.bind(None)
        if names is None or len(names) != len(description):
            names = [d[0] for d in description]
        # int2vector / oidvector columns travel as PostgreSQL prints them (space-separated text),
        # lists of a type without an array codec (values.ARRAY_ELEMENTS) in array text form.
        oids = [25 if name in _VECTOR_COLUMNS else _duck_oid(d[1]) for name, d in zip(names, description)]
        texts = {i: _vector_text if names[i] in _VECTOR_COLUMNS else _array_text
                 for i, d in enumerate(description) if str(d[1]).endswith("[]") and oids[i] == 25}
        if texts and rows:
            rows = [tuple(texts[i](v) if i in texts else v for i, v in enumerate(row)) for row in rows]
        return CatalogResult(names, oids, rows)


VIEWS_AS = {"view": "v", "table": "r"}  # metrics.views_as -> the views' relkind


def _ident(name: str) -> str:
    return exp.to_identifier(name).sql(dialect="postgres")


def _view_definition(view: PublicView) -> str:
    """What pg_views.definition / pg_get_viewdef show: the view's fields, not engine SQL."""
    dims = ", ".join(f.name for f in view.dimensions) or "(none)"
    metrics = ", ".join(f.name for f in view.metrics) or "(none)"
    return f" -- metrics-layer view {view.name}: metrics {metrics}; by {dims}"


def _class_row(oid: int, name: str, namespace: int, row_type: int, kind: str, natts: int, has_index: bool = False) -> tuple:
    am = {"r": 2, "i": 403}.get(kind, 0)
    return (
        oid, name, namespace, row_type, 0, OWNER_OID, am, 0, 0, 0, -1.0, 0, 0, has_index,
        False, "p", kind, natts, 0, False, False, False, False, False, True, "d", False, 0, 0, 1, False,
    )


def _duck_oid(duck_type: Any) -> int:
    name = str(duck_type)
    if name.startswith("DECIMAL"):
        return 1700
    if name.endswith("[]"):
        return _ARRAY_OIDS.get(name[:-2], 25)
    if name.startswith("STRUCT") or name.startswith("MAP"):
        return 25
    return _DUCK_OIDS.get(name, 25)


def _array_text(value: Any) -> Any:
    return None if value is None else array_text(value)


def _vector_text(value: Any) -> Any:
    return None if value is None else " ".join(map(str, value))


def _catalog_error(e: Exception) -> QueryError:
    text = str(e).split("\n")[0]
    for prefix in ("Binder Error: ", "Catalog Error: ", "Parser Error: ", "Conversion Error: ", "Invalid Input Error: "):
        text = text.replace(prefix, "")
    if "does not exist" in text and ("Function" in text or "function" in text):
        name = re.search(r"name (\w+)", text)
        fn = name.group(1) if name else "?"
        return QueryError(f"function {fn} is not supported by the SQL endpoint's catalog ({text})", "42883")
    if "Table with name" in text or "does not exist" in text:
        return QueryError(f"catalog query refers to something the SQL endpoint does not emulate: {text}", "42P01")
    if "column" in text.lower() and ("not found" in text or "does not have a column" in text):
        return QueryError(f"catalog query refers to a column the SQL endpoint does not emulate: {text}", "42703")
    return QueryError(f"catalog query failed: {text}", "0A000")


# ---------------------------------------------------------------------------------------
# Output column names, as PostgreSQL names them


def output_names(tree: exp.Expression) -> list[str] | None:
    if not isinstance(tree, exp.Select):
        if isinstance(tree, (exp.Union, exp.Except, exp.Intersect)):
            return output_names(tree.left)
        if isinstance(tree, exp.Subquery):
            return output_names(tree.this)
        return None
    names = []
    for node in tree.expressions:
        if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star)):
            return None
        names.append(pg_column_name(node))
    return names


_FUNC_NAMES = {
    exp.CurrentUser: "current_user", exp.SessionUser: "session_user", exp.CurrentCatalog: "current_catalog",
    exp.CurrentDatabase: "current_database", exp.CurrentVersion: "version", exp.CurrentSchema: "current_schema",
    exp.CurrentTimestamp: "now", exp.CurrentDate: "current_date", exp.Count: "count",
}


def pg_column_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Alias):
        alias = node.args.get("alias")
        return alias.this if alias.quoted else alias.this.lower()
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
        node = node.expression
    if isinstance(node, exp.Column):
        ident = node.this
        if isinstance(ident, exp.Identifier):
            return ident.this if ident.quoted else ident.this.lower()
        return node.name.lower()
    if isinstance(node, exp.Cast):
        inner = node.this
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, (exp.Column, exp.Func, exp.Dot, exp.Cast)):
            return pg_column_name(inner)
        to = node.to
        kind = to.args.get("kind")
        if kind is not None:
            return kind.name.lower() if isinstance(kind, exp.Dot) else kind.name.lower()
        if isinstance(to, exp.ObjectIdentifier):
            return to.name.lower()
        return to.sql("postgres").lower().split("(")[0]
    for cls, name in _FUNC_NAMES.items():
        if type(node) is cls:
            return name
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.Case):
        return "case"
    if isinstance(node, exp.Exists):
        return "exists"
    if isinstance(node, exp.Array):
        return "array"
    if isinstance(node, exp.Func):
        try:
            return node.sql_name().lower()
        except Exception:
            return "?column?"
    return "?column?"


# ---------------------------------------------------------------------------------------
# The rewrite


_PG_SCHEMAS = {"pg_catalog", "information_schema"}
_TRUE_FUNCTIONS = {
    "pg_table_is_visible", "pg_type_is_visible", "pg_function_is_visible", "pg_collation_is_visible",
    "pg_opclass_is_visible", "pg_operator_is_visible", "pg_conversion_is_visible", "pg_ts_config_is_visible",
    "has_table_privilege", "has_schema_privilege", "has_database_privilege", "has_column_privilege",
    "has_any_column_privilege", "has_function_privilege", "has_sequence_privilege", "has_type_privilege",
    "has_tablespace_privilege", "has_language_privilege", "has_foreign_data_wrapper_privilege",
    "has_server_privilege", "pg_has_role",
}
_FALSE_FUNCTIONS = {"pg_is_in_recovery", "pg_relation_is_publishable", "pg_is_other_temp_schema"}
_NULL_FUNCTIONS = {
    "pg_get_expr", "pg_get_triggerdef",
    "pg_get_ruledef", "pg_get_functiondef", "pg_get_function_arguments", "pg_get_function_result",
    "pg_get_function_identity_arguments", "pg_get_partkeydef", "pg_get_statisticsobjdef_columns",
    "pg_get_serial_sequence", "pg_get_partition_constraintdef", "shobj_description", "pg_column_size",
    "to_regproc", "to_regprocedure", "to_regoper", "pg_get_statisticsobjdef", "pg_get_function_sqlbody",
    "inet_client_addr", "inet_server_addr",
}
_ZERO_FUNCTIONS = {
    "pg_table_size", "pg_relation_size", "pg_total_relation_size", "pg_indexes_size", "pg_database_size",
    "pg_stat_get_numscans", "pg_stat_get_live_tuples", "pg_stat_get_tuples_inserted",
}
_MACRO_FUNCTIONS = {
    "format_type", "col_description", "quote_ident", "quote_literal", "pg_size_pretty", "pg_encoding_to_char",
    "array_upper", "array_lower",
}
_SETTING_FUNCS = {"current_setting", "set_config"}


class Rewriter:
    def __init__(self, schema: str, index: dict, session: SessionInfo):
        self.s = schema
        self.relations: dict[str, int] = index["relations"]
        self.session = session
        self.ctes: set[str] = set()

    def rewrite(self, tree: exp.Expression) -> exp.Expression:
        _refuse_foreign_schemas(tree)
        tree = tree.copy()
        for cte in tree.find_all(exp.CTE):
            self.ctes.add(cte.alias_or_name.lower())
        # regclass / regtype values in the select list print as names: cast them to text.
        if isinstance(tree, exp.Select):
            for node in list(tree.expressions):
                target = node.this if isinstance(node, exp.Alias) else node
                if isinstance(target, exp.Cast) and _reg_kind(target.to) in _REG_KINDS:
                    name = pg_column_name(node)
                    node.replace(exp.alias_(exp.Cast(this=target.copy(), to=exp.DataType.build("text")), name, quoted=True))
        # x::regclass::text -> a name lookup (marked here, resolved bottom-up below).
        for cast in list(tree.find_all(exp.Cast)):
            inner = cast.this
            if _reg_kind(cast.to) in ("text", "varchar", "name") and isinstance(inner, exp.Cast) and _reg_kind(inner.to) in _REG_KINDS:
                cast.replace(exp.Anonymous(this=f"__reg_out_{_reg_kind(inner.to)}", expressions=[inner.this]))
        return self._walk(tree)

    def _walk(self, node: exp.Expression) -> exp.Expression:
        """Rewrite bottom-up: children first, then the node itself."""
        for key, value in list(node.args.items()):
            if isinstance(value, exp.Expression):
                new = self._walk(value)
                if new is not value:
                    node.set(key, new)
            elif isinstance(value, list):
                items = [self._walk(v) if isinstance(v, exp.Expression) else v for v in value]
                if any(a is not b for a, b in zip(items, value)):
                    node.set(key, items)
        return self._node(node)

    def _literal(self, value: Any) -> exp.Expression:
        if value is None:
            return exp.Null()
        if isinstance(value, bool):
            return exp.Boolean(this=value)
        if isinstance(value, (int, float, decimal.Decimal)):
            return exp.Literal.number(value)
        if isinstance(value, list):
            return exp.Array(expressions=[self._literal(v) for v in value])
        if isinstance(value, dt.datetime):
            return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), "timestamptz" if value.tzinfo else "timestamp")
        return exp.Literal.string(str(value))

    def _macro(self, name: str, args: list[exp.Expression]) -> exp.Expression:
        return exp.Dot(this=exp.to_identifier(self.s), expression=exp.Anonymous(this=name, expressions=args))

    def _node(self, node: exp.Expression) -> exp.Expression:
        # schema-qualified function calls: pg_catalog.version() -> version()
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) and node.this.name.lower() in _PG_SCHEMAS:
            return node.expression
        if isinstance(node, exp.Table):
            return self._table(node)
        if isinstance(node, exp.Column):
            return self._column(node)
        if isinstance(node, exp.Collate):
            return node.this
        if isinstance(node, exp.Operator):
            return self._operator(node)
        if isinstance(node, exp.Cast):
            return self._cast(node)
        if isinstance(node, (exp.EQ, exp.NEQ)):
            return self._regproc_comparison(node)
        if isinstance(node, exp.Div) and _is_integer(node.this) and _is_integer(node.expression):
            return exp.IntDiv(this=node.this, expression=node.expression)  # PostgreSQL's integer division
        if isinstance(node, (exp.CurrentUser, exp.SessionUser)):
            return self._literal(self.session.user)
        if isinstance(node, (exp.CurrentCatalog, exp.CurrentDatabase)):
            return self._literal(self.session.database)
        if isinstance(node, exp.CurrentVersion):
            return self._literal(_version_string(self.session.settings.get("server_version")))
        if isinstance(node, exp.CurrentSchema):
            return self._literal("public")
        if isinstance(node, exp.Anonymous):
            return self._function(node)
        if isinstance(node, exp.JSONObject):
            return exp.Anonymous(this="json_object", expressions=[
                e for kv in node.expressions for e in ((kv.this, kv.expression) if isinstance(kv, exp.JSONKeyValue) else (kv,))
            ])
        if isinstance(node, exp.Func):
            name = _func_name(node)
            if name == "format":
                return self._format([node.this] + list(node.expressions))
            if _DENIED_FUNCTION.match(name) and name not in _ALLOWED_TABLE_FUNCTIONS:
                raise QueryError(f"function {name}() is not available in the SQL endpoint's catalog", "42883")
        return node

    def _function(self, node: exp.Anonymous) -> exp.Expression:
        name = node.name.lower()
        args = list(node.expressions)
        settings = self.session.settings
        if name.startswith("__reg_out_"):
            kind = name[len("__reg_out_"):]
            value = self._reg_in(kind, args[0])
            return self._macro(f"{kind}_out", [value]) if kind != "regproc" else exp.cast(value, "text")
        if name == "version":
            return self._literal(_version_string(settings.get("server_version")))
        if name in ("current_database", "current_catalog"):
            return self._literal(self.session.database)
        if name == "current_schema":
            return self._literal("public")
        if name == "current_schemas":
            include_implicit = not (args and isinstance(args[0], exp.Boolean) and args[0].this is False)
            return self._literal(["pg_catalog", "public"] if include_implicit else ["public"])
        if name in ("current_user", "session_user", "user", "current_role", "getpgusername"):
            return self._literal(self.session.user)
        if name == "pg_get_userbyid":
            return self._literal(self.session.user)
        if name == "pg_backend_pid":
            return self._literal(self.session.backend_pid)
        if name in ("pg_postmaster_start_time", "pg_conf_load_time"):
            return self._literal(_STARTED)
        if name in ("txid_current", "pg_current_xact_id"):
            return self._literal(1)
        if name == "pg_client_encoding":
            return self._literal("UTF8")
        if name == "pg_tablespace_location":
            return self._literal("")
        if name == "inet_server_port" or name == "inet_client_port":
            return exp.Null()
        if name in _SETTING_FUNCS:
            return self._setting_function(name, args)
        if name in _TRUE_FUNCTIONS:
            return exp.Boolean(this=not _asks_write_privilege(name, args))
        if name in _FALSE_FUNCTIONS:
            return exp.Boolean(this=False)
        if name in _NULL_FUNCTIONS:
            return exp.cast(exp.Null(), "text")
        if name in _ZERO_FUNCTIONS:
            return exp.cast(exp.Literal.number(0), "bigint")
        if name in ("pg_get_viewdef", "pg_get_constraintdef"):  # (x [, pretty])
            return self._macro(name, args[:1])
        if name == "pg_get_indexdef":  # (index [, column, pretty])
            return self._macro(name, [args[0], args[1] if len(args) > 1 else exp.Literal.number(0)])
        if name == "obj_description":
            return self._macro(f"obj_description__{min(len(args), 2)}", args[:2])
        if name in _MACRO_FUNCTIONS:
            return self._macro(name, args)
        if name == "to_regtype":
            return self._macro("regtype_in", args)
        if name == "to_regclass":
            return self._macro("regclass_in", args)
        if name == "to_regnamespace":
            return self._macro("regnamespace_in", args)
        if name == "format":
            return self._format(args)
        if name == "pg_get_keywords":
            return self._macro("pg_get_keywords", [])
        if name == "json_build_object":
            return exp.Anonymous(this="json_object", expressions=args)
        if name == "array_length" and len(args) == 2:
            return exp.Anonymous(this="len", expressions=[args[0]])
        if name in ("parse_ident", "_pg_expandarray"):
            return self._macro(name, args[:1])
        if _DENIED_FUNCTION.match(name) and name not in _ALLOWED_TABLE_FUNCTIONS:
            raise QueryError(f"function {name}() is not available in the SQL endpoint's catalog", "42883")
        return node

    def _setting_function(self, name: str, args: list[exp.Expression]) -> exp.Expression:
        settings = self.session.settings
        values = []
        for arg in args:
            while isinstance(arg, (exp.Cast, exp.Paren)):
                arg = arg.this
            if isinstance(arg, exp.Null):
                return exp.cast(exp.Null(), "text")  # NULL argument (also: describe without values)
            if not isinstance(arg, (exp.Literal, exp.Boolean)):
                raise QueryError(f"{name}() is supported with literal arguments only", "0A000")
            values.append(arg.this)
        if name == "current_setting":
            missing_ok = len(values) > 1 and str(values[1]).lower() in ("true", "t", "1")
            value = settings.get(str(values[0]), missing_ok=missing_ok)
            return self._literal(value) if value is not None else exp.cast(exp.Null(), "text")
        if len(values) < 2:
            raise QueryError("set_config(name, value, is_local) takes three arguments", "42883")
        settings.set(str(values[0]), None if values[1] is None else str(values[1]))
        return self._literal(settings.get(str(values[0])))

    def _format(self, args: list[exp.Expression]) -> exp.Expression:
        if not args or not (isinstance(args[0], exp.Literal) and args[0].is_string):
            raise QueryError("format() is supported with a literal format string only", "0A000")
        fmt, rest = args[0].this, list(args[1:])
        parts: list[exp.Expression] = []
        i = 0
        text = ""
        pos = 0
        while pos < len(fmt):
            ch = fmt[pos]
            if ch == "%" and pos + 1 < len(fmt):
                spec = fmt[pos + 1]
                pos += 2
                if spec == "%":
                    text += "%"
                    continue
                if text:
                    parts.append(exp.Literal.string(text))
                    text = ""
                if i >= len(rest):
                    raise QueryError("too few arguments for format()", "22023")
                arg = rest[i]
                i += 1
                if spec == "I":
                    parts.append(self._macro("quote_ident", [arg]))
                elif spec == "L":
                    parts.append(self._macro("quote_literal", [arg]))
                elif spec == "s":
                    parts.append(exp.cast(arg, "text"))
                else:
                    raise QueryError(f"unrecognized format() type specifier \"{spec}\"", "22023")
                continue
            text += ch
            pos += 1
        if text:
            parts.append(exp.Literal.string(text))
        if not parts:
            return exp.Literal.string("")
        result = parts[0]
        for part in parts[1:]:
            result = exp.DPipe(this=result, expression=part)
        return exp.Paren(this=result)

    def _table(self, node: exp.Table) -> exp.Expression:
        fn = node.this
        if not isinstance(fn, exp.Identifier):
            if isinstance(fn, exp.Dot) and fn.this.name == self.s:  # a macro already (pg_get_keywords)
                node.set("this", fn.expression)
                node.set("db", exp.to_identifier(self.s))
                return node
            name = _func_name(fn) if isinstance(fn, exp.Func) else ""
            alias = node.args.get("alias")
            if isinstance(fn, (exp.Explode, exp.Unnest)) or name in ("unnest", "explode"):
                args = fn.expressions if isinstance(fn, (exp.Unnest, exp.Anonymous)) else [fn.this]
                unnest = exp.Unnest(expressions=list(args))
                if alias is not None:
                    columns = alias.columns or [alias.this.copy()]
                    unnest.set("alias", exp.TableAlias(this=alias.this.copy(), columns=[c.copy() for c in columns]))
                return unnest
            if name not in _ALLOWED_TABLE_FUNCTIONS and not isinstance(fn, exp.ExplodingGenerateSeries):
                if name and _DENIED_FUNCTION.match(name):
                    raise QueryError(f"table function {name}() is not available in the SQL endpoint's catalog", "42883")
                return self._scalar_from(fn, name, alias)
            if alias is not None and not alias.columns and alias.this is not None:
                alias.set("columns", [alias.this.copy()])
            node.set("db", None)
            return node
        name = node.name.lower() if not node.this.quoted else node.name
        schema = (node.args.get("db").name.lower() if node.args.get("db") is not None else None)
        if schema is None and name in self.ctes:
            return node
        alias = node.args.get("alias")
        if schema == "information_schema":
            if f"{name}" not in INFORMATION_SCHEMA:
                raise QueryError(f"relation \"information_schema.{name}\" is not emulated by the SQL endpoint", "42P01")
            return self._session_table(f"is_{name}", name, alias)
        if schema in (None, "pg_catalog") and (name in PG_CATALOG or name in PG_VIEWS or name in _SESSION_TABLES):
            if name == "pg_settings":
                return self._settings_table(alias)
            if name == "pg_stat_activity":
                app = self.session.settings.get("application_name", missing_ok=True) or ""
                return self._session_table(name, name, alias, [self.session.backend_pid, app])
            if name in _SESSION_TABLES or name in PG_VIEWS:
                return self._session_table(name, name, alias)
            table = exp.Table(this=exp.to_identifier(name), db=exp.to_identifier(self.s))
            table.set("alias", alias.copy() if alias is not None else exp.TableAlias(this=exp.to_identifier(name)))
            return table
        raise QueryError(f"relation \"{(schema + '.') if schema else ''}{name}\" does not exist in the catalog", "42P01")

    @staticmethod
    def _scalar_from(fn: exp.Expression, name: str, alias) -> exp.Expression:
        """A scalar function in FROM (`FROM string_to_array(x, ',') s`): one row, one column,
        named by the alias (or the function), as in PostgreSQL."""
        table = alias.this.copy() if alias is not None and alias.this is not None else exp.to_identifier(name or "f")
        column = alias.columns[0].copy() if alias is not None and alias.columns else table.copy()
        select = exp.select(exp.alias_(fn.copy(), column.copy()))
        return exp.Subquery(this=select, alias=exp.TableAlias(this=table, columns=[column]))

    def _regproc_comparison(self, node: exp.Expression) -> exp.Expression:
        """`proc.oid = typ.typreceive`: a regproc column (a function name here) compared with
        anything but text is compared by its function's OID."""
        left, right = node.this, node.expression
        left_proc, right_proc = _is_regproc_column(left), _is_regproc_column(right)
        if left_proc == right_proc:
            return node
        column, other = (left, right) if left_proc else (right, left)
        if isinstance(other, exp.Literal) and other.is_string:
            return node  # typinput = 'array_in'::regproc (the cast leaves the name)
        node.set("this" if left_proc else "expression", self._macro("regproc_oid", [column.copy()]))
        return node

    def _session_table(self, macro: str, name: str, alias, extra: list | None = None) -> exp.Expression:
        call = exp.Anonymous(this=macro, expressions=[self._literal(self.session.database), self._literal(self.session.user)]
                             + [self._literal(v) for v in extra or ()])
        table = exp.Table(this=call, db=exp.to_identifier(self.s))
        table.set("alias", alias.copy() if alias is not None else exp.TableAlias(this=exp.to_identifier(name)))
        return table

    def _settings_table(self, alias) -> exp.Expression:
        columns = ["name", "setting", "unit", "category", "short_desc", "extra_desc", "context", "vartype", "source",
                   "min_val", "max_val", "enumvals", "boot_val", "reset_val", "sourcefile", "sourceline", "pending_restart"]
        rows = []
        for name, value in self.session.settings.rows():
            rows.append(exp.Tuple(expressions=[
                exp.Literal.string(name), exp.Literal.string(value), exp.Null(), exp.Literal.string("Metrics Layer"),
                exp.Literal.string(""), exp.Null(), exp.Literal.string("user"), exp.Literal.string("string"),
                exp.Literal.string("session"), exp.Null(), exp.Null(), exp.cast(exp.Null(), "varchar[]"),
                exp.Literal.string(value), exp.Literal.string(value), exp.Null(), exp.cast(exp.Null(), "int"),
                exp.Boolean(this=False),
            ]))
        values = exp.Values(expressions=rows, alias=exp.TableAlias(
            this=exp.to_identifier("v"), columns=[exp.to_identifier(c) for c in columns]))
        select = exp.select(*columns).from_(values)
        name = alias.this if alias is not None else exp.to_identifier("pg_settings")
        return exp.Subquery(this=select, alias=exp.TableAlias(this=name.copy()))

    def _column(self, node: exp.Column) -> exp.Expression:
        db = node.args.get("db")
        if db is not None and db.name.lower() in _PG_SCHEMAS:
            node.set("db", None)
            node.set("catalog", None)
        if node.args.get("table") is None and isinstance(node.this, exp.Identifier) and not node.this.quoted:
            name = node.this.name.lower()
            if name in ("current_user", "session_user", "user", "current_role"):
                return self._literal(self.session.user)
            if name == "current_catalog":
                return self._literal(self.session.database)
            if name == "current_schema":
                return self._literal("public")
        return node

    def _operator(self, node: exp.Operator) -> exp.Expression:
        op = node.args.get("operator")
        op_text = (op.name if hasattr(op, "name") else str(op)).split(".")[-1].strip()
        left, right = node.this, node.expression
        table = {
            "~": lambda: exp.RegexpLike(this=left, expression=right),
            "!~": lambda: exp.Not(this=exp.RegexpLike(this=left, expression=right)),
            "~*": lambda: exp.RegexpILike(this=left, expression=right),
            "!~*": lambda: exp.Not(this=exp.RegexpILike(this=left, expression=right)),
            "=": lambda: exp.EQ(this=left, expression=right),
            "<>": lambda: exp.NEQ(this=left, expression=right),
            "<": lambda: exp.LT(this=left, expression=right),
            ">": lambda: exp.GT(this=left, expression=right),
            "<=": lambda: exp.LTE(this=left, expression=right),
            ">=": lambda: exp.GTE(this=left, expression=right),
            "~~": lambda: exp.Like(this=left, expression=right),
            "!~~": lambda: exp.Not(this=exp.Like(this=left, expression=right)),
            "||": lambda: exp.DPipe(this=left, expression=right),
        }
        if op_text not in table:
            raise QueryError(f"operator {op_text} is not supported by the SQL endpoint's catalog", "42883")
        return table[op_text]()

    def _cast(self, node: exp.Cast) -> exp.Expression:
        kind = _reg_kind(node.to)
        inner = node.this
        if kind == "regprocedure" and isinstance(inner, exp.Literal) and inner.is_string:
            kind = "regproc"  # 'array_in(anyarray)'::regprocedure: the function's name, as regproc
        if kind in ("regclass", "regtype", "regnamespace", "regproc"):
            return self._reg_in(kind, inner)
        target = _DUCK_CAST.get(kind)
        if target is not None:
            return exp.Cast(this=inner, to=exp.DataType.build(target, dialect="duckdb"))
        if isinstance(inner, exp.Column) and inner.name.lower() in _VECTOR_COLUMNS and node.to.is_type(*exp.DataType.TEXT_TYPES):
            # int2vector::text is "1 2 3" (SQLAlchemy 1.4 reads ix.indkey::varchar)
            return exp.Anonymous(this="array_to_string", expressions=[inner, exp.Literal.string(" ")])
        return node

    def _reg_in(self, kind: str, inner: exp.Expression) -> exp.Expression:
        """A reg* value as its OID (an integer expression)."""
        if isinstance(inner, exp.Cast) and _reg_kind(inner.to) in ("text", "varchar", "name"):
            inner = inner.this
        if isinstance(inner, exp.Literal) and inner.is_string:
            text = inner.this
            if text.isascii() and text.isdigit():
                return _uint(exp.Literal.number(int(text)))
            if kind == "regclass":
                oid = self._lookup_relation(text)
                if oid is None:
                    raise QueryError(f"relation \"{text}\" does not exist", "42P01")
                return _uint(exp.Literal.number(oid))
            if kind == "regproc":  # the function's name, as the regproc columns hold it
                return exp.Literal.string(re.sub(r"^(pg_catalog\.)?\"?([^\"(]*)\"?(\(.*\))?$", r"\2", text.strip()))
            return self._macro(f"{kind}_in", [inner])
        if isinstance(inner, (exp.Literal, exp.Column, exp.Null)) and not (isinstance(inner, exp.Literal) and inner.is_string):
            return inner
        if isinstance(inner, exp.Cast) and (inner.to.is_type(*exp.DataType.NUMERIC_TYPES) or _reg_kind(inner.to) == "oid"):
            return inner  # $1::regclass with an integer parameter, CAST(o AS oid)::regclass: the OID itself
        if isinstance(inner, (exp.Func, exp.DPipe, exp.Paren, exp.Anonymous, exp.Dot)):
            return self._macro(f"{kind}_in", [inner]) if kind != "regproc" else exp.Null()
        return inner

    def _lookup_relation(self, text: str) -> int | None:
        name = text.strip()
        for prefix in ("public.", "pg_catalog.", '"public".', '"pg_catalog".'):
            if name.lower().startswith(prefix.lower()):
                name = name[len(prefix):]
                break
        name = name[1:-1].replace('""', '"') if name.startswith('"') and name.endswith('"') else name.lower()
        return self.relations.get(name)


_REG_KINDS = ("regclass", "regtype", "regnamespace", "regproc")
_CLIENT_SCHEMAS = _PG_SCHEMAS | {"public"}


def _refuse_foreign_schemas(tree: exp.Expression) -> None:
    """A client names pg_catalog, information_schema or public only: never a shadow schema (each
    holds the views of one set of users), so `c1.regclass_out(16384)` or `FROM c1.pg_description`
    cannot read the catalog of views the session's user may not see."""
    for node in tree.walk():
        qualifier = None
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier):
            qualifier = node.this
        elif isinstance(node, (exp.Table, exp.Column)) and node.args.get("db") is not None:
            qualifier = node.args["db"]
        if qualifier is not None and isinstance(qualifier, exp.Identifier) and qualifier.name.lower() not in _CLIENT_SCHEMAS:
            raise QueryError(f'schema "{qualifier.name}" does not exist; the catalog has pg_catalog, '
                             f"information_schema and public", "3F000")


def _uint(value: exp.Expression) -> exp.Expression:
    return exp.Cast(this=value, to=exp.DataType.build("UINTEGER", dialect="duckdb"))


_WRITE_PRIVILEGES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "CREATE", "TEMP")


def _asks_write_privilege(name: str, args: list[exp.Expression]) -> bool:
    """has_table_privilege(..., 'INSERT') and the like: the endpoint is read-only, so no."""
    if not name.startswith("has_") or not args:
        return False
    last = args[-1]
    if not (isinstance(last, exp.Literal) and last.is_string):
        return False
    asked = [part.strip().upper() for part in last.this.split(",")]
    return all(part.startswith(_WRITE_PRIVILEGES) for part in asked if part)


_INTEGER_TYPES = {"int", "integer", "int2", "int4", "int8", "smallint", "bigint", "tinyint", "uinteger"}


def _is_integer(node: exp.Expression) -> bool:
    """An integer-valued expression by its form: an integer literal, a cast to an integer type."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Literal):
        return not node.is_string and re.fullmatch(r"-?\d+", str(node.this)) is not None
    if isinstance(node, exp.Cast):
        return _reg_kind(node.to) in _INTEGER_TYPES
    if isinstance(node, exp.Neg):
        return _is_integer(node.this)
    return False


def _is_regproc_column(node: exp.Expression) -> bool:
    return isinstance(node, exp.Column) and isinstance(node.this, exp.Identifier) and node.name.lower() in REGPROC_COLUMNS


def _func_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    try:
        return node.sql_name().lower()
    except Exception:
        return type(node).__name__.lower()


def _reg_kind(to: exp.Expression) -> str:
    """The lower-case type name of a cast target (regclass, text, int2[] ...)."""
    if isinstance(to, exp.ObjectIdentifier):
        return to.name.lower()
    if isinstance(to, exp.DataType):
        if to.this == exp.DataType.Type.USERDEFINED:
            kind = to.args.get("kind")
            if isinstance(kind, exp.Dot):
                return kind.expression.name.lower()
            return kind.name.lower() if kind is not None else ""
        if to.this == exp.DataType.Type.ARRAY:
            inner = to.expressions[0] if to.expressions else None
            return (_reg_kind(inner) + "[]") if inner is not None else "array"
        return to.this.value.lower()
    return ""


_DUCK_CAST = {
    "oid": "UINTEGER", "name": "VARCHAR", "char": "VARCHAR", "regoper": "VARCHAR", "regprocedure": "VARCHAR",
    "int2[]": "SMALLINT[]", "int4[]": "INTEGER[]", "int8[]": "BIGINT[]", "oid[]": "UINTEGER[]", "text[]": "VARCHAR[]",
    "name[]": "VARCHAR[]", "char[]": "VARCHAR[]", "int2vector": "SMALLINT[]", "oidvector": "UINTEGER[]",
    "xid": "UINTEGER", "pg_node_tree": "VARCHAR", "regrole": "VARCHAR", "aclitem[]": "VARCHAR[]",
}


def _version_string(server_version: str | None) -> str:
    version = (server_version or "15.0").split()[0]
    return f"PostgreSQL {version} (metrics-layer) on x86_64-pc-linux-gnu, compiled by metrics-layer, 64-bit"


def references_catalog(tree: exp.Expression) -> tuple[bool, list[exp.Table]]:
    """(does the statement read pg_catalog / information_schema, the other tables it reads)."""
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    catalog, other = False, []
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            if isinstance(table.this, (exp.Anonymous, exp.Func, exp.Dot)):
                catalog = True  # table functions (generate_series, pg_get_keywords): catalog side
            continue
        name = table.name.lower()
        schema = table.args.get("db").name.lower() if table.args.get("db") is not None else None
        if schema is None and name in ctes:
            continue
        if schema in _PG_SCHEMAS or (schema is None and (name in PG_CATALOG or name in PG_VIEWS or name in _SESSION_TABLES)):
            catalog = True
        else:
            other.append(table)
    return catalog, other
