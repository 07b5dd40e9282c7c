"""The metrics port of a worker: ``/metrics`` (Prometheus), ``/healthz`` (the process
runs) and ``/readyz`` (its database and broker answer, its lanes are held), served by a
small HTTP server in a daemon thread."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from tidings.observability.readiness import Check


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._answer(200, b"ok\n")
        elif path == "/readyz":
            # The first problem is the answer: a database that does not answer would
            # make each later check wait for its connection timeout as well.
            problem = next((p for p in (check() for check in self.server.checks) if p), None)
            if problem:
                self._answer(503, f"not ready: {problem}\n".encode())
            else:
                self._answer(200, b"ready\n")
        else:
            self._answer(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _answer(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with suppress(BrokenPipeError, ConnectionResetError):  # the prober gave up waiting
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the worker's output: keep quiet."""


class MetricsServer(ThreadingHTTPServer):
    """Serves a registry and readiness checks on ``host:port`` until ``close``."""

    daemon_threads = True

    def __init__(
        self, port: int, registry: CollectorRegistry, checks: Sequence[Check], host: str = ""
    ) -> None:
        super().__init__((host, port), _Handler)
        self.registry, self.checks = registry, list(checks)
        self._thread = threading.Thread(target=self.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port."""
        self.shutdown()
        self.server_close()
