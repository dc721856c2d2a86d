"""The shape of the PostgreSQL 15 system catalogs the SQL endpoint emulates, as DuckDB DDL.

Column lists follow PostgreSQL 15 (so that the statements real clients send bind), with DuckDB
types: oid -> UINTEGER (reported to clients as oid), name/text/"char"/regproc -> VARCHAR,
arrays -> lists (reported as their PostgreSQL text form). Tables whose rows the endpoint never
has (indexes, constraints, triggers, ...) exist empty.
"""

from __future__ import annotations

PG_CATALOG: dict[str, str] = {
    "pg_namespace": "oid UINTEGER, nspname VARCHAR, nspowner UINTEGER, nspacl VARCHAR[]",
    "pg_class": (
        "oid UINTEGER, relname VARCHAR, relnamespace UINTEGER, reltype UINTEGER, reloftype UINTEGER, "
        "relowner UINTEGER, relam UINTEGER, relfilenode UINTEGER, reltablespace UINTEGER, relpages INTEGER, "
        "reltuples REAL, relallvisible INTEGER, reltoastrelid UINTEGER, relhasindex BOOLEAN, "
        "relisshared BOOLEAN, relpersistence VARCHAR, relkind VARCHAR, relnatts SMALLINT, relchecks SMALLINT, "
        "relhasrules BOOLEAN, relhastriggers BOOLEAN, relhassubclass BOOLEAN, relrowsecurity BOOLEAN, "
        "relforcerowsecurity BOOLEAN, relispopulated BOOLEAN, relreplident VARCHAR, relispartition BOOLEAN, "
        "relrewrite UINTEGER, relfrozenxid UINTEGER, relminmxid UINTEGER, relacl VARCHAR[], "
        "reloptions VARCHAR[], relpartbound VARCHAR, relhasoids BOOLEAN"
    ),
    "pg_attribute": (
        "attrelid UINTEGER, attname VARCHAR, atttypid UINTEGER, attstattarget INTEGER, attlen SMALLINT, "
        "attnum SMALLINT, attndims INTEGER, attcacheoff INTEGER, atttypmod INTEGER, attbyval BOOLEAN, "
        "attalign VARCHAR, attstorage VARCHAR, attcompression VARCHAR, attnotnull BOOLEAN, atthasdef BOOLEAN, "
        "atthasmissing BOOLEAN, attidentity VARCHAR, attgenerated VARCHAR, attisdropped BOOLEAN, "
        "attislocal BOOLEAN, attinhcount INTEGER, attcollation UINTEGER, attacl VARCHAR[], "
        "attoptions VARCHAR[], attfdwoptions VARCHAR[], attmissingval VARCHAR"
    ),
    "pg_type": (
        "oid UINTEGER, typname VARCHAR, typnamespace UINTEGER, typowner UINTEGER, typlen SMALLINT, "
        "typbyval BOOLEAN, typtype VARCHAR, typcategory VARCHAR, typispreferred BOOLEAN, typisdefined BOOLEAN, "
        "typdelim VARCHAR, typrelid UINTEGER, typsubscript VARCHAR, typelem UINTEGER, typarray UINTEGER, "
        "typinput VARCHAR, typoutput VARCHAR, typreceive VARCHAR, typsend VARCHAR, typmodin VARCHAR, "
        "typmodout VARCHAR, typanalyze VARCHAR, typalign VARCHAR, typstorage VARCHAR, typnotnull BOOLEAN, "
        "typbasetype UINTEGER, typtypmod INTEGER, typndims INTEGER, typcollation UINTEGER, "
        "typdefaultbin VARCHAR, typdefault VARCHAR, typacl VARCHAR[]"
    ),
    "pg_description": "objoid UINTEGER, classoid UINTEGER, objsubid INTEGER, description VARCHAR",
    "pg_shdescription": "objoid UINTEGER, classoid UINTEGER, description VARCHAR",
    "pg_database": (
        "oid UINTEGER, datname VARCHAR, datdba UINTEGER, encoding INTEGER, datlocprovider VARCHAR, "
        "datistemplate BOOLEAN, datallowconn BOOLEAN, datconnlimit INTEGER, datfrozenxid UINTEGER, "
        "datminmxid UINTEGER, dattablespace UINTEGER, datcollate VARCHAR, datctype VARCHAR, "
        "daticulocale VARCHAR, datcollversion VARCHAR, datacl VARCHAR[]"
    ),
    "pg_roles": (
        "rolname VARCHAR, rolsuper BOOLEAN, rolinherit BOOLEAN, rolcreaterole BOOLEAN, rolcreatedb BOOLEAN, "
        "rolcanlogin BOOLEAN, rolreplication BOOLEAN, rolconnlimit INTEGER, rolpassword VARCHAR, "
        "rolvaliduntil TIMESTAMPTZ, rolbypassrls BOOLEAN, rolconfig VARCHAR[], oid UINTEGER"
    ),
    "pg_authid": (
        "oid UINTEGER, rolname VARCHAR, rolsuper BOOLEAN, rolinherit BOOLEAN, rolcreaterole BOOLEAN, "
        "rolcreatedb BOOLEAN, rolcanlogin BOOLEAN, rolreplication BOOLEAN, rolbypassrls BOOLEAN, "
        "rolconnlimit INTEGER, rolpassword VARCHAR, rolvaliduntil TIMESTAMPTZ"
    ),
    "pg_user": (
        "usename VARCHAR, usesysid UINTEGER, usecreatedb BOOLEAN, usesuper BOOLEAN, userepl BOOLEAN, "
        "usebypassrls BOOLEAN, passwd VARCHAR, valuntil TIMESTAMPTZ, useconfig VARCHAR[]"
    ),
    "pg_auth_members": "roleid UINTEGER, member UINTEGER, grantor UINTEGER, admin_option BOOLEAN",
    "pg_am": "oid UINTEGER, amname VARCHAR, amhandler VARCHAR, amtype VARCHAR",
    "pg_proc": (
        "oid UINTEGER, proname VARCHAR, pronamespace UINTEGER, proowner UINTEGER, prolang UINTEGER, "
        "procost REAL, prorows REAL, provariadic UINTEGER, prosupport VARCHAR, prokind VARCHAR, "
        "prosecdef BOOLEAN, proleakproof BOOLEAN, proisstrict BOOLEAN, proretset BOOLEAN, "
        "provolatile VARCHAR, proparallel VARCHAR, pronargs SMALLINT, pronargdefaults SMALLINT, "
        "prorettype UINTEGER, proargtypes UINTEGER[], proallargtypes UINTEGER[], proargmodes VARCHAR[], "
        "proargnames VARCHAR[], proargdefaults VARCHAR, protrftypes UINTEGER[], prosrc VARCHAR, "
        "probin VARCHAR, prosqlbody VARCHAR, proconfig VARCHAR[], proacl VARCHAR[]"
    ),
    "pg_index": (
        "indexrelid UINTEGER, indrelid UINTEGER, indnatts SMALLINT, indnkeyatts SMALLINT, "
        "indisunique BOOLEAN, indnullsnotdistinct BOOLEAN, indisprimary BOOLEAN, indisexclusion BOOLEAN, "
        "indimmediate BOOLEAN, indisclustered BOOLEAN, indisvalid BOOLEAN, indcheckxmin BOOLEAN, "
        "indisready BOOLEAN, indislive BOOLEAN, indisreplident BOOLEAN, indkey SMALLINT[], "
        "indcollation UINTEGER[], indclass UINTEGER[], indoption SMALLINT[], indexprs VARCHAR, indpred VARCHAR"
    ),
    "pg_constraint": (
        "oid UINTEGER, conname VARCHAR, connamespace UINTEGER, contype VARCHAR, condeferrable BOOLEAN, "
        "condeferred BOOLEAN, convalidated BOOLEAN, conrelid UINTEGER, contypid UINTEGER, conindid UINTEGER, "
        "conparentid UINTEGER, confrelid UINTEGER, confupdtype VARCHAR, confdeltype VARCHAR, "
        "confmatchtype VARCHAR, conislocal BOOLEAN, coninhcount INTEGER, connoinherit BOOLEAN, "
        "conkey SMALLINT[], confkey SMALLINT[], conpfeqop UINTEGER[], conppeqop UINTEGER[], "
        "conffeqop UINTEGER[], confdelsetcols SMALLINT[], conexclop UINTEGER[], conbin VARCHAR"
    ),
    "pg_inherits": "inhrelid UINTEGER, inhparent UINTEGER, inhseqno INTEGER, inhdetachpending BOOLEAN",
    "pg_attrdef": "oid UINTEGER, adrelid UINTEGER, adnum SMALLINT, adbin VARCHAR",
    "pg_enum": "oid UINTEGER, enumtypid UINTEGER, enumsortorder REAL, enumlabel VARCHAR",
    "pg_collation": (
        "oid UINTEGER, collname VARCHAR, collnamespace UINTEGER, collowner UINTEGER, collprovider VARCHAR, "
        "collisdeterministic BOOLEAN, collencoding INTEGER, collcollate VARCHAR, collctype VARCHAR, "
        "colliculocale VARCHAR, collversion VARCHAR"
    ),
    "pg_settings": (
        "name VARCHAR, setting VARCHAR, unit VARCHAR, category VARCHAR, short_desc VARCHAR, "
        "extra_desc VARCHAR, context VARCHAR, vartype VARCHAR, source VARCHAR, min_val VARCHAR, "
        "max_val VARCHAR, enumvals VARCHAR[], boot_val VARCHAR, reset_val VARCHAR, sourcefile VARCHAR, "
        "sourceline INTEGER, pending_restart BOOLEAN"
    ),
    "pg_tablespace": "oid UINTEGER, spcname VARCHAR, spcowner UINTEGER, spcacl VARCHAR[], spcoptions VARCHAR[]",
    "pg_extension": (
        "oid UINTEGER, extname VARCHAR, extowner UINTEGER, extnamespace UINTEGER, extrelocatable BOOLEAN, "
        "extversion VARCHAR, extconfig UINTEGER[], extcondition VARCHAR[]"
    ),
    "pg_trigger": (
        "oid UINTEGER, tgrelid UINTEGER, tgparentid UINTEGER, tgname VARCHAR, tgfoid UINTEGER, tgtype SMALLINT, "
        "tgenabled VARCHAR, tgisinternal BOOLEAN, tgconstrrelid UINTEGER, tgconstrindid UINTEGER, "
        "tgconstraint UINTEGER, tgdeferrable BOOLEAN, tginitdeferred BOOLEAN, tgnargs SMALLINT, "
        "tgattr SMALLINT[], tgargs VARCHAR, tgqual VARCHAR, tgoldtable VARCHAR, tgnewtable VARCHAR"
    ),
    "pg_rewrite": (
        "oid UINTEGER, rulename VARCHAR, ev_class UINTEGER, ev_type VARCHAR, ev_enabled VARCHAR, "
        "is_instead BOOLEAN, ev_qual VARCHAR, ev_action VARCHAR"
    ),
    "pg_policy": (
        "oid UINTEGER, polname VARCHAR, polrelid UINTEGER, polcmd VARCHAR, polpermissive BOOLEAN, "
        "polroles UINTEGER[], polqual VARCHAR, polwithcheck VARCHAR"
    ),
    "pg_statistic_ext": (
        "oid UINTEGER, stxrelid UINTEGER, stxname VARCHAR, stxnamespace UINTEGER, stxowner UINTEGER, "
        "stxstattarget INTEGER, stxkeys SMALLINT[], stxkind VARCHAR[], stxexprs VARCHAR"
    ),
    "pg_publication": (
        "oid UINTEGER, pubname VARCHAR, pubowner UINTEGER, puballtables BOOLEAN, pubinsert BOOLEAN, "
        "pubupdate BOOLEAN, pubdelete BOOLEAN, pubtruncate BOOLEAN, pubviaroot BOOLEAN"
    ),
    "pg_publication_namespace": "oid UINTEGER, pnpubid UINTEGER, pnnspid UINTEGER",
    "pg_publication_rel": "oid UINTEGER, prpubid UINTEGER, prrelid UINTEGER, prqual VARCHAR, prattrs SMALLINT[]",
    "pg_subscription": "oid UINTEGER, subdbid UINTEGER, subname VARCHAR, subowner UINTEGER, subenabled BOOLEAN",
    "pg_opclass": (
        "oid UINTEGER, opcmethod UINTEGER, opcname VARCHAR, opcnamespace UINTEGER, opcowner UINTEGER, "
        "opcfamily UINTEGER, opcintype UINTEGER, opcdefault BOOLEAN, opckeytype UINTEGER"
    ),
    "pg_operator": (
        "oid UINTEGER, oprname VARCHAR, oprnamespace UINTEGER, oprowner UINTEGER, oprkind VARCHAR, "
        "oprcanmerge BOOLEAN, oprcanhash BOOLEAN, oprleft UINTEGER, oprright UINTEGER, oprresult UINTEGER, "
        "oprcom UINTEGER, oprnegate UINTEGER, oprcode VARCHAR, oprrest VARCHAR, oprjoin VARCHAR"
    ),
    "pg_sequence": (
        "seqrelid UINTEGER, seqtypid UINTEGER, seqstart BIGINT, seqincrement BIGINT, seqmax BIGINT, "
        "seqmin BIGINT, seqcache BIGINT, seqcycle BOOLEAN"
    ),
    "pg_depend": (
        "classid UINTEGER, objid UINTEGER, objsubid INTEGER, refclassid UINTEGER, refobjid UINTEGER, "
        "refobjsubid INTEGER, deptype VARCHAR"
    ),
    "pg_foreign_table": "ftrelid UINTEGER, ftserver UINTEGER, ftoptions VARCHAR[]",
    "pg_foreign_server": "oid UINTEGER, srvname VARCHAR, srvowner UINTEGER, srvfdw UINTEGER",
    "pg_foreign_data_wrapper": "oid UINTEGER, fdwname VARCHAR, fdwowner UINTEGER",
    "pg_partitioned_table": "partrelid UINTEGER, partstrat VARCHAR, partnatts SMALLINT, partdefid UINTEGER",
    "pg_event_trigger": "oid UINTEGER, evtname VARCHAR, evtevent VARCHAR, evtowner UINTEGER, evtenabled VARCHAR",
    "pg_language": "oid UINTEGER, lanname VARCHAR, lanowner UINTEGER, lanispl BOOLEAN, lanpltrusted BOOLEAN",
    "pg_cast": "oid UINTEGER, castsource UINTEGER, casttarget UINTEGER, castfunc UINTEGER, castcontext VARCHAR, castmethod VARCHAR",
    "pg_aggregate": (
        "aggfnoid VARCHAR, aggkind VARCHAR, aggnumdirectargs SMALLINT, aggtransfn VARCHAR, aggfinalfn VARCHAR, "
        "aggcombinefn VARCHAR, aggtranstype UINTEGER, agginitval VARCHAR"
    ),
    "pg_range": (
        "rngtypid UINTEGER, rngsubtype UINTEGER, rngmultitypid UINTEGER, rngcollation UINTEGER, "
        "rngsubopc UINTEGER, rngcanonical VARCHAR, rngsubdiff VARCHAR"
    ),
    "pg_default_acl": "oid UINTEGER, defaclrole UINTEGER, defaclnamespace UINTEGER, defaclobjtype VARCHAR, defaclacl VARCHAR[]",
    "pg_shdepend": (
        "dbid UINTEGER, classid UINTEGER, objid UINTEGER, objsubid INTEGER, refclassid UINTEGER, "
        "refobjid UINTEGER, deptype VARCHAR"
    ),
    "pg_timezone_abbrevs": "abbrev VARCHAR, utc_offset INTERVAL, is_dst BOOLEAN",
    "pg_conversion": "oid UINTEGER, conname VARCHAR, connamespace UINTEGER, conforencoding INTEGER, contoencoding INTEGER",
    "pg_stat_activity": (
        "datid UINTEGER, datname VARCHAR, pid INTEGER, leader_pid INTEGER, usesysid UINTEGER, usename VARCHAR, "
        "application_name VARCHAR, client_addr VARCHAR, client_hostname VARCHAR, client_port INTEGER, "
        "backend_start TIMESTAMPTZ, xact_start TIMESTAMPTZ, query_start TIMESTAMPTZ, state_change TIMESTAMPTZ, "
        "wait_event_type VARCHAR, wait_event VARCHAR, state VARCHAR, backend_xid UINTEGER, "
        "backend_xmin UINTEGER, query_id BIGINT, query VARCHAR, backend_type VARCHAR"
    ),
    "pg_locks": "locktype VARCHAR, database UINTEGER, relation UINTEGER, pid INTEGER, mode VARCHAR, granted BOOLEAN",
    "pg_prepared_xacts": "transaction UINTEGER, gid VARCHAR, prepared TIMESTAMPTZ, owner VARCHAR, database VARCHAR",
    "pg_replication_slots": "slot_name VARCHAR, plugin VARCHAR, slot_type VARCHAR, datoid UINTEGER, database VARCHAR",
    "pg_timezone_names": "name VARCHAR, abbrev VARCHAR, utc_offset INTERVAL, is_dst BOOLEAN",
    "pg_available_extensions": "name VARCHAR, default_version VARCHAR, installed_version VARCHAR, comment VARCHAR",
    "pg_indexes": "schemaname VARCHAR, tablename VARCHAR, indexname VARCHAR, tablespace VARCHAR, indexdef VARCHAR",
    "pg_sequences": "schemaname VARCHAR, sequencename VARCHAR, sequenceowner VARCHAR, data_type VARCHAR",
    "pg_matviews": (
        "schemaname VARCHAR, matviewname VARCHAR, matviewowner VARCHAR, tablespace VARCHAR, "
        "hasindexes BOOLEAN, ispopulated BOOLEAN, definition VARCHAR"
    ),
    "pg_statio_user_tables": "relid UINTEGER, schemaname VARCHAR, relname VARCHAR",
    "pg_stat_user_tables": "relid UINTEGER, schemaname VARCHAR, relname VARCHAR, n_live_tup BIGINT",
}

