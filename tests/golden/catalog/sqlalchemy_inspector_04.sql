-- client: sqlalchemy inspector
show standard_conforming_strings
