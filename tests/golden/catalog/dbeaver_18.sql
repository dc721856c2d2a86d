-- client: dbeaver (plugins/org.jkiss.dbeaver.ext.postgresql/.../model/PostgreDatabase.java, getDescription)
-- params: ["metrics"]
select description from pg_shdescription join pg_database on objoid = pg_database.oid where datname = $1
