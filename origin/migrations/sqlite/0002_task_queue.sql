-- Durable task queue: one row per task; state machine queued -> running -> done,
-- or back to queued with a later run_at (retry), or dead after max_attempts.
-- Times are BIGINT Unix milliseconds, as everywhere in the origin.
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'dead')),
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at BIGINT NOT NULL,
    lease_until BIGINT,
    worker_id TEXT,
    idempotency_key TEXT,
    last_error TEXT,
    errors TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);

-- The claim walks this index: queued tasks of one queue, due first.
CREATE INDEX tasks_claim ON tasks (state, queue, priority DESC, run_at, id);
-- The sweep finds expired leases; the prune finds old finished tasks.
CREATE INDEX tasks_lease ON tasks (lease_until) WHERE state = 'running';
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE state = 'done';
-- At most one live task per idempotency key; a finished key may be enqueued again.
CREATE UNIQUE INDEX tasks_live_key ON tasks (idempotency_key)
    WHERE state IN ('queued', 'running');

-- What the autobot decided for each inbound message: a reply (with the outbound message it
-- stored) or a skip with its reason. The primary key makes a re-run of the task a no-op.
CREATE TABLE ai_replies (
    inbound_message_id BIGINT PRIMARY KEY,
    outbound_message_id BIGINT,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Autobot settings per office. working_hours is a JSON object from weekday
-- ("mon".."sun") to a list of "HH:MM-HH:MM" ranges in the office's timezone; a range whose
-- end is not after its start runs past midnight into the next day. days_off is a JSON
-- array of local dates "YYYY-MM-DD" on which the office is closed all day.
ALTER TABLE offices ADD COLUMN autobot_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE offices ADD COLUMN working_hours TEXT NOT NULL DEFAULT '{}';
ALTER TABLE offices ADD COLUMN days_off TEXT NOT NULL DEFAULT '[]';

-- The platform's id of a message: of an inbound one as the webhook gave it (a redelivered
-- webhook finds it and stores nothing twice), of an outbound one once the platform took it.
ALTER TABLE messages ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX messages_external_id ON messages (conversation_id, direction, external_id)
    WHERE external_id IS NOT NULL;
