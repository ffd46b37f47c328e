"""Backpressure decides per partition which ones are fetched; the poll never stops for it."""

from __future__ import annotations

from worker.runtime.backpressure import fetchable, paused
from worker.runtime.changelog import RestoredPartition
from worker.runtime.partition import AssignedPartition, Inbound, Phase


async def never(part: AssignedPartition, item: Inbound) -> None:
    raise AssertionError("no lane runs here")


def partition(number: int, *, restored: bool = True, undecided: int = 0) -> AssignedPartition:
    part = AssignedPartition(number, never)
    if restored:
        part.restored_as(RestoredPartition())
    part.undecided = undecided
    return part


def test_a_restoring_partition_is_held_and_the_others_are_fetched() -> None:
    parts = {0: partition(0, restored=False), 1: partition(1), 2: partition(2)}
    assert paused(parts, parts.get, limit=4, room=True) == {0}


def test_a_partition_at_its_bound_is_held_alone() -> None:
    parts = {0: partition(0, undecided=4), 1: partition(1, undecided=3), 2: partition(2)}
    assert paused(parts, parts.get, limit=4, room=True) == {0}


def test_no_room_in_the_outbox_holds_every_partition() -> None:
    parts = {0: partition(0), 1: partition(1)}
    assert paused(parts, parts.get, limit=4, room=False) == {0, 1}


def test_an_assigned_partition_not_taken_yet_or_released_is_held() -> None:
    releasing = partition(1)
    releasing.phase = Phase.RELEASING
    parts = {1: releasing}
    assert paused([0, 1], parts.get, limit=4, room=True) == {0, 1}
    assert not fetchable(None, limit=4, room=True)
