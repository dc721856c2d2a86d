-- client: metabase (src/metabase/driver/postgres.clj, db-default-timezone)
show timezone;
