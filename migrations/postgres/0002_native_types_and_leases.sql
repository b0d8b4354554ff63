-- Native PostgreSQL types: documents as jsonb, instants as timestamptz, flags as boolean. Money
-- stays integer micro-USD (bigint): exact, and sums are cast back to bigint.
ALTER TABLE jobs ALTER COLUMN doc TYPE jsonb USING doc::jsonb;
ALTER TABLE job_events ALTER COLUMN doc TYPE jsonb USING doc::jsonb;
ALTER TABLE ledger ALTER COLUMN doc TYPE jsonb USING doc::jsonb;
ALTER TABLE brand_markers ALTER COLUMN doc TYPE jsonb USING doc::jsonb;

ALTER TABLE ledger ALTER COLUMN sandbox TYPE boolean USING sandbox <> 0;
ALTER TABLE ledger ALTER COLUMN succeeded TYPE boolean USING succeeded <> 0;

ALTER TABLE tenants RENAME COLUMN created_ms TO created_at;
ALTER TABLE tenants ALTER COLUMN created_at TYPE timestamptz USING to_timestamp(created_at / 1000.0);
ALTER TABLE tenants RENAME COLUMN trial_end_ms TO trial_end_at;
ALTER TABLE tenants ALTER COLUMN trial_end_at TYPE timestamptz USING to_timestamp(trial_end_at / 1000.0);

ALTER TABLE api_keys RENAME COLUMN created_ms TO created_at;
ALTER TABLE api_keys ALTER COLUMN created_at TYPE timestamptz USING to_timestamp(created_at / 1000.0);
ALTER TABLE api_keys RENAME COLUMN expires_ms TO expires_at;
ALTER TABLE api_keys ALTER COLUMN expires_at TYPE timestamptz USING to_timestamp(expires_at / 1000.0);
ALTER TABLE api_keys RENAME COLUMN revoked_ms TO revoked_at;
ALTER TABLE api_keys ALTER COLUMN revoked_at TYPE timestamptz USING to_timestamp(revoked_at / 1000.0);
ALTER TABLE api_keys RENAME COLUMN last_used_ms TO last_used_at;
ALTER TABLE api_keys ALTER COLUMN last_used_at TYPE timestamptz USING to_timestamp(last_used_at / 1000.0);

ALTER TABLE jobs RENAME COLUMN created_ms TO created_at;
ALTER TABLE jobs ALTER COLUMN created_at TYPE timestamptz USING to_timestamp(created_at / 1000.0);
ALTER TABLE jobs RENAME COLUMN updated_ms TO updated_at;
ALTER TABLE jobs ALTER COLUMN updated_at TYPE timestamptz USING to_timestamp(updated_at / 1000.0);

ALTER TABLE job_events RENAME COLUMN created_ms TO created_at;
ALTER TABLE job_events ALTER COLUMN created_at TYPE timestamptz USING to_timestamp(created_at / 1000.0);

ALTER TABLE ledger RENAME COLUMN created_ms TO created_at;
ALTER TABLE ledger ALTER COLUMN created_at TYPE timestamptz USING to_timestamp(created_at / 1000.0);

ALTER TABLE brand_markers RENAME COLUMN expires_ms TO expires_at;
ALTER TABLE brand_markers ALTER COLUMN expires_at TYPE timestamptz USING to_timestamp(expires_at / 1000.0);

-- Leased execution (ARCHITECTURE.md, "Leases"): expiry on the database's clock, so replicas with
-- skewed clocks agree on when a lease is free.
ALTER TABLE jobs ADD COLUMN lease_owner text;
ALTER TABLE jobs ADD COLUMN lease_token bigint NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_expires_at timestamptz NOT NULL DEFAULT '-infinity';
CREATE INDEX jobs_runnable ON jobs (updated_at)
    WHERE state IN ('QUEUED', 'PLANNING', 'RENDERING', 'QUALITY_CHECK');
CREATE INDEX jobs_by_lease_owner ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;