# Views over the tables above (created after them, in the same schema).
PG_VIEWS: dict[str, str] = {
    "pg_tables": (
        "SELECT n.nspname AS schemaname, c.relname AS tablename, '{owner}' AS tableowner, "
        "CAST(NULL AS VARCHAR) AS tablespace, c.relhasindex AS hasindexes, c.relhasrules AS hasrules, "
        "c.relhastriggers AS hastriggers, c.relrowsecurity AS rowsecurity "
        "FROM {s}.pg_class c JOIN {s}.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')"
    ),
    "pg_views": (
        "SELECT n.nspname AS schemaname, c.relname AS viewname, '{owner}' AS viewowner, d.definition "
        "FROM {s}.pg_class c JOIN {s}.pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN {s}.ml_defs d ON d.oid = c.oid AND d.col = 0 WHERE c.relkind = 'v'"
    ),
}

# information_schema, as views over the shadow pg_catalog ({s} = catalog schema).
INFORMATION_SCHEMA: dict[str, str] = {
    "schemata": (
        "SELECT '{db}' AS catalog_name, nspname AS schema_name, '{owner}' AS schema_owner, "
        "CAST(NULL AS VARCHAR) AS default_character_set_catalog, CAST(NULL AS VARCHAR) AS default_character_set_schema, "
        "CAST(NULL AS VARCHAR) AS default_character_set_name, CAST(NULL AS VARCHAR) AS sql_path "
        "FROM {s}.pg_namespace"
    ),
    "tables": (
        "SELECT '{db}' AS table_catalog, n.nspname AS table_schema, c.relname AS table_name, "
        "CASE WHEN n.nspname IN ('pg_catalog', 'information_schema') AND c.relkind = 'v' THEN 'VIEW' "
        "WHEN c.relkind = 'v' THEN 'VIEW' ELSE 'BASE TABLE' END AS table_type, "
        "CAST(NULL AS VARCHAR) AS self_referencing_column_name, CAST(NULL AS VARCHAR) AS reference_generation, "
        "CAST(NULL AS VARCHAR) AS user_defined_type_catalog, CAST(NULL AS VARCHAR) AS user_defined_type_schema, "
        "CAST(NULL AS VARCHAR) AS user_defined_type_name, 'NO' AS is_insertable_into, 'NO' AS is_typed, "
        "CAST(NULL AS VARCHAR) AS commit_action "
        "FROM {s}.pg_class c JOIN {s}.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'v', 'p', 'm')"
    ),
    "views": (
        "SELECT '{db}' AS table_catalog, n.nspname AS table_schema, c.relname AS table_name, "
        "d.definition AS view_definition, 'NONE' AS check_option, 'NO' AS is_updatable, "
        "'NO' AS is_insertable_into, 'NO' AS is_trigger_updatable, 'NO' AS is_trigger_deletable, "
        "'NO' AS is_trigger_insertable_into "
        "FROM {s}.pg_class c JOIN {s}.pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN {s}.ml_defs d ON d.oid = c.oid AND d.col = 0 WHERE c.relkind = 'v'"
    ),
    "columns": (
        "SELECT '{db}' AS table_catalog, n.nspname AS table_schema, c.relname AS table_name, "
        "a.attname AS column_name, CAST(a.attnum AS INTEGER) AS ordinal_position, "
        "CAST(NULL AS VARCHAR) AS column_default, CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END AS is_nullable, "
        "t.sqlname AS data_type, CAST(NULL AS INTEGER) AS character_maximum_length, "
        "CASE WHEN a.atttypid = 25 THEN 1073741824 END AS character_octet_length, "
        "CASE a.atttypid WHEN 21 THEN 16 WHEN 23 THEN 32 WHEN 20 THEN 64 WHEN 700 THEN 24 WHEN 701 THEN 53 END AS numeric_precision, "
        "CASE WHEN a.atttypid IN (21, 23, 20, 700, 701, 1700) THEN CASE WHEN a.atttypid = 1700 THEN 10 ELSE 2 END END AS numeric_precision_radix, "
        "CASE WHEN a.atttypid IN (21, 23, 20) THEN 0 END AS numeric_scale, "
        "CASE WHEN a.atttypid IN (1082, 1114, 1184, 1083) THEN CASE WHEN a.atttypid = 1082 THEN 0 ELSE 6 END END AS datetime_precision, "
        "CAST(NULL AS VARCHAR) AS interval_type, CAST(NULL AS INTEGER) AS interval_precision, "
        "CAST(NULL AS VARCHAR) AS character_set_catalog, CAST(NULL AS VARCHAR) AS character_set_schema, "
        "CAST(NULL AS VARCHAR) AS character_set_name, CAST(NULL AS VARCHAR) AS collation_catalog, "
        "CAST(NULL AS VARCHAR) AS collation_schema, CAST(NULL AS VARCHAR) AS collation_name, "
        "CAST(NULL AS VARCHAR) AS domain_catalog, CAST(NULL AS VARCHAR) AS domain_schema, "
        "CAST(NULL AS VARCHAR) AS domain_name, '{db}' AS udt_catalog, 'pg_catalog' AS udt_schema, "
        "t.typname AS udt_name, CAST(NULL AS VARCHAR) AS scope_catalog, CAST(NULL AS VARCHAR) AS scope_schema, "
        "CAST(NULL AS VARCHAR) AS scope_name, CAST(NULL AS INTEGER) AS maximum_cardinality, "
        "CAST(a.attnum AS VARCHAR) AS dtd_identifier, 'NO' AS is_self_referencing, 'NO' AS is_identity, "
        "CAST(NULL AS VARCHAR) AS identity_generation, CAST(NULL AS VARCHAR) AS identity_start, "
        "CAST(NULL AS VARCHAR) AS identity_increment, CAST(NULL AS VARCHAR) AS identity_maximum, "
        "CAST(NULL AS VARCHAR) AS identity_minimum, CAST(NULL AS VARCHAR) AS identity_cycle, "
        "'NEVER' AS is_generated, CAST(NULL AS VARCHAR) AS generation_expression, 'NO' AS is_updatable "
        "FROM {s}.pg_attribute a JOIN {s}.pg_class c ON c.oid = a.attrelid "
        "JOIN {s}.pg_namespace n ON n.oid = c.relnamespace JOIN {s}.ml_types t ON t.oid = a.atttypid "
        "WHERE a.attnum > 0 AND c.relkind IN ('r', 'v', 'p', 'm')"
    ),
    # A view's dimension key (catalog.py, ShadowCatalog._key): PRIMARY KEY or UNIQUE.
    "table_constraints": (
        "SELECT '{db}' AS constraint_catalog, 'public' AS constraint_schema, k.conname AS constraint_name, "
        "'{db}' AS table_catalog, 'public' AS table_schema, c.relname AS table_name, "
        "CASE k.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END AS constraint_type, 'NO' AS is_deferrable, "
        "'NO' AS initially_deferred, 'YES' AS enforced, CASE k.contype WHEN 'u' THEN 'NO' END AS nulls_distinct "
        "FROM {s}.pg_constraint k JOIN {s}.pg_class c ON c.oid = k.conrelid"
    ),
    "key_column_usage": (
        "SELECT '{db}' AS constraint_catalog, 'public' AS constraint_schema, k.conname AS constraint_name, "
        "'{db}' AS table_catalog, 'public' AS table_schema, c.relname AS table_name, "
        "u.attname AS column_name, u.position AS ordinal_position, CAST(NULL AS INTEGER) AS position_in_unique_constraint "
        "FROM {s}.ml_key_columns u JOIN {s}.pg_constraint k ON k.oid = u.conoid JOIN {s}.pg_class c ON c.oid = u.relid"
    ),
    "referential_constraints": (
        "SELECT CAST(NULL AS VARCHAR) AS constraint_catalog, CAST(NULL AS VARCHAR) AS constraint_schema, "
        "CAST(NULL AS VARCHAR) AS constraint_name, CAST(NULL AS VARCHAR) AS unique_constraint_catalog, "
        "CAST(NULL AS VARCHAR) AS unique_constraint_schema, CAST(NULL AS VARCHAR) AS unique_constraint_name, "
        "CAST(NULL AS VARCHAR) AS match_option, CAST(NULL AS VARCHAR) AS update_rule, "
        "CAST(NULL AS VARCHAR) AS delete_rule WHERE false"
    ),
    "constraint_column_usage": (
        "SELECT '{db}' AS table_catalog, 'public' AS table_schema, c.relname AS table_name, u.attname AS column_name, "
        "'{db}' AS constraint_catalog, 'public' AS constraint_schema, k.conname AS constraint_name "
        "FROM {s}.ml_key_columns u JOIN {s}.pg_constraint k ON k.oid = u.conoid JOIN {s}.pg_class c ON c.oid = u.relid"
    ),
    "routines": (
        "SELECT CAST(NULL AS VARCHAR) AS specific_catalog, CAST(NULL AS VARCHAR) AS specific_schema, "
        "CAST(NULL AS VARCHAR) AS specific_name, CAST(NULL AS VARCHAR) AS routine_catalog, "
        "CAST(NULL AS VARCHAR) AS routine_schema, CAST(NULL AS VARCHAR) AS routine_name, "
        "CAST(NULL AS VARCHAR) AS routine_type, CAST(NULL AS VARCHAR) AS data_type WHERE false"
    ),
    "parameters": (
        "SELECT CAST(NULL AS VARCHAR) AS specific_catalog, CAST(NULL AS VARCHAR) AS specific_schema, "
        "CAST(NULL AS VARCHAR) AS specific_name, CAST(NULL AS INTEGER) AS ordinal_position, "
        "CAST(NULL AS VARCHAR) AS parameter_mode, CAST(NULL AS VARCHAR) AS parameter_name, "
        "CAST(NULL AS VARCHAR) AS data_type WHERE false"
    ),
    "character_sets": (
        "SELECT CAST(NULL AS VARCHAR) AS character_set_catalog, CAST(NULL AS VARCHAR) AS character_set_schema, "
        "'UTF8' AS character_set_name, 'UCS' AS character_repertoire, 'UTF8' AS form_of_use, "
        "'{db}' AS default_collate_catalog, 'pg_catalog' AS default_collate_schema, 'C.UTF-8' AS default_collate_name"
    ),
    "enabled_roles": "SELECT '{owner}' AS role_name",
    "applicable_roles": (
        "SELECT CAST(NULL AS VARCHAR) AS grantee, CAST(NULL AS VARCHAR) AS role_name, "
        "CAST(NULL AS VARCHAR) AS is_grantable WHERE false"
    ),
    "table_privileges": (
        "SELECT '{owner}' AS grantor, '{owner}' AS grantee, '{db}' AS table_catalog, n.nspname AS table_schema, "
        "c.relname AS table_name, 'SELECT' AS privilege_type, 'NO' AS is_grantable, 'YES' AS with_hierarchy "
        "FROM {s}.pg_class c JOIN {s}.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
    ),
    "column_privileges": (
        "SELECT '{owner}' AS grantor, '{owner}' AS grantee, '{db}' AS table_catalog, n.nspname AS table_schema, "
        "c.relname AS table_name, a.attname AS column_name, 'SELECT' AS privilege_type, 'NO' AS is_grantable "
        "FROM {s}.pg_attribute a JOIN {s}.pg_class c ON c.oid = a.attrelid "
        "JOIN {s}.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
    ),
    "sequences": (
        "SELECT CAST(NULL AS VARCHAR) AS sequence_catalog, CAST(NULL AS VARCHAR) AS sequence_schema, "
        "CAST(NULL AS VARCHAR) AS sequence_name, CAST(NULL AS VARCHAR) AS data_type WHERE false"
    ),
    "triggers": (
        "SELECT CAST(NULL AS VARCHAR) AS trigger_catalog, CAST(NULL AS VARCHAR) AS trigger_schema, "
        "CAST(NULL AS VARCHAR) AS trigger_name, CAST(NULL AS VARCHAR) AS event_object_table WHERE false"
    ),
}

