-- Conversations, their event log, API keys and server secrets.
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
    is_bookmarked INTEGER NOT NULL DEFAULT 0,
    last_execution_status TEXT,
    last_execution_id TEXT,
    message_count INTEGER NOT NULL DEFAULT 0,
    last_sequence INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX conversations_user_created ON conversations (tenant_id, user_id, created_at, id);
CREATE INDEX conversations_user_updated ON conversations (tenant_id, user_id, updated_at, id);
CREATE INDEX conversations_tenant_created ON conversations (tenant_id, created_at, id);
CREATE INDEX conversations_tenant_updated ON conversations (tenant_id, updated_at, id);

CREATE TABLE conversation_events (
    conversation_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (conversation_id, sequence)
) WITHOUT ROWID;

CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
