"""BackgroundLoop: asyncio on a thread of its own, behind a synchronous call."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from tidings import TransportError
from tidings.adapters.background_loop import BackgroundLoop


@pytest.fixture
def loop() -> Iterator[BackgroundLoop]:
    """A running loop, closed after the test."""
    background = BackgroundLoop("test-loop")
    yield background
    background.close()


def test_a_coroutine_runs_on_the_loop_thread_and_returns_its_result(
    loop: BackgroundLoop,
) -> None:
    """The caller gets the value; the work ran on the loop's thread, not the caller's."""

    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    assert loop.run(where()) == "test-loop"


def test_an_exception_of_the_coroutine_reaches_the_caller(loop: BackgroundLoop) -> None:
    """Errors cross the thread unchanged."""

    async def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        loop.run(fail())


def test_a_call_that_takes_too_long_is_cancelled_and_times_out(loop: BackgroundLoop) -> None:
    """After the timeout the coroutine is cancelled, and TimeoutError says so."""
    cancelled = threading.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError, match="did not answer within 0.05 s"):
        loop.run(hang(), timeout=0.05)
    assert cancelled.wait(5)


def test_a_blocking_call_from_the_loop_itself_is_refused(loop: BackgroundLoop) -> None:
    """Waiting on the loop from its own thread would deadlock; it raises instead."""

    async def nested() -> None:
        loop.run(asyncio.sleep(0))

    with pytest.raises(TransportError, match="on its own loop"):
        loop.run(nested())


def test_close_cancels_leftover_tasks_and_later_calls_fail() -> None:
    """Leftover tasks are cancelled, a closed loop refuses work, and closing twice is fine."""
    background = BackgroundLoop("closing")
    stopped = threading.Event()

    async def start_forever() -> None:
        async def forever() -> None:
            try:
                await asyncio.sleep(60)
            finally:
                stopped.set()

        asyncio.get_running_loop().create_task(forever())

    background.run(start_forever())
    background.close()
    background.close()
    assert stopped.is_set()
    with pytest.raises(TransportError, match="closed"):
        background.run(asyncio.sleep(0))
