-- Every index PostgreSQL holds as invalid, by qualified and quoted name: a
-- `CREATE INDEX CONCURRENTLY` that failed (a lock timeout while it waited for
-- older transactions, say) leaves one behind, which a retry's `IF NOT EXISTS`
-- would take for done.
SELECT format('%I.%I', n.nspname, c.relname) AS name
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid
