"""Commits are batched by count as well as by time."""

from __future__ import annotations

from tests.integration.test_intent_routing import make_router, make_settings
from tests.kafka_support import Outgoing, TopicReader, produce, running_worker, user_message
from tests.runtime_events import RecordedEvents


async def test_a_full_batch_is_committed_without_waiting_for_the_interval(bootstrap: str) -> None:
    settings = make_settings(bootstrap, partitions=1, commit_interval=600.0, commit_count=5)

    def batch(tag: str) -> list[Outgoing]:
        return [user_message(f"{tag}{i}", "hi", "transfer_money") for i in range(5)]

    events = RecordedEvents()
    async with (
        running_worker(settings, make_router(), events),
        TopicReader(bootstrap, settings.topics.calm) as reader,
    ):
        await produce(bootstrap, settings.topics.input, batch("a"))
        await reader.wait_for(5)
        await events.committed_to({0: 5}, timeout=20)
        await produce(bootstrap, settings.topics.input, batch("b"))
        await reader.wait_for(10)
        await events.committed_to({0: 10}, timeout=20)
    # By count, never per message: the interval (600 s) never came.
    assert [e.args[0] for e in events.named("committed")][:2] == [{0: 5}, {0: 10}]
