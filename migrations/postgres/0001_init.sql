-- AIPROD schema. Timestamps are unix milliseconds; money is micro-USD; documents are JSON text.
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    base_tier TEXT NOT NULL,
    monthly_budget BIGINT,
    trial_tier TEXT,
    trial_end_ms BIGINT,
    job_quota BIGINT,
    created_ms BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    mode TEXT NOT NULL,
    prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    revoked_ms BIGINT,
    last_used_ms BIGINT
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_ms);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    request_id TEXT NOT NULL,
    state TEXT NOT NULL,
    preset_id TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (tenant_id, request_id)
);
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, id);
CREATE INDEX jobs_by_state ON jobs (state);

CREATE TABLE job_labels (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    label_key TEXT NOT NULL,
    label_value TEXT NOT NULL,
    PRIMARY KEY (job_id, label_key)
);
CREATE INDEX job_labels_by_value ON job_labels (label_key, label_value);

CREATE TABLE job_events (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    seq BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE ledger (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    line_no BIGINT NOT NULL,
    tenant_id TEXT NOT NULL,
    sandbox BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    succeeded BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (job_id, line_no)
);
CREATE INDEX ledger_by_tenant ON ledger (tenant_id, created_ms);

CREATE TABLE brand_markers (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    brand_id TEXT NOT NULL,
    doc TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, brand_id)
);

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
