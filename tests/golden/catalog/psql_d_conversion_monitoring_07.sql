-- (the OID 16437 the capture saw is replaced by the endpoint's OID for conversion_monitoring)
-- client: psql \d conversion_monitoring
SELECT c.oid::pg_catalog.regclass
FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i
WHERE c.oid = i.inhparent AND i.inhrelid = '16384'
  AND c.relkind != 'p' AND c.relkind != 'I'
ORDER BY inhseqno;
