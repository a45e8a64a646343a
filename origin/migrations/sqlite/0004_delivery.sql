-- No blind resend after a crash. A send records its attempt on the message before the
-- platform request (send_attempted_at) and clears it once the outcome is known; a task that
-- finds it set ran before and may have reached the platform, so it waits in the new task
-- state 'delivery_unknown' for an operator (`queue retry ID` sends again, `queue mark-sent
-- ID` records it as sent) instead of sending a second copy.
ALTER TABLE messages ADD COLUMN send_attempted_at BIGINT;

-- SQLite cannot change a CHECK constraint in place: the tasks table is rebuilt with the
-- same columns, rows, id sequence and indexes.
CREATE TABLE tasks_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'done', 'dead', 'delivery_unknown')),
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
INSERT INTO tasks_new (id, queue, kind, payload, state, priority, attempts, max_attempts,
    run_at, lease_until, worker_id, idempotency_key, last_error, errors, created_at,
    started_at, finished_at)
SELECT id, queue, kind, payload, state, priority, attempts, max_attempts, run_at,
    lease_until, worker_id, idempotency_key, last_error, errors, created_at, started_at,
    finished_at FROM tasks;
-- Ids of pruned tasks are not handed out again.
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'tasks_new', seq FROM sqlite_sequence WHERE name = 'tasks'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'tasks_new');
UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'tasks'))
    WHERE name = 'tasks_new' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'tasks');
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;
CREATE INDEX tasks_claim ON tasks (state, queue, priority DESC, run_at, id);
CREATE INDEX tasks_lease ON tasks (lease_until) WHERE state = 'running';
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE state = 'done';
CREATE UNIQUE INDEX tasks_live_key ON tasks (idempotency_key)
    WHERE state IN ('queued', 'running');
