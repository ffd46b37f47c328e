"""A worker's session table against the real broker: what a sticky message changes in it."""

from __future__ import annotations

import asyncio

import orjson

from tests.integration.test_intent_routing import make_router, make_settings
from tests.kafka_support import TopicReader, produce, produce_many, routed, user_message
from tests.runtime_events import RecordedEvents
from worker.runtime.expiry import SLICE
from worker.runtime.worker import RoutingWorker


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_sticky_message_keeps_its_session_alive_and_refreshes_the_changelog_once(
    bootstrap: str,
) -> None:
    # A refresh is due once the changelog's copy is more than ttl / 2 = 0.2 s old.
    settings = make_settings(bootstrap, session_ttl=0.4)
    clock = Clock(1000.0)
    worker = RoutingWorker(settings, make_router(), clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    messages = [
        (1000.0, "transfer_money"),  # opens a CALM session
        (1000.15, "handoff"),  # sticky; the changelog's copy is fresh enough
        # 0.35 s after the last message, 0.5 s after the first: alive only if the table took
        # the seen_at of the message before. Refreshed (the copy is 0.5 s old).
        (1000.5, "handoff"),
        (1000.6, "handoff"),  # the refresh 0.1 s ago counts: no write
    ]
    try:
        await asyncio.wait_for(worker.ready.wait(), 30)
        async with TopicReader(bootstrap, settings.topics.calm, settings.topics.nlu) as inbox:
            for count, (at, intent) in enumerate(messages, 1):
                clock.now = at
                # As the expiry loop would see it now, at the latest.
                assert await worker.expire_idle_sessions() == 0
                await produce(
                    bootstrap, settings.topics.input, [user_message("kim", f"m{count}", intent)]
                )
                await inbox.wait_for(count)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    async with TopicReader(bootstrap, settings.topics.sessions) as changelog:
        written = [r for r in await changelog.read_to_end() if r.key == b"kim"]
    outputs = sorted((routed(r) for r in inbox.records), key=lambda o: o["message"]["text"])
    assert [(o["routing"]["route"], o["routing"]["reason"]) for o in outputs] == [
        ("calm", "listed_intent"),
        ("calm", "sticky_session"),
        ("calm", "sticky_session"),
        ("calm", "sticky_session"),
    ]
    assert [r.value is not None and orjson.loads(r.value)["seen_at"] for r in written] == [
        1000.0,
        1000.5,
    ]


async def test_a_mass_expiry_goes_a_slice_at_a_time_and_the_loop_runs_between(
    bootstrap: str,
) -> None:
    """After downtime longer than the TTL every session is idle at once: the pass writes its
    tombstones a slice at a time, waiting for the outbox and giving the loop back between."""
    settings = make_settings(bootstrap, partitions=1, session_ttl=3600.0)
    clock = Clock(1000.0)
    events = RecordedEvents()
    worker = RoutingWorker(settings, make_router(), clock=clock, observer=events)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    senders = [f"s{i:04d}" for i in range(2 * SLICE + 200)]
    try:
        await asyncio.wait_for(worker.ready.wait(), 30)
        await produce_many(
            bootstrap,
            settings.topics.input,
            [user_message(s, "send money", "transfer_money") for s in senders],
        )
        await events.wait_until(lambda: len(events.named("decided")) == len(senders), "all", 30)
        clock.now += 2 * 3600  # the worker was away for longer than the TTL
        turns: list[int] = []

        async def other_work() -> None:
            while True:
                turns.append(len(events.named("expired")))
                await asyncio.sleep(0)

        probe = asyncio.create_task(other_work())
        try:
            assert await worker.expire_idle_sessions() == len(senders)
        finally:
            probe.cancel()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    slices = [e.args[1] for e in events.named("expired")]
    assert slices == [SLICE, SLICE, 200]
    assert any(0 < seen < len(slices) for seen in turns), "nothing else ran during the pass"
    async with TopicReader(bootstrap, settings.topics.sessions) as changelog:
        written = await changelog.read_to_end()
    assert sorted(r.key for r in written if r.value is None) == sorted(s.encode() for s in senders)
