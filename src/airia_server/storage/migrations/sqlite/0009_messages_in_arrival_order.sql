-- Messages too: the table was clustered by (conversation_id, position), so an
-- append landed in the middle of the B-tree, about two pages per message once
-- splits rebalanced the neighbours. New rows now go at the end of the table (its
-- rowid), and a unique index finds a conversation's messages by position. Rows
-- already stored are copied in conversation order, so they stay together.
CREATE TABLE messages_by_arrival (
    conversation_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    id TEXT NOT NULL,
    user_id TEXT,
    role TEXT NOT NULL,
    message TEXT,
    images TEXT,
    image_attachment_ids TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
INSERT INTO messages_by_arrival
    (conversation_id, position, id, user_id, role, message, images, image_attachment_ids,
     created_at, updated_at)
    SELECT conversation_id, position, id, user_id, role, message, images, image_attachment_ids,
           created_at, updated_at
    FROM messages ORDER BY conversation_id, position;
DROP TABLE messages;
ALTER TABLE messages_by_arrival RENAME TO messages;
CREATE UNIQUE INDEX messages_position ON messages (conversation_id, position);
CREATE UNIQUE INDEX messages_id ON messages (id);
