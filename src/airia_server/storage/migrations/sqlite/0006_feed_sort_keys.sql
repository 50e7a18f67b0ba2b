-- A user's feed reads their participant rows in order, off an index: each row carries a
-- copy of its conversation's updated_at and created_at, kept current by every write.
ALTER TABLE conversation_participants ADD COLUMN conv_updated_at TEXT NOT NULL DEFAULT '';
ALTER TABLE conversation_participants ADD COLUMN conv_created_at TEXT NOT NULL DEFAULT '';
UPDATE conversation_participants SET
    conv_updated_at = (SELECT c.updated_at FROM conversations c
                       WHERE c.id = conversation_participants.conversation_id),
    conv_created_at = (SELECT c.created_at FROM conversations c
                       WHERE c.id = conversation_participants.conversation_id);
CREATE INDEX participants_feed_updated
    ON conversation_participants (tenant_id, user_id, conv_updated_at, conversation_id);
CREATE INDEX participants_feed_created
    ON conversation_participants (tenant_id, user_id, conv_created_at, conversation_id);
DROP INDEX participants_user;
