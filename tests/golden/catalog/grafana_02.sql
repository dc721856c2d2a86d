-- client: grafana (public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts, getTimescaleDBVersion)
SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'