# (oid, typname, sql name for format_type, typlen, typcategory, typelem, typarray, typcollation)
BASE_TYPES: list[tuple[int, str, str, int, str, int, int, int]] = [
    (16, "bool", "boolean", 1, "B", 0, 1000, 0),
    (17, "bytea", "bytea", -1, "U", 0, 1001, 0),
    (18, "char", "\"char\"", 1, "Z", 0, 1002, 100),
    (19, "name", "name", 64, "S", 18, 1003, 950),
    (20, "int8", "bigint", 8, "N", 0, 1016, 0),
    (21, "int2", "smallint", 2, "N", 0, 1005, 0),
    (22, "int2vector", "int2vector", -1, "A", 21, 1006, 0),
    (23, "int4", "integer", 4, "N", 0, 1007, 0),
    (24, "regproc", "regproc", 4, "N", 0, 1008, 0),
    (25, "text", "text", -1, "S", 0, 1009, 100),
    (26, "oid", "oid", 4, "N", 0, 1028, 0),
    (30, "oidvector", "oidvector", -1, "A", 26, 1013, 0),
    (114, "json", "json", -1, "U", 0, 199, 0),
    (194, "pg_node_tree", "pg_node_tree", -1, "Z", 0, 0, 100),
    (700, "float4", "real", 4, "N", 0, 1021, 0),
    (701, "float8", "double precision", 8, "N", 0, 1022, 0),
    (705, "unknown", "unknown", -2, "X", 0, 0, 0),
    (1033, "aclitem", "aclitem", 12, "U", 0, 1034, 0),
    (1042, "bpchar", "character", -1, "S", 0, 1014, 100),
    (1043, "varchar", "character varying", -1, "S", 0, 1015, 100),
    (1082, "date", "date", 4, "D", 0, 1182, 0),
    (1083, "time", "time without time zone", 8, "D", 0, 1183, 0),
    (1114, "timestamp", "timestamp without time zone", 8, "D", 0, 1115, 0),
    (1184, "timestamptz", "timestamp with time zone", 8, "D", 0, 1185, 0),
    (1186, "interval", "interval", 16, "T", 0, 1187, 0),
    (1266, "timetz", "time with time zone", 12, "D", 0, 1270, 0),
    (1700, "numeric", "numeric", -1, "N", 0, 1231, 0),
    (2205, "regclass", "regclass", 4, "N", 0, 2210, 0),
    (2206, "regtype", "regtype", 4, "N", 0, 2211, 0),
    (2249, "record", "record", -1, "P", 0, 2287, 0),
    (2275, "cstring", "cstring", -2, "P", 0, 1263, 0),
    (2276, "any", "\"any\"", 4, "P", 0, 0, 0),
    (2277, "anyarray", "anyarray", -1, "P", 0, 0, 0),
    (2278, "void", "void", 4, "P", 0, 0, 0),
    (2950, "uuid", "uuid", 16, "U", 0, 2951, 0),
    (3802, "jsonb", "jsonb", -1, "U", 0, 3807, 0),
    (4089, "regnamespace", "regnamespace", 4, "N", 0, 4090, 0),
]
ARRAY_TYPES: list[tuple[int, str, int]] = [  # (oid, name, element oid)
    (1000, "_bool", 16), (1001, "_bytea", 17), (1002, "_char", 18), (1003, "_name", 19), (1005, "_int2", 21),
    (1006, "_int2vector", 22), (1007, "_int4", 23), (1008, "_regproc", 24), (1009, "_text", 25),
    (1013, "_oidvector", 30), (1014, "_bpchar", 1042), (1015, "_varchar", 1043), (1016, "_int8", 20),
    (1021, "_float4", 700), (1022, "_float8", 701), (1028, "_oid", 26), (1034, "_aclitem", 1033),
    (1115, "_timestamp", 1114), (1182, "_date", 1082), (1183, "_time", 1083), (1185, "_timestamptz", 1184),
    (1187, "_interval", 1186), (1231, "_numeric", 1700), (1263, "_cstring", 2275), (1270, "_timetz", 1266),
    (199, "_json", 114), (2210, "_regclass", 2205), (2211, "_regtype", 2206), (2287, "_record", 2249),
    (2951, "_uuid", 2950), (3807, "_jsonb", 3802), (4090, "_regnamespace", 4089),
]

