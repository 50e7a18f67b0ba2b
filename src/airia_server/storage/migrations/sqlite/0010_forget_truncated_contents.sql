-- Truncation now takes the deleted messages' content out of the event log (their
-- `message.created` events keep ids, authors and times). This does the same for
-- messages truncated before: an event whose message no longer exists loses its
-- text, images and attachment references. (A deleted conversation's events went
-- with it.)
UPDATE conversation_events
SET data = json_set(data, '$.message', NULL, '$.images', NULL, '$.imageAttachmentIds', NULL)
WHERE type = 'message.created'
  AND NOT EXISTS (
    SELECT 1 FROM messages WHERE messages.id = json_extract(conversation_events.data, '$.id')
  );
