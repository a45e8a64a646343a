-- A send whose delivery is unknown shows so on its message too: delivery_status gains
-- 'delivery_unknown', set in the same transaction that parks the send_message task (the
-- trigger below), back to 'pending' on `queue retry ID`, 'sent' on `queue mark-sent ID`.

-- SQLite cannot change a CHECK constraint in place: messages is rebuilt with the same
-- columns (0001 and 0004's ALTERs), rows, ids and indexes. message_media is the only table
-- that references messages: its rows are set aside and put back around the swap, so no
-- foreign key ever points at a missing message (with foreign keys on, DROP TABLE deletes
-- the rows first, and a deferred violation would count until commit).
PRAGMA defer_foreign_keys = ON;

CREATE TABLE messages_new (
    id INTEGER PRIMARY KEY,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id),
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    text TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    read_at BIGINT,
    delivery_status TEXT NOT NULL DEFAULT 'pending'
        CHECK (delivery_status IN ('pending', 'sent', 'delivered', 'read', 'failed', 'received',
            'delivery_unknown')),
    external_id TEXT,
    send_attempted_at BIGINT
);
INSERT INTO messages_new (id, conversation_id, direction, text, created_at, read_at,
    delivery_status, external_id, send_attempted_at)
SELECT id, conversation_id, direction, text, created_at, read_at, delivery_status,
    external_id, send_attempted_at FROM messages;

CREATE TABLE message_media_keep (
    message_id BIGINT NOT NULL,
    media_id BIGINT NOT NULL,
    position BIGINT NOT NULL
);
INSERT INTO message_media_keep (message_id, media_id, position)
    SELECT message_id, media_id, position FROM message_media;
DELETE FROM message_media;

DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE INDEX messages_conversation_time
    ON messages (conversation_id, created_at DESC, id DESC);
CREATE INDEX messages_unread ON messages (conversation_id)
    WHERE read_at IS NULL AND direction = 'in';
CREATE UNIQUE INDEX messages_external_id ON messages (conversation_id, direction, external_id)
    WHERE external_id IS NOT NULL;

INSERT INTO message_media (message_id, media_id, position)
    SELECT message_id, media_id, position FROM message_media_keep;
DROP TABLE message_media_keep;

-- Parking a send (the queue engine's UPDATE of the task) marks its message in the same
-- statement's transaction; a message already sent keeps its status.
CREATE TRIGGER tasks_send_delivery_unknown AFTER UPDATE OF state ON tasks
WHEN new.state = 'delivery_unknown' AND old.state <> 'delivery_unknown'
    AND new.kind = 'send_message'
BEGIN
    UPDATE messages SET delivery_status = 'delivery_unknown'
    WHERE id = json_extract(new.payload, '$.message_id')
        AND delivery_status IN ('pending', 'failed');
END;