# Well-known relation OIDs of the system catalogs (for 'pg_class'::regclass and the like).
SYSTEM_RELATIONS: dict[str, int] = {
    "pg_type": 1247, "pg_attribute": 1249, "pg_proc": 1255, "pg_class": 1259, "pg_authid": 1260,
    "pg_database": 1262, "pg_constraint": 2606, "pg_description": 2609, "pg_namespace": 2615,
    "pg_index": 2610, "pg_attrdef": 2604, "pg_inherits": 2611, "pg_am": 2601, "pg_trigger": 2620,
    "pg_rewrite": 2618, "pg_collation": 3456, "pg_enum": 3501, "pg_extension": 3079, "pg_policy": 3256,
    "pg_publication": 6104, "pg_statistic_ext": 3381, "pg_tablespace": 1213, "pg_operator": 2617,
    "pg_opclass": 2616, "pg_language": 2612, "pg_depend": 2608, "pg_cast": 2605, "pg_sequence": 2224,
    "pg_shdescription": 2396, "pg_auth_members": 1261, "pg_event_trigger": 3466,
    "pg_foreign_table": 3118, "pg_partitioned_table": 3350, "pg_aggregate": 2600,
    "pg_foreign_server": 1417, "pg_foreign_data_wrapper": 2328, "pg_conversion": 2607,
    "pg_publication_rel": 6106, "pg_publication_namespace": 6237, "pg_subscription": 6100,
    "pg_range": 3541, "pg_default_acl": 826, "pg_shdepend": 1214,
    "pg_settings": 12000, "pg_roles": 12001, "pg_user": 12002, "pg_tables": 12003, "pg_views": 12004,
    "pg_matviews": 12005, "pg_stat_activity": 12006, "pg_indexes": 12007, "pg_locks": 12008,
}

# Columns of type regproc: stored as function names (as PostgreSQL prints them); compared with an
# OID, the rewrite looks the name up in pg_proc (catalog.py, regproc_oid).
REGPROC_COLUMNS = {
    "typinput", "typoutput", "typreceive", "typsend", "typmodin", "typmodout", "typanalyze", "typsubscript",
    "aggfnoid", "aggtransfn", "aggfinalfn", "aggcombinefn", "prosupport", "amhandler", "oprcode", "oprrest",
    "oprjoin", "rngcanonical", "rngsubdiff",
}

# Aggregates listed in pg_proc / pg_aggregate: (name, return type, argument type).
AGGREGATES = [("avg", 701, 701), ("count", 20, 2276), ("max", 701, 701), ("min", 701, 701), ("sum", 701, 701)]

NAMESPACES = [(11, "pg_catalog"), (2200, "public"), (13000, "information_schema")]
