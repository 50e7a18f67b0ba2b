-- Truncation now takes the deleted messages' content out of the event log (their
-- `message.created` events keep ids, authors and times). This does the same for
-- messages truncated before: an event whose message no longer exists loses its
-- text, images and attachment references. (A deleted conversation's events went
-- with it.)
UPDATE conversation_events
SET data = (data::jsonb || '{"message": null, "images": null, "imageAttachmentIds": null}'::jsonb)::text
WHERE type = 'message.created'
  AND NOT EXISTS (
    SELECT 1 FROM messages WHERE messages.id = conversation_events.data::json ->> 'id'
  );
