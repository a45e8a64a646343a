-- A parked send's message is marked delivery_unknown by the send task's own code now: the
-- queue engine runs the kind's on_parked hook in the transaction that parks the task, so
-- the trigger of 0005 (which did the same from the database) goes. The status value and
-- its CHECK stay as 0005 made them.
DROP TRIGGER IF EXISTS tasks_send_delivery_unknown;
