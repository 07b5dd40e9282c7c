"""Observability: Prometheus metrics, health and readiness probes, heartbeats, and the
figures ``tidings status`` shows (docs/operations.md)."""
