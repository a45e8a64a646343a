-- The ops console under /console/: paused queues and worker heartbeats (the queue engine's
-- tables, also in queue/schema/), console sessions and the audit of console actions.
-- Times are BIGINT Unix milliseconds.

-- A queue with a row here is paused: workers claim nothing from it until it is resumed.
CREATE TABLE queue_pauses (
    queue TEXT PRIMARY KEY,
    paused_at BIGINT NOT NULL,
    -- Who paused it (the console names the key).
    paused_by TEXT NOT NULL
);

-- One row per running worker process, written at every heartbeat and deleted when it
-- stops; a row whose heartbeat is old is a worker that died.
CREATE TABLE queue_workers (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    -- Most tasks it runs at once ([queue] worker_concurrency).
    concurrency BIGINT NOT NULL
);

-- A console login: the cookie holds a random token, this table its sha256. The session
-- acts with the key it logged in with, while that key is live.
CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    api_key_id BIGINT NOT NULL REFERENCES api_keys (id),
    -- The form token every POST of this session must carry.
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- Every console action: who (key id and name), what, when, on which queue or task.
-- A bulk action writes one row per task it changed.
CREATE TABLE console_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    api_key_id BIGINT NOT NULL,
    key_name TEXT NOT NULL,
    action TEXT NOT NULL,
    queue TEXT,
    task_id BIGINT,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX console_audit_task ON console_audit (task_id, at);
CREATE INDEX console_audit_at ON console_audit (at);
