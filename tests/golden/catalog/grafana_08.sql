-- client: grafana (public/app/plugins/datasource/postgres/meta_query.ts, legacy query builder buildColumnQuery('value') for table conversion_monitoring, time column created_at)
SELECT quote_ident(column_name) FROM information_schema.columns WHERE 
table_schema IN (
  SELECT
    CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
  FROM
    generate_series(
      array_lower(string_to_array(current_setting('search_path'),','),1),
      array_upper(string_to_array(current_setting('search_path'),','),1)
    ) as i,
    string_to_array(current_setting('search_path'),',') s
) AND table_name = 'conversion_monitoring' AND data_type IN ('bigint','integer','double precision','real','numeric') AND column_name <> 'created_at' ORDER BY column_name
