-- client: npgsql 8 (src/Npgsql/PostgresDatabaseInfo.cs, GenerateLoadEnumFieldsQuery(withEnumSortOrder: true))
-- Load enum fields
SELECT pg_type.oid, enumlabel
FROM pg_enum
JOIN pg_type ON pg_type.oid=enumtypid
ORDER BY oid, enumsortorder;
