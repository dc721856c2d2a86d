-- client: sqlalchemy inspector
show transaction isolation level
