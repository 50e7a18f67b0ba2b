-- Conversations, their event log, API keys and server secrets.
-- Timestamps are fixed-width ISO 8601 UTC text, as in every backend: they sort as text
-- and leave the database exactly as the API shows them.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    title TEXT,
    deployment_id TEXT NOT NULL,
    data_source_files TEXT NOT NULL DEFAULT '{}',
    is_bookmarked BOOLEAN NOT NULL DEFAULT FALSE,
    last_execution_status TEXT,
    last_execution_id TEXT,
    message_count BIGINT NOT NULL DEFAULT 0,
    last_sequence BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX conversations_user_created ON conversations (tenant_id, user_id, created_at, id);
CREATE INDEX conversations_user_updated ON conversations (tenant_id, user_id, updated_at, id);
CREATE INDEX conversations_tenant_created ON conversations (tenant_id, created_at, id);
CREATE INDEX conversations_tenant_updated ON conversations (tenant_id, updated_at, id);

CREATE TABLE conversation_events (
    conversation_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (conversation_id, sequence)
);

CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
