-- External identities (a Slack or Teams thread mapped to a conversation) and attachments.
CREATE TABLE external_identities (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    external_system TEXT NOT NULL,
    external_channel_id TEXT NOT NULL,
    external_thread_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (tenant_id, external_system, external_channel_id, external_thread_id)
);
CREATE INDEX external_identities_conversation ON external_identities (conversation_id);

-- Content is stored once per tenant per SHA-256; `last_used_at` keeps a blob that an
-- upload is about to reference safe from the sweep of unreferenced blobs.
CREATE TABLE blobs (
    tenant_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, sha256)
);

CREATE TABLE attachments (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    file_name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX attachments_conversation ON attachments (conversation_id, created_at);
CREATE INDEX attachments_blob ON attachments (tenant_id, sha256);

-- Blob content, for deployments where every instance must reach every file.
CREATE TABLE blob_chunks (
    tenant_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, sha256, seq)
);
