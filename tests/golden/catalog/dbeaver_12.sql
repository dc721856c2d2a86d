-- client: dbeaver (plugins/org.jkiss.dbeaver.ext.postgresql/.../model/PostgreSchema.java, collectObjectStatistics)
-- params: ["2200"]
select c.oid,pg_catalog.pg_total_relation_size(c.oid) as total_rel_size,pg_catalog.pg_relation_size(c.oid) as rel_size
FROM pg_class c
WHERE c.relnamespace=$1
