-- client: sqlalchemy inspector
select current_schema()
