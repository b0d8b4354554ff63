-- Documents as JSON text rather than jsonb: the service writes and reads them whole and no query
-- looks inside one, while jsonb parsed every document written (a job's, rewritten by every
-- commit, is ~7 KB) and sorted its keys: 17 % of PostgreSQL's CPU in the end-to-end bench.
-- Each table is rewritten once by the type change.
ALTER TABLE jobs ALTER COLUMN doc TYPE text USING doc::text;
ALTER TABLE job_events ALTER COLUMN doc TYPE text USING doc::text;
ALTER TABLE ledger ALTER COLUMN doc TYPE text USING doc::text;
ALTER TABLE brand_markers ALTER COLUMN doc TYPE text USING doc::text;
-- The type change resets the column's compression method: lz4 again, as in 0006 (pglz took 8 %
-- of PostgreSQL's CPU without it).
DO $$
BEGIN
    ALTER TABLE jobs ALTER COLUMN doc SET COMPRESSION lz4;
EXCEPTION
    WHEN feature_not_supported OR invalid_parameter_value THEN
        RAISE NOTICE 'lz4 is not available: job documents keep the default compression';
END
$$;
