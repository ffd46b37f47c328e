"""Per-sender lanes: one sender's messages run strictly in order, different senders concurrently."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class SenderLanes(Generic[Item]):
    def __init__(self, handle: Callable[[Item], Awaitable[None]]) -> None:
        self._handle = handle
        self._queues: dict[str, deque[Item]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, sender: str, item: Item) -> None:
        queue = self._queues.get(sender)
        if queue is not None:
            queue.append(item)
            return
        self._queues[sender] = deque((item,))
        self._idle.clear()
        task = asyncio.create_task(self._drain(sender), name=f"lane:{sender}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def busy(self, sender: str) -> bool:
        return sender in self._queues

    async def _drain(self, sender: str) -> None:
        queue = self._queues[sender]
        try:
            while queue:
                # The item stays queued while it runs, so `busy` holds until the lane is empty.
                await self._handle(queue[0])
                queue.popleft()
        finally:
            del self._queues[sender]
            if not self._queues:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True when every lane finished within `timeout` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def abandon(self) -> None:
        """Cancel whatever is still running (its offsets stay uncommitted, so it is redelivered)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
