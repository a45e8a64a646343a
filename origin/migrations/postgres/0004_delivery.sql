-- No blind resend after a crash. A send records its attempt on the message before the
-- platform request (send_attempted_at) and clears it once the outcome is known; a task that
-- finds it set ran before and may have reached the platform, so it waits in the new task
-- state 'delivery_unknown' for an operator (`queue retry ID` sends again, `queue mark-sent
-- ID` records it as sent) instead of sending a second copy.
ALTER TABLE messages ADD COLUMN send_attempted_at BIGINT;

ALTER TABLE tasks DROP CONSTRAINT tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check
    CHECK (state IN ('queued', 'running', 'done', 'dead', 'delivery_unknown'));
