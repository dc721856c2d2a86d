-- client: dbeaver (plugins/org.jkiss.dbeaver.ext.postgresql/.../model/PostgreDatabase.java, readDatabaseInfo)
-- params: ["metrics"]
SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname=$1
