-- Batches' raw requests compressed with lz4 instead of pglz (see the kit's migration
-- 0003_outbox_lz4 for the figures): a batch of 1,000 records is about 100 kB, compressed on
-- every push. Only values written from now on change; a server without lz4 keeps pglz.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE batches ALTER COLUMN request SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4: batch requests stay compressed with pglz';
END
$$;
