-- Spend per tenant, ledger and month of the ledger line (budgets and usage read one row).
CREATE TABLE tenant_month_spend (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    sandbox BIGINT NOT NULL,
    month_start_ms BIGINT NOT NULL,
    billable BIGINT NOT NULL,
    metered BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, sandbox, month_start_ms)
);
INSERT INTO tenant_month_spend
SELECT tenant_id, sandbox,
       CAST(strftime('%s', date(created_ms / 1000, 'unixepoch', 'start of month')) AS INTEGER) * 1000,
       SUM(CASE WHEN succeeded = 1 THEN amount ELSE 0 END),
       SUM(amount)
FROM ledger
GROUP BY 1, 2, 3;
