"""A worker's session table against the real broker: what a sticky message changes in it."""

from __future__ import annotations

import asyncio

import orjson

from tests.integration.test_intent_routing import make_router, make_settings
from tests.kafka_support import TopicReader, produce, routed, user_message
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
