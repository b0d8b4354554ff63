-- A job's document is rewritten by every commit and is large enough to be compressed (TOAST,
-- over ~2 KB): pglz spent ~9 % of PostgreSQL's CPU in the end-to-end bench. lz4 compresses
-- several times faster. Only where the server was built with lz4 (the default in the major
-- distributions); elsewhere the column keeps the server's default method.
DO $$
BEGIN
    ALTER TABLE jobs ALTER COLUMN doc SET COMPRESSION lz4;
EXCEPTION
    WHEN feature_not_supported OR invalid_parameter_value THEN
        RAISE NOTICE 'lz4 is not available: job documents keep the default compression';
END
$$;
