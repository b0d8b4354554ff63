-- Leased execution: the process that drives a job holds its lease (owner, fencing token, expiry in
-- unix milliseconds). One process serves a SQLite database, so it frees every lease on start.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_expires_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX jobs_runnable ON jobs (updated_ms)
    WHERE state IN ('QUEUED', 'PLANNING', 'RENDERING', 'QUALITY_CHECK');
CREATE INDEX jobs_by_lease_owner ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;
