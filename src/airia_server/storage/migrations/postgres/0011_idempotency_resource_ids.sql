-- An idempotency key names the resource its request creates (a conversation, message or
-- attachment id, minted when the key is claimed): a retry after the server died between
-- the write and the key's finish finds that resource instead of creating a second one.
ALTER TABLE idempotency_keys ADD COLUMN resource_id TEXT;
-- Deleting a resource finds the unfinished keys that may name it: few, in-flight ones.
CREATE INDEX idempotency_keys_unfinished ON idempotency_keys (tenant_id) WHERE status IS NULL;
