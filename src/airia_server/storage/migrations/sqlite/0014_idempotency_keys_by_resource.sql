-- A create's or an upload's kept answer holds what it made (a title, the files named, a
-- file's name): deleting the conversation (a DELETE, retention, a user's erasure) must
-- take that off the server too, and finds those keys by the resource they name.
CREATE INDEX IF NOT EXISTS idempotency_keys_resource ON idempotency_keys (resource_id);
