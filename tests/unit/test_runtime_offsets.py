"""Which input offsets may be committed: the contiguous prefix of decided, acknowledged ones."""

from __future__ import annotations

import asyncio

import pytest

from worker.runtime.offsets import DeliveryFailed, OffsetTracker


async def test_only_the_contiguous_complete_prefix_is_committable() -> None:
    tracker = OffsetTracker()
    first, second, third = (tracker.track(o) for o in (10, 11, 12))
    ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    second.decided = third.decided = True
    assert tracker.committable() is None  # 10 is not decided: nothing past it
    first.decided = True
    first.acks.append(ack)
    assert tracker.committable() is None  # decided, but its output is not acknowledged
    ack.set_result(1)
    assert tracker.committable() == 13
    assert len(tracker) == 0


async def test_a_failed_commit_is_offered_again_and_a_done_one_is_not() -> None:
    tracker = OffsetTracker()
    tracker.track(0).decided = True
    assert tracker.committable() == 1
    # The commit request failed: `committed` was not updated, so the same position comes back.
    assert tracker.committable() == 1
    tracker.committed = 1
    assert tracker.committable() is None


async def test_an_unacknowledged_record_stops_every_commit_past_it() -> None:
    tracker = OffsetTracker()
    failed = tracker.track(5)
    failed.decided = True
    ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    ack.set_exception(RuntimeError("broker said no"))
    failed.acks.append(ack)
    tracker.track(6).decided = True
    with pytest.raises(DeliveryFailed, match="offset 5"):
        tracker.committable()


async def test_an_ack_shared_by_several_offsets_is_outstanding_once() -> None:
    loop = asyncio.get_running_loop()
    tracker = OffsetTracker()
    batch: asyncio.Future[int] = loop.create_future()  # one outbox batch, two input offsets
    other: asyncio.Future[int] = loop.create_future()
    tracker.track(0).acks.append(batch)
    tracker.track(1).acks.extend([batch, other])
    assert tracker.acks_outstanding() == [batch, other]
    batch.set_result(2)
    assert tracker.acks_outstanding() == [other]
