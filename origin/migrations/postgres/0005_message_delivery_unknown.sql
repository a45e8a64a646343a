-- A send whose delivery is unknown shows so on its message too: delivery_status gains
-- 'delivery_unknown', set in the same transaction that parks the send_message task (the
-- trigger below), back to 'pending' on `queue retry ID`, 'sent' on `queue mark-sent ID`.
ALTER TABLE messages DROP CONSTRAINT messages_delivery_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_delivery_status_check
    CHECK (delivery_status IN ('pending', 'sent', 'delivered', 'read', 'failed', 'received',
        'delivery_unknown'));

-- Parking a send (the queue engine's UPDATE of the task) marks its message in the same
-- transaction; a message already sent keeps its status.
CREATE FUNCTION tasks_send_delivery_unknown() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE messages SET delivery_status = 'delivery_unknown'
    WHERE id = (NEW.payload::jsonb ->> 'message_id')::bigint
        AND delivery_status IN ('pending', 'failed');
    RETURN NULL;
END;
$$;
CREATE TRIGGER tasks_send_delivery_unknown AFTER UPDATE OF state ON tasks
FOR EACH ROW
WHEN (NEW.state = 'delivery_unknown' AND OLD.state <> 'delivery_unknown'
    AND NEW.kind = 'send_message')
EXECUTE FUNCTION tasks_send_delivery_unknown();
