-- Event payloads compressed with lz4 instead of PostgreSQL's default pglz: a batch's event
-- carries a change per record (tens of kilobytes), and pglz compressing it and the batch's
-- raw request took about 4 % of the machine's CPU in `bench ingest` on PostgreSQL (perf,
-- 2026-12-04); lz4 compresses several times faster. Only values written from now on change.
-- A server built without lz4 keeps pglz. PostgreSQL only: SQLite does not compress.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE outbox ALTER COLUMN payload SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4: outbox payloads stay compressed with pglz';
END
$$;
