"""The bounded queue in front of the feedback store.

Why: a slow or locked database must not make the service pile up requests. Without a bound,
every ``/feedback`` request would take a worker thread and hold its body while it waits, so a
slow store would exhaust the threads ``/search`` needs and grow memory without limit.

How: at most ``max_in_flight`` writes run in the store (in worker threads); at most
``max_waiting`` more wait for a slot on the event loop (no thread, only the parsed body), each
for at most ``wait_timeout_s``. A request beyond that, or one that waited too long, gets
:class:`WriteQueueFull`, which the route answers with 503 and ``Retry-After``; it was not
written. The counters are only touched on the event loop, so they need no lock.

The semaphore belongs to an event loop; a queue used from a new loop (a test client started
again) starts afresh, since no request of the old loop can still be waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


class WriteQueueFull(RuntimeError):
    """No write slot now: the queue is full, or the wait for a slot timed out."""


@dataclass
class WriteQueueStats:
    """What the queue saw since it was made (for tests, benchmarks and logs)."""

    admitted: int = 0
    rejected_full: int = 0
    timed_out: int = 0
    peak_in_flight: int = 0
    peak_waiting: int = 0


class WriteQueue:
    """At most ``max_in_flight`` writes at once, ``max_waiting`` waiting, ``wait_timeout_s`` each.

    Args:
        max_in_flight: writes allowed in the store at the same time (>= 1).
        max_waiting: requests allowed to wait for a slot (>= 0).
        wait_timeout_s: longest wait for a slot, in seconds (> 0).

    Example:
        >>> queue = WriteQueue(max_in_flight=1, max_waiting=0, wait_timeout_s=1.0)
        >>> async def write():
        ...     async with queue.slot():
        ...         return "written"
        >>> asyncio.run(write())
        'written'
    """

    def __init__(self, *, max_in_flight: int, max_waiting: int, wait_timeout_s: float) -> None:
        if max_in_flight < 1 or max_waiting < 0 or wait_timeout_s <= 0:
            raise ValueError(
                f"WriteQueue(max_in_flight={max_in_flight}, max_waiting={max_waiting}, "
                f"wait_timeout_s={wait_timeout_s}): expected >= 1, >= 0 and > 0"
            )
        self.max_in_flight = max_in_flight
        self.max_waiting = max_waiting
        self.wait_timeout_s = wait_timeout_s
        self.in_flight = 0
        self.waiting = 0
        self.stats = WriteQueueStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(max_in_flight)

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._slots = asyncio.Semaphore(self.max_in_flight)
            self.in_flight = self.waiting = 0
        return self._slots

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one write slot for the body of the ``async with``.

        Raises:
            WriteQueueFull: ``max_waiting`` requests are waiting already, or no slot came
                free within ``wait_timeout_s``.
        """
        slots = self._semaphore()
        if slots.locked():
            if self.waiting >= self.max_waiting:
                self.stats.rejected_full += 1
                raise WriteQueueFull(
                    f"the feedback write queue is full ({self.in_flight} writes in flight, "
                    f"{self.waiting} waiting; feedback_writes_waiting={self.max_waiting}); "
                    "nothing was written"
                )
            self.waiting += 1
            self.stats.peak_waiting = max(self.stats.peak_waiting, self.waiting)
            try:
                async with asyncio.timeout(self.wait_timeout_s):
                    await slots.acquire()
            except TimeoutError:
                self.stats.timed_out += 1
                raise WriteQueueFull(
                    f"no feedback write slot came free within {self.wait_timeout_s:g} s "
                    "(feedback_wait_timeout_s); nothing was written"
                ) from None
            finally:
                self.waiting -= 1
        else:
            await slots.acquire()
        self.in_flight += 1
        self.stats.admitted += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
            slots.release()
