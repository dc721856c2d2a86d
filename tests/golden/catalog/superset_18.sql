-- client: Apache Superset 6.1.0 (SQLAlchemy 1.4.54, psycopg2 2.9.13), captured from the endpoint's log by tests/test_superset.py
select relname from pg_class c join pg_namespace n on n.oid=c.relnamespace where n.nspname='public' and relname='conversion_monitoring'
