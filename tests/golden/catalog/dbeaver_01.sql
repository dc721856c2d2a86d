-- client: dbeaver (plugins/org.jkiss.dbeaver.ext.postgresql/.../model/PostgreExecutionContext.java, refreshDefaults)
SELECT current_schema(),session_user
