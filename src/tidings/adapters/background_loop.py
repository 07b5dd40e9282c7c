"""One asyncio event loop on a thread of its own, behind a synchronous call.

nats-py is asyncio only, while the public API of tidings is synchronous. Each NATS
adapter owns one ``BackgroundLoop``: its coroutines run on the loop's thread, so the
client's state is touched by that one thread only, and callers on any thread wait for
the result. One copy of the logic, no sync twin. (The RabbitMQ adapters need none: pika
runs in the caller's thread, ``pika_confirms``.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from tidings.errors import TransportError

T = TypeVar("T")


class BackgroundLoop:
    """An event loop running in a daemon thread until ``close()``."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the loop and wait for its result (or its exception).

        After ``timeout`` seconds the coroutine is cancelled and ``TimeoutError`` raised.
        """
        if self._closed:
            coroutine.close()
            raise TransportError("this broker adapter is closed: create a new one")
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise TransportError("a broker adapter's blocking call was made on its own loop")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the broker did not answer within {timeout} s") from None

    def close(self) -> None:
        """Stop the loop, finish its leftover tasks, and join the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        """Cancel what the clients left running, so no task is destroyed while pending."""
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        if tasks:
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()
