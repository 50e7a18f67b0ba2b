-- The feed's counters (0007, 0009) were kept by row triggers: a create ran two of
-- them (its conversation and its Owner), each an upsert of its own, about a third of
-- what PostgreSQL spent on the create. The triggers are now per statement: they see
-- every row the statement inserted or deleted (its transition table) and add each
-- tenant's and each participant's total in one upsert, so a batch of creates made as
-- one statement pays once. The counts are the same: the rows a statement touched, in
-- its transaction, into the slot of its connection's backend. Slots are upserted in
-- key order, so two statements that share a slot take its rows in the same order.
DROP TRIGGER tenant_conversation_counts ON conversations;
DROP TRIGGER participant_counts ON conversation_participants;
DROP FUNCTION airia_count_conversations();
DROP FUNCTION airia_count_participants();

CREATE FUNCTION airia_count_conversations() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tenant_conversation_counts AS t (tenant_id, slot, count)
            SELECT tenant_id, pg_backend_pid() % 32, count(*) FROM added
            GROUP BY tenant_id ORDER BY tenant_id
            ON CONFLICT (tenant_id, slot) DO UPDATE SET count = t.count + EXCLUDED.count;
    ELSE
        INSERT INTO tenant_conversation_counts AS t (tenant_id, slot, count)
            SELECT tenant_id, pg_backend_pid() % 32, -count(*) FROM removed
            GROUP BY tenant_id ORDER BY tenant_id
            ON CONFLICT (tenant_id, slot) DO UPDATE SET count = t.count + EXCLUDED.count;
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER conversations_added AFTER INSERT ON conversations
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION airia_count_conversations();
CREATE TRIGGER conversations_removed AFTER DELETE ON conversations
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION airia_count_conversations();

CREATE FUNCTION airia_count_participants() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO participant_counts AS p (tenant_id, user_id, slot, count)
            SELECT tenant_id, user_id, pg_backend_pid() % 32, count(*) FROM added
            GROUP BY tenant_id, user_id ORDER BY tenant_id, user_id
            ON CONFLICT (tenant_id, user_id, slot) DO UPDATE SET count = p.count + EXCLUDED.count;
    ELSE
        INSERT INTO participant_counts AS p (tenant_id, user_id, slot, count)
            SELECT tenant_id, user_id, pg_backend_pid() % 32, -count(*) FROM removed
            GROUP BY tenant_id, user_id ORDER BY tenant_id, user_id
            ON CONFLICT (tenant_id, user_id, slot) DO UPDATE SET count = p.count + EXCLUDED.count;
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER participants_added AFTER INSERT ON conversation_participants
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION airia_count_participants();
CREATE TRIGGER participants_removed AFTER DELETE ON conversation_participants
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION airia_count_participants();
