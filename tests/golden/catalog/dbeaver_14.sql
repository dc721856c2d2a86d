-- client: dbeaver (plugins/org.jkiss.dbeaver.ext.postgresql/.../model/PostgreSchema.java, ProceduresCache)
-- params: ["2200"]
SELECT p.oid,p.*,pg_catalog.pg_get_expr(p.proargdefaults, 0) as arg_defaults,d.description
FROM pg_catalog.pg_proc p
LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=p.oid
WHERE p.pronamespace=$1
ORDER BY p.proname
