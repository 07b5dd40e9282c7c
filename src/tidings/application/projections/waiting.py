"""Read-your-writes: wait until a projection has applied a unit of work's position.

A unit of work that wrote events knows, after its commit, the global position of its
last one (``uow.position``, the consistency token). A projection's checkpoint is the
last position its read model holds, and the runner reads the log gap-free, so once the
checkpoint reaches the token, every event up to it (this write's included) is in the
read model.

The wait reads the checkpoint (a one-row read, which takes no write lock), and sleeps
between looks on ``Progress``: runners in this process wake it as soon as they commit a
batch; a runner in another process is seen by a short poll of the checkpoint, from 5 ms
doubling up to ``poll``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from tidings.domain.projection_state import PAUSED, RUNNING, Checkpoint
from tidings.errors import ProjectionError, ProjectionTimeoutError

STREAM = "stream"
"""The state of a projection fed by a broker stream (see ``from_stream``)."""

ReadCheckpoint = Callable[[str], Checkpoint | None]
"""The stored checkpoint of a projection by name, or None when it has none."""

FIRST_LOOK = 0.005  # seconds before the second look; doubled up to the wait's ``poll``


class Progress:
    """A wake-up for waiters: the runners of one store, in this process, call ``moved``
    after each batch they commit."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._moves = 0

    @property
    def moves(self) -> int:
        """How many batches have been committed so far (read it before looking)."""
        with self._changed:
            return self._moves

    def moved(self) -> None:
        """A checkpoint moved: wake every waiter."""
        with self._changed:
            self._moves += 1
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Return when a batch was committed after ``seen`` moves, or after ``timeout``."""
        with self._changed:
            self._changed.wait_for(lambda: self._moves != seen, timeout)


def wait_for(
    read: ReadCheckpoint,
    progress: Progress,
    token: int | None,
    projection: str,
    timeout: float,
    *,
    poll: float = 0.1,
) -> int:
    """Block until ``projection`` has applied position ``token``; return its position.

    A token of None (the unit of work wrote no event) or 0 returns at once. When
    ``timeout`` seconds pass first, raise ``ProjectionTimeoutError`` naming where the
    projection stands and, when it is paused or has no runner, why."""
    if token is None:
        return 0
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise ProjectionError(
            f"a consistency token is a global position, an int >= 0 (uow.position after "
            f"the commit), or another service's '<source>:<position>', not {token!r}"
        )
    if not (isinstance(timeout, int | float) and timeout > 0 and math.isfinite(timeout)):
        raise ProjectionError(f"timeout is in seconds and must be above 0 (got {timeout!r})")
    deadline = time.monotonic() + timeout
    pause = FIRST_LOOK
    while True:
        seen = progress.moves  # before the look: a move after it is not missed
        found = read(projection)
        if found is not None and found.state == STREAM:
            raise ProjectionError(
                f"projection {projection} is fed by a broker stream, not this store's log: "
                f"wait with the writer's token '<source>:<position>' (source_token), not {token}"
            )
        if found is not None and found.position >= token:
            return found.position
        left = deadline - time.monotonic()
        if left <= 0:
            raise _timed_out(found, projection, token, timeout)
        progress.wait(seen, min(left, pause))
        pause = min(pause * 2, poll)


def _timed_out(
    found: Checkpoint | None, projection: str, token: int, timeout: float
) -> ProjectionTimeoutError:
    """The error of a wait that ran out, saying where the projection stands and why."""
    head = f"projection {projection} has not applied position {token} within {timeout:g} s"
    if found is None:
        return ProjectionTimeoutError(
            f"{head}: it has no checkpoint in this store, so no runner has started it. "
            "Check the name, and run it (tidings projections run, or store.projections)",
            projection=projection,
            token=token,
            position=0,
            state="missing",
        )
    where = f"{found.state} at position {found.position}"
    if found.state == PAUSED:
        error = found.error.splitlines()[0] if found.error else "an error"
        why = (
            f"it is {where}, on the event at position {found.failed_position} "
            f"({found.failed_event_id}, {found.failed_event_type}): {error}. Fix the handler, "
            f"then: tidings projections retry {projection} (or skip {projection} "
            f"--position {found.failed_position})"
        )
    elif found.state == RUNNING:
        why = f"it is {where}, {token - found.position} events short of the token"
    else:
        why = f"it is {where}: is its runner running? (tidings projections status)"
    return ProjectionTimeoutError(
        f"{head}: {why}",
        projection=projection,
        token=token,
        position=found.position,
        state=found.state,
    )
