-- client: dbeaver via pgjdbc (pgjdbc/src/main/java/org/postgresql/jdbc/TypeInfoCache.java, getPGType by oid)
-- params: ["1034"]
SELECT n.nspname = ANY(current_schemas(true)), n.nspname, t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid WHERE t.oid = $1
