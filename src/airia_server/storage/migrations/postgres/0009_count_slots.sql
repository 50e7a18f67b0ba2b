-- The feed's counters (0007) were one row per tenant and one per user, updated by every
-- insert and delete. Concurrent creates for one tenant all wrote that row, so each waited
-- for the previous one's commit (and its fsync) to take the row lock, and every update
-- left a dead version for the next to step over: creates ran one at a time, with
-- PostgreSQL spending about three times the CPU of the insert itself.
--
-- Each counter is now spread over up to 32 rows (slots); a transaction adds to the slot
-- of its connection's backend, so concurrent connections write different rows and never
-- wait for each other. A count is the sum of its slots.
ALTER TABLE tenant_conversation_counts ADD COLUMN slot SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE tenant_conversation_counts DROP CONSTRAINT tenant_conversation_counts_pkey;
ALTER TABLE tenant_conversation_counts ADD PRIMARY KEY (tenant_id, slot);

ALTER TABLE participant_counts ADD COLUMN slot SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE participant_counts DROP CONSTRAINT participant_counts_pkey;
ALTER TABLE participant_counts ADD PRIMARY KEY (tenant_id, user_id, slot);

CREATE OR REPLACE FUNCTION airia_count_conversations() RETURNS trigger AS $$
BEGIN
    INSERT INTO tenant_conversation_counts AS t (tenant_id, slot, count)
        VALUES (CASE WHEN TG_OP = 'INSERT' THEN NEW.tenant_id ELSE OLD.tenant_id END,
                pg_backend_pid() % 32,
                CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END)
        ON CONFLICT (tenant_id, slot) DO UPDATE SET count = t.count + EXCLUDED.count;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION airia_count_participants() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO participant_counts AS p (tenant_id, user_id, slot, count)
            VALUES (NEW.tenant_id, NEW.user_id, pg_backend_pid() % 32, 1)
            ON CONFLICT (tenant_id, user_id, slot) DO UPDATE SET count = p.count + 1;
    ELSE
        INSERT INTO participant_counts AS p (tenant_id, user_id, slot, count)
            VALUES (OLD.tenant_id, OLD.user_id, pg_backend_pid() % 32, -1)
            ON CONFLICT (tenant_id, user_id, slot) DO UPDATE SET count = p.count - 1;
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
