-- tidings sagas part, version 1 to 2 (SQLite): deadlines and remote steps.

-- deadline_at: the saga's deadline; step_deadline_at: the current try's (0: none).
-- waiting: "step:phase" while a command of that step is out and unanswered. unanswered:
-- steps whose command was never answered (a JSON list), compensated as if they had
-- succeeded. correlation_id: the conversation of the saga's messages. Rows of version 1
-- take the defaults: no deadlines, waiting for no reply.
ALTER TABLE {sagas} ADD COLUMN deadline_at DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE {sagas} ADD COLUMN step_deadline_at DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE {sagas} ADD COLUMN waiting TEXT NOT NULL DEFAULT '';
ALTER TABLE {sagas} ADD COLUMN unanswered TEXT NOT NULL DEFAULT '[]';
ALTER TABLE {sagas} ADD COLUMN correlation_id TEXT NOT NULL DEFAULT '';
