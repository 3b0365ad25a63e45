"""`Flag`: an `asyncio.Event` for one waiter at a time, at a fraction of its memory.

Every task in flight holds a few (its turn's end, its cancel, its event sink). An `Event` keeps
a deque of waiters from the start, about 600 bytes; a flag holds a future only while it is
waited for, and a burst of 500 tasks keeps about 1 MiB less.
"""

from __future__ import annotations

import asyncio


class Flag:
    """Set, cleared and waited for as an `asyncio.Event`, by one waiter at a time."""

    __slots__ = ("_is_set", "_waiter")

    def __init__(self) -> None:
        self._is_set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        self._is_set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        self._is_set = False

    async def wait(self) -> None:
        """Until the flag is set (at once if it is)."""
        if self._is_set:
            return
        if self._waiter is not None:
            raise RuntimeError("a flag has one waiter at a time")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
