"""Which input partitions may be fetched now: decided per partition, never by stopping the poll.

A partition is fetched while it is restored and owned, and while fewer than `limit` of its
messages wait undecided in its lanes; all are held while the outbox has no room (the producer
lags). The fetch loop keeps polling whatever is paused: aiokafka takes a member that stops
polling for `max_poll_interval_ms` out of the group, and a slow partition (or one still
restoring) must not hold up the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from worker.runtime.partition import AssignedPartition


def fetchable(part: AssignedPartition | None, *, limit: int, room: bool) -> bool:
    return room and part is not None and part.owned and part.undecided < limit


def paused(
    assigned: Iterable[int],
    partition: Callable[[int], AssignedPartition | None],
    *,
    limit: int,
    room: bool,
) -> set[int]:
    """The assigned input partitions not to fetch now."""
    return {n for n in assigned if not fetchable(partition(n), limit=limit, room=room)}
