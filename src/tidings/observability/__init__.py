"""Observability: traces (``tracing``), log lines (``logs``), Prometheus metrics
(``metrics``), health and readiness probes, heartbeats, and the figures ``tidings status``
shows (docs/operations.md, docs/tracing.md)."""
