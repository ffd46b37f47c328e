"""The fetch loop's waits: what wakes it while partitions are held, and what a short lack of room
in the outbox leaves alone (aiokafka's fetching ahead). The consumer here is a recorder of the
calls the loop makes; fetching itself is tested through the broker (tests/integration)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from worker.runtime import fetch_loop
from worker.runtime.changelog import RestoredPartition
from worker.runtime.fetch_loop import FetchLoop
from worker.runtime.partition import AssignedPartition, Inbound

TP = TopicPartition("user-messages", 0)
LIMIT = 2


async def never(part: AssignedPartition, item: Inbound) -> None:
    raise AssertionError("no lane runs here")


class RecordingConsumer:
    """Answers the loop's calls as an aiokafka consumer holding TP would, and notes them."""

    def __init__(self) -> None:
        self.held: set[TopicPartition] = set()
        self.pauses = 0
        self.polls: list[tuple[int, bool]] = []  # (timeout_ms, TP held at the time)
        self.polled = asyncio.Event()

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def paused(self) -> set[TopicPartition]:
        return set(self.held)

    def pause(self, *tps: TopicPartition) -> None:
        self.pauses += 1
        self.held.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.held.difference_update(tps)

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
        self.polls.append((timeout_ms, TP in self.held))
        self.polled.set()
        return {}


class Outbox:
    def __init__(self, *, room: bool) -> None:
        self._room = asyncio.Event()
        if room:
            self._room.set()

    def has_room(self) -> bool:
        return self._room.is_set()

    async def room(self) -> None:
        await self._room.wait()

    def make_room(self) -> None:
        self._room.set()


def owned(undecided: int) -> AssignedPartition:
    part = AssignedPartition(0, never)
    part.restored_as(RestoredPartition())
    part.undecided = undecided
    return part


def loop_over(consumer: RecordingConsumer, part: AssignedPartition, outbox: Outbox) -> FetchLoop:
    return FetchLoop(
        cast(Any, consumer),
        cast(Any, {0: part}),
        cast(Any, None),  # no record is fetched here
        cast(Any, outbox),
        limit=LIMIT,
        alive=lambda: True,
    )


@pytest.fixture(autouse=True)
def endless_poll_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wait the tests would never see end: only an event can move the loop on."""
    monkeypatch.setattr(fetch_loop, "POLL_MS", 3_600_000)


async def run_until_polled(loop: FetchLoop, consumer: RecordingConsumer) -> None:
    task = asyncio.create_task(loop.run(lambda: not consumer.polls))
    await asyncio.wait_for(consumer.polled.wait(), 30)
    await task


async def test_a_held_partition_is_polled_again_once_a_lane_frees_it() -> None:
    consumer, part = RecordingConsumer(), owned(undecided=LIMIT)
    loop = loop_over(consumer, part, Outbox(room=True))
    task = asyncio.create_task(run_until_polled(loop, consumer))
    for _ in range(10):
        await asyncio.sleep(0)  # turns of the event loop: the fetch loop pauses TP and waits
    assert consumer.held == {TP}
    assert not consumer.polls  # held: no poll waits where it cannot get records
    part.undecided -= 1
    loop.wake()
    await task
    assert consumer.polls == [(0, False)]  # resumed, and polled without waiting


async def test_a_short_lack_of_room_pauses_nothing() -> None:
    consumer, outbox = RecordingConsumer(), Outbox(room=False)
    loop = loop_over(consumer, owned(undecided=0), outbox)
    task = asyncio.create_task(run_until_polled(loop, consumer))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not consumer.polls and consumer.pauses == 0
    outbox.make_room()
    await task
    assert consumer.pauses == 0
    assert consumer.polls == [(fetch_loop.POLL_MS, False)]
