-- client: dbeaver (plugins/org.jkiss.dbeaver.ext.postgresql/.../model/PostgreDataSource.java, loadAvailableDatabases)
SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datallowconn  AND NOT datistemplate 
ORDER BY db.datname
