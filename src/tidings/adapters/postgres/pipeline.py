"""Pipeline mode for a block of statements: sent without waiting for each result.

A consumer's batch runs one small statement per message (the handler's write). Waiting for
each result costs a round trip to the server, which on a busy machine is a context switch
either way; in psycopg's pipeline mode the statements stream out and the results are read
when someone needs them. Two things change for code running in the block, and this
module keeps both from showing:

- psycopg fetches a pipelined statement's rows on demand, but ``rowcount``,
  ``description`` and ``statusmessage`` stay empty until the pipeline syncs. Cursors made
  in the block (``execute`` and the connection's own ``cursor()``/``execute()``) read
  them after syncing, so ``if cursor.rowcount == 0: ...`` behaves as without a pipeline.
- A failing statement raises when its result is read, or at the latest when the block
  ends, not where it was sent. The inbox processor therefore redoes a batch whose pass
  met a database error statement by statement (see ``InboxProcessor``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import psycopg


class PipelinedCursor(psycopg.Cursor[Any]):
    """A cursor whose statement may still be in the pipeline: reading its outcome first
    waits for the pipeline, as fetching its rows does."""

    pipeline: ClassVar[psycopg.Pipeline | None] = None

    def _wait(self) -> None:
        if self.pgresult is None and self.pipeline is not None:
            self.pipeline.sync()

    @property
    def rowcount(self) -> int:
        """Rows the statement touched (after waiting for it)."""
        self._wait()
        return super().rowcount

    @property
    def description(self) -> list[psycopg.Column] | None:
        """The result's columns (after waiting for it)."""
        self._wait()
        return super().description

    @property
    def statusmessage(self) -> str | None:
        """The server's status of the statement (after waiting for it)."""
        self._wait()
        return super().statusmessage


@contextmanager
def pipelined(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Run the block in pipeline mode, its cursors made by ``PipelinedCursor``."""
    with conn.pipeline() as pipeline:
        cursors = type("PipelinedCursor", (PipelinedCursor,), {"pipeline": pipeline})
        factory = conn.cursor_factory
        conn.cursor_factory = cursors
        try:
            yield
        finally:
            conn.cursor_factory = factory
