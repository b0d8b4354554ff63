-- Month-to-date usage per tenant and ledger (live/sandbox), by the month each job was created in:
-- maintained in the transaction of each create and each job's end, so GetUsage reads one row
-- (plus the tenant's unfinished jobs) whatever the month's volume.
CREATE TABLE tenant_month_usage (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    sandbox BIGINT NOT NULL,
    month_start_ms BIGINT NOT NULL,
    jobs BIGINT NOT NULL,
    certified_jobs BIGINT NOT NULL,
    billed BIGINT NOT NULL,
    delivered_seconds BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, sandbox, month_start_ms)
);
INSERT INTO tenant_month_usage
SELECT tenant_id,
       json_extract(doc, '$.sandbox'),
       CAST(strftime('%s', date(created_ms / 1000, 'unixepoch', 'start of month')) AS INTEGER) * 1000,
       COUNT(*),
       SUM(CASE WHEN state IN ('DELIVERED', 'CANCELLED', 'FAILED') THEN 1 ELSE 0 END),
       SUM(CASE WHEN state IN ('DELIVERED', 'CANCELLED', 'FAILED') THEN COALESCE(json_extract(doc, '$.billed'), 0) ELSE 0 END),
       SUM(CASE WHEN state = 'DELIVERED' THEN json_extract(doc, '$.spec.duration_s') ELSE 0 END)
FROM jobs
GROUP BY 1, 2, 3;
CREATE INDEX jobs_by_tenant_state ON jobs (tenant_id, state);
