-- A tenant's monthly spend and usage were one row per (tenant, ledger, month), updated by every
-- commit with ledger lines and by every create and end of the tenant's jobs: the concurrent jobs
-- of a busy tenant queued on those row locks (the end-to-end bench saw about six commits waiting
-- on them at any moment). Each is now spread over stripes, a job always using the same one, and
-- readers add the stripes up.
ALTER TABLE tenant_month_spend ADD COLUMN stripe smallint NOT NULL DEFAULT 0;
ALTER TABLE tenant_month_spend DROP CONSTRAINT tenant_month_spend_pkey;
ALTER TABLE tenant_month_spend ADD PRIMARY KEY (tenant_id, sandbox, month_start, stripe);
ALTER TABLE tenant_month_usage ADD COLUMN stripe smallint NOT NULL DEFAULT 0;
ALTER TABLE tenant_month_usage DROP CONSTRAINT tenant_month_usage_pkey;
ALTER TABLE tenant_month_usage ADD PRIMARY KEY (tenant_id, sandbox, month_start, stripe);
