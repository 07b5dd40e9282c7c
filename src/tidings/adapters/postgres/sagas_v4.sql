-- tidings sagas part, version 3 to 4 (PostgreSQL): the trace context a saga was started in.

-- trace_context: the W3C traceparent (and tracestate) of the context that started
-- the saga, as JSON, so the steps a worker runs later join that trace. Rows of version 3
-- take '': their steps' spans keep the current span, or start a trace, as before.
ALTER TABLE {sagas} ADD COLUMN trace_context TEXT NOT NULL DEFAULT '';
