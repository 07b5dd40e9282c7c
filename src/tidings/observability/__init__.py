"""Observability: traces (``tracing``), log lines (``logs``), metrics and health checks."""
