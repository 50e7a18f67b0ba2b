-- Feed totals without counting: triggers keep the number of conversations per tenant and
-- per participant current, in the same transaction as every insert and delete.
CREATE TABLE tenant_conversation_counts (
    tenant_id TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
INSERT INTO tenant_conversation_counts (tenant_id, count)
    SELECT tenant_id, count(*) FROM conversations GROUP BY tenant_id;
CREATE TRIGGER tenant_conversation_counts_insert AFTER INSERT ON conversations BEGIN
    INSERT INTO tenant_conversation_counts (tenant_id, count) VALUES (NEW.tenant_id, 1)
        ON CONFLICT (tenant_id) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER tenant_conversation_counts_delete AFTER DELETE ON conversations BEGIN
    UPDATE tenant_conversation_counts SET count = count - 1 WHERE tenant_id = OLD.tenant_id;
END;

CREATE TABLE participant_counts (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
INSERT INTO participant_counts (tenant_id, user_id, count)
    SELECT tenant_id, user_id, count(*) FROM conversation_participants
    GROUP BY tenant_id, user_id;
CREATE TRIGGER participant_counts_insert AFTER INSERT ON conversation_participants BEGIN
    INSERT INTO participant_counts (tenant_id, user_id, count)
        VALUES (NEW.tenant_id, NEW.user_id, 1)
        ON CONFLICT (tenant_id, user_id) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER participant_counts_delete AFTER DELETE ON conversation_participants BEGIN
    UPDATE participant_counts SET count = count - 1
        WHERE tenant_id = OLD.tenant_id AND user_id = OLD.user_id;
END;
