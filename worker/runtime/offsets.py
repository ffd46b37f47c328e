"""Which input offsets of one partition may be committed.

An offset is complete when its decision is made and every record it produced (inbox, changelog,
DLQ) is acknowledged by the broker. Only the contiguous prefix of complete offsets is committed:
committing past an incomplete one would lose it in a crash.
"""

from __future__ import annotations

from collections import deque

from worker.kafka.outbox import Ack


class PendingOffset:
    __slots__ = ("offset", "decided", "acks")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.decided = False
        # Outbox acks, often shared: every record of a batch has the same one.
        self.acks: list[Ack] = []

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
        self.position: int | None = None  # the next offset after the complete prefix
        self.committed: int | None = None  # the position the group coordinator accepted
        self.fetched: int | None = None  # the next offset after the last one taken

    def track(self, offset: int) -> PendingOffset:
        pending = PendingOffset(offset)
        self._pending.append(pending)
        self.fetched = offset + 1
        return pending

    def __len__(self) -> int:
        return len(self._pending)

    def committable(self) -> int | None:
        """Advance over the complete prefix; the offset to commit, if it moved since the last
        accepted commit (a failed commit is retried by the next call).

        Raises DeliveryFailed when the first incomplete record's produce failed.
        """
        while self._pending:
            head = self._pending[0]
            error = head.failure()
            if error is not None:
                raise DeliveryFailed(f"offset {head.offset}: {error!r}")
            if not head.complete():
                break
            self.position = head.offset + 1
            self._pending.popleft()
        if self.position is None or self.position == self.committed:
            return None
        return self.position

    def first_pending(self) -> int | None:
        """The position to commit again to prove membership: the first offset not complete
        (or past the last complete one); None when nothing was taken yet."""
        if self._pending:
            return self._pending[0].offset
        return self.position

    def acks_outstanding(self) -> list[Ack]:
        outstanding = {ack: None for pending in self._pending for ack in pending.acks}
        return [ack for ack in outstanding if not ack.done()]
