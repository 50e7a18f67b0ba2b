-- Messages, participants with roles, and per-user read positions.
ALTER TABLE conversations ADD COLUMN message_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE messages (
    conversation_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    id TEXT NOT NULL,
    user_id TEXT,
    role TEXT NOT NULL,
    message TEXT,
    images TEXT,
    image_attachment_ids TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (conversation_id, position)
);
CREATE UNIQUE INDEX messages_id ON messages (id);

CREATE TABLE conversation_participants (
    conversation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    role TEXT NOT NULL,
    shared_at TEXT NOT NULL,
    shared_by_user_id TEXT,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX participants_user ON conversation_participants (tenant_id, user_id, conversation_id);

CREATE TABLE conversation_reads (
    conversation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    read_at TEXT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);

INSERT INTO conversation_participants
    (conversation_id, user_id, id, tenant_id, role, shared_at, shared_by_user_id)
SELECT id, user_id, id, tenant_id, 'Owner', created_at, user_id FROM conversations;

DROP INDEX conversations_user_created;
DROP INDEX conversations_user_updated;

-- Title search (the feed's `filter`) through a trigram index, not a scan.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX conversations_title_trgm ON conversations USING gin (title gin_trgm_ops);
