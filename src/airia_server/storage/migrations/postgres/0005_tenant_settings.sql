-- Per-tenant settings: how many days untouched conversations are kept.
CREATE TABLE tenant_settings (
    tenant_id TEXT PRIMARY KEY,
    retention_days INTEGER
);
