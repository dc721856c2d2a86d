-- client: dbeaver (plugins/org.jkiss.dbeaver.ext.postgresql/.../model/PostgreDataSource.java, SettingCache)
-- params: ["standard_conforming_strings"]
select * from pg_catalog.pg_settings where name=$1
