-- client: Apache Superset 6.1.0 (SQLAlchemy 1.4.54, psycopg2 2.9.13), captured from the endpoint's log by tests/test_superset.py
SELECT t.oid, typarray
FROM pg_type t JOIN pg_namespace ns
    ON typnamespace = ns.oid
WHERE typname = 'hstore';
