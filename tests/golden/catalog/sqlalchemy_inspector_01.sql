-- client: sqlalchemy inspector
select pg_catalog.version()
