-- The queue engine's tables, as of today, for an application to apply in a migration of its
-- own (komora_queue::schema). One row per task; state machine queued -> running -> done,
-- or back to queued with a later run_at (retry), or dead after max_attempts; a run that may
-- have had its effect waits as delivery_unknown. Times are BIGINT Unix milliseconds.
-- The origin's history creates the same tables in its own migrations (0002, 0004, 0006).
CREATE TABLE tasks (
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

-- The claim walks this index: queued tasks of one queue, due first.
CREATE INDEX tasks_claim ON tasks (state, queue, priority DESC, run_at, id);
-- The sweep finds expired leases; the prune finds old finished tasks.
CREATE INDEX tasks_lease ON tasks (lease_until) WHERE state = 'running';
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE state = 'done';
-- At most one live task per idempotency key; a finished key may be enqueued again.
CREATE UNIQUE INDEX tasks_live_key ON tasks (idempotency_key)
    WHERE state IN ('queued', 'running');

-- A queue with a row here is paused: claims skip it until it is resumed.
CREATE TABLE queue_pauses (
    queue TEXT PRIMARY KEY,
    paused_at BIGINT NOT NULL,
    paused_by TEXT NOT NULL
);

-- One row per running worker, written at every heartbeat, deleted when it stops.
CREATE TABLE queue_workers (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    concurrency BIGINT NOT NULL
);
