-- Spend per tenant, ledger and month of the ledger line (budgets and usage read one row).
CREATE TABLE tenant_month_spend (
    tenant_id text NOT NULL REFERENCES tenants (id),
    sandbox boolean NOT NULL,
    month_start timestamptz NOT NULL,
    billable bigint NOT NULL,
    metered bigint NOT NULL,
    PRIMARY KEY (tenant_id, sandbox, month_start)
);
INSERT INTO tenant_month_spend
SELECT tenant_id, sandbox,
       date_trunc('month', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       COALESCE(SUM(amount) FILTER (WHERE succeeded), 0)::bigint,
       COALESCE(SUM(amount), 0)::bigint
FROM ledger
GROUP BY 1, 2, 3;
