-- Feed totals without counting: triggers keep the number of conversations per tenant and
-- per participant current, in the same transaction as every insert and delete.
CREATE TABLE tenant_conversation_counts (
    tenant_id TEXT PRIMARY KEY,
    count BIGINT NOT NULL
);
INSERT INTO tenant_conversation_counts (tenant_id, count)
    SELECT tenant_id, count(*) FROM conversations GROUP BY tenant_id;

CREATE TABLE participant_counts (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
INSERT INTO participant_counts (tenant_id, user_id, count)
    SELECT tenant_id, user_id, count(*) FROM conversation_participants
    GROUP BY tenant_id, user_id;

CREATE FUNCTION airia_count_conversations() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tenant_conversation_counts (tenant_id, count) VALUES (NEW.tenant_id, 1)
            ON CONFLICT (tenant_id) DO UPDATE SET count = tenant_conversation_counts.count + 1;
    ELSE
        UPDATE tenant_conversation_counts SET count = count - 1 WHERE tenant_id = OLD.tenant_id;
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER tenant_conversation_counts AFTER INSERT OR DELETE ON conversations
    FOR EACH ROW EXECUTE FUNCTION airia_count_conversations();

CREATE FUNCTION airia_count_participants() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO participant_counts (tenant_id, user_id, count)
            VALUES (NEW.tenant_id, NEW.user_id, 1)
            ON CONFLICT (tenant_id, user_id) DO UPDATE SET count = participant_counts.count + 1;
    ELSE
        UPDATE participant_counts SET count = count - 1
            WHERE tenant_id = OLD.tenant_id AND user_id = OLD.user_id;
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER participant_counts AFTER INSERT OR DELETE ON conversation_participants
    FOR EACH ROW EXECUTE FUNCTION airia_count_participants();
