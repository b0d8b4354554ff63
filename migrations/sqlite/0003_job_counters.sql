-- Per-tenant job counters, maintained in the transaction of each create and terminal transition,
-- so the limit check and GetUsage cost the same whatever the tenant's history.
CREATE TABLE tenant_job_counts (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),
    active BIGINT NOT NULL,
    total BIGINT NOT NULL
);
INSERT INTO tenant_job_counts (tenant_id, active, total)
SELECT tenant_id,
       SUM(CASE WHEN state NOT IN ('DELIVERED', 'CANCELLED', 'FAILED') THEN 1 ELSE 0 END),
       COUNT(*)
FROM jobs GROUP BY tenant_id;
