-- Leaner task indexes: each claim and completion writes fewer index entries, and the
-- statements that pick tasks by id walk the primary key.
-- * tasks_claim holds only queued tasks (the claim's candidates) instead of every task: a
--   claim (queued -> running) and a completion (running -> done) no longer add entries to
--   it, and the claim's walk does not pass the entries of tasks that moved on.
-- * tasks_lease holds the tasks with a lease (exactly the running ones: every way out of
--   running clears lease_until). With no index on state = 'running', completing and
--   renewing by id use the primary key, not a scan of every running task.
-- * tasks_live_key holds only tasks with a key: keyless tasks add no entry on claim. The
--   enqueue's ON CONFLICT names the same predicate.
DROP INDEX tasks_claim;
CREATE INDEX tasks_claim ON tasks (queue, priority DESC, run_at, id) WHERE state = 'queued';
DROP INDEX tasks_lease;
CREATE INDEX tasks_lease ON tasks (lease_until) WHERE lease_until IS NOT NULL;
DROP INDEX tasks_live_key;
CREATE UNIQUE INDEX tasks_live_key ON tasks (idempotency_key)
    WHERE state IN ('queued', 'running') AND idempotency_key IS NOT NULL;
