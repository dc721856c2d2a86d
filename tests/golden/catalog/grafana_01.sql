-- client: grafana (public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts, getVersion: config page auto-detect)
SELECT current_setting('server_version_num')::int/100 as version
