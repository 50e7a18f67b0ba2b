-- Until this release, a conversation deleted on PostgreSQL while other writes to it
-- were under way could leave rows of it behind: messages and events, participants
-- (counted in their users' feeds), read positions, external identities (whose
-- threads could then never be mapped again) and attachments (docs/reliability.md,
-- defect 10). They belong to no conversation, and go here; removing participants
-- corrects the feed counts through their triggers, and the blob sweep deletes bytes
-- no attachment references. SQLite's single writer never left any: there the same
-- statements find nothing to delete.
DELETE FROM messages
WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.id = messages.conversation_id);
DELETE FROM conversation_events
WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.id = conversation_events.conversation_id);
DELETE FROM conversation_participants
WHERE NOT EXISTS (
    SELECT 1 FROM conversations c WHERE c.id = conversation_participants.conversation_id
);
DELETE FROM conversation_reads
WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.id = conversation_reads.conversation_id);
DELETE FROM external_identities
WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.id = external_identities.conversation_id);
DELETE FROM attachments
WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.id = attachments.conversation_id);
