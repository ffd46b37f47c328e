"""Which input offsets of one partition may be committed.

An offset is complete when its decision is made and every record it produced (inbox, changelog,
DLQ) is acknowledged by the broker. Only the contiguous prefix of complete offsets is committed:
committing past an incomplete one would lose it in a crash.
"""

from __future__ import annotations

import asyncio
from collections import deque


class PendingOffset:
    __slots__ = ("offset", "decided", "acks")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.decided = False
        self.acks: list[asyncio.Future[object]] = []

    def complete(self) -> bool:
        return self.decided and all(ack.done() for ack in self.acks)

    def failure(self) -> BaseException | None:
        for ack in self.acks:
            if ack.done() and not ack.cancelled() and ack.exception() is not None:
                return ack.exception()
        return None


class DeliveryFailed(RuntimeError):
    """A record of an input offset was not acknowledged: nothing past it may be committed."""


class OffsetTracker:
    """Offsets of one input partition in fetch order, from the last commit on."""

    def __init__(self) -> None:
        self._pending: deque[PendingOffset] = deque()
        self.committed: int | None = None  # the next offset to read, as last committed

    def track(self, offset: int) -> PendingOffset:
        pending = PendingOffset(offset)
        self._pending.append(pending)
        return pending

    def __len__(self) -> int:
        return len(self._pending)

    def committable(self) -> int | None:
        """Pop the complete prefix; return the offset to commit (last complete + 1), if any.

        Raises DeliveryFailed when the first incomplete record's produce failed.
        """
        last: int | None = None
        while self._pending:
            head = self._pending[0]
            error = head.failure()
            if error is not None:
                raise DeliveryFailed(f"offset {head.offset}: {error!r}")
            if not head.complete():
                break
            last = head.offset
            self._pending.popleft()
        if last is None:
            return None
        return last + 1

    def acks_outstanding(self) -> list[asyncio.Future[object]]:
        return [ack for pending in self._pending for ack in pending.acks if not ack.done()]
