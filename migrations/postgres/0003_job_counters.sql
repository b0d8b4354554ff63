-- Per-tenant job counters, maintained in the transaction of each create and terminal transition,
-- so the limit check and GetUsage cost the same whatever the tenant's history.
CREATE TABLE tenant_job_counts (
    tenant_id text PRIMARY KEY REFERENCES tenants (id),
    active bigint NOT NULL,
    total bigint NOT NULL
);
INSERT INTO tenant_job_counts (tenant_id, active, total)
SELECT tenant_id,
       COUNT(*) FILTER (WHERE state NOT IN ('DELIVERED', 'CANCELLED', 'FAILED')),
       COUNT(*)
FROM jobs GROUP BY tenant_id;
