-- client: npgsql 8 (src/Npgsql/PostgresDatabaseInfo.cs, LoadBackendTypes: first statement of the batch)
SELECT version();
