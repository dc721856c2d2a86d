-- client: dbeaver (plugins/org.jkiss.dbeaver.ext.postgresql/.../model/PostgreDatabase.java, RoleCache)
SELECT a.oid,a.*,pd.description FROM pg_catalog.pg_roles a 
left join pg_catalog.pg_shdescription pd on a.oid = pd.objoid
ORDER BY a.rolname
