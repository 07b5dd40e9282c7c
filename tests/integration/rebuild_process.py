"""The projection the rebuild SIGKILL tests rebuild with ``tidings projections rebuild``:
version 2 of ``projection_process.totals`` (the same handlers), slowed a little so that a
kill lands in the middle of the rebuild."""

from __future__ import annotations

from dataclasses import replace

from .projection_process import totals

PROJECTIONS = [replace(totals("rbcrash", 0.001), version=2)]
