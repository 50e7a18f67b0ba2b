-- The event log is written far more than it is read, and each conversation's events
-- used to sit together in the table's own order: every append landed in the middle of
-- the B-tree, where a full page splits and rewrites its neighbours (about three pages
-- per event). Rows now go in arrival order at the end of the table, and a small index
-- finds a conversation's events by sequence (and keeps each sequence unique).
CREATE TABLE conversation_events_by_arrival (
    id INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL
);
INSERT INTO conversation_events_by_arrival (conversation_id, sequence, type, data, created_at)
    SELECT conversation_id, sequence, type, data, created_at FROM conversation_events
    ORDER BY created_at, conversation_id, sequence;
DROP TABLE conversation_events;
ALTER TABLE conversation_events_by_arrival RENAME TO conversation_events;
CREATE UNIQUE INDEX conversation_events_sequence ON conversation_events (conversation_id, sequence);
