-- Month-to-date usage per tenant and ledger (live/sandbox), by the month each job was created in:
-- maintained in the transaction of each create and each job's end, so GetUsage reads one row
-- (plus the tenant's unfinished jobs) whatever the month's volume.
CREATE TABLE tenant_month_usage (
    tenant_id text NOT NULL REFERENCES tenants (id),
    sandbox boolean NOT NULL,
    month_start timestamptz NOT NULL,
    jobs bigint NOT NULL,
    certified_jobs bigint NOT NULL,
    billed bigint NOT NULL,
    delivered_seconds bigint NOT NULL,
    PRIMARY KEY (tenant_id, sandbox, month_start)
);
INSERT INTO tenant_month_usage
SELECT tenant_id,
       (doc ->> 'sandbox')::boolean,
       date_trunc('month', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       COUNT(*),
       COUNT(*) FILTER (WHERE state IN ('DELIVERED', 'CANCELLED', 'FAILED')),
       COALESCE(SUM((doc ->> 'billed')::bigint) FILTER (WHERE state IN ('DELIVERED', 'CANCELLED', 'FAILED')), 0),
       COALESCE(SUM((doc -> 'spec' ->> 'duration_s')::bigint) FILTER (WHERE state = 'DELIVERED'), 0)
FROM jobs
GROUP BY 1, 2, 3;
CREATE INDEX jobs_by_tenant_state ON jobs (tenant_id, state);
