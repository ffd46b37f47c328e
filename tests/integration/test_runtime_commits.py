"""Commits are batched by count as well as by time."""

from __future__ import annotations

import asyncio

from tests.integration.test_intent_routing import make_router, make_settings
from tests.kafka_support import Outgoing, TopicReader, produce, running_worker, user_message
from tests.log_capture import captured


async def test_a_full_batch_is_committed_without_waiting_for_the_interval(bootstrap: str) -> None:
    settings = make_settings(bootstrap, partitions=1, commit_interval=600.0, commit_count=5)
    where = f"{settings.topics.input}[0]"

    def batch(tag: str) -> list[Outgoing]:
        return [user_message(f"{tag}{i}", "hi", "transfer_money") for i in range(5)]

    def committed_at(position: int) -> bool:
        return f"committed {where}={position}" in commits.messages("committed ")

    with captured("worker.runtime.worker") as commits:
        async with (
            running_worker(settings, make_router()),
            TopicReader(bootstrap, settings.topics.calm) as reader,
        ):
            await produce(bootstrap, settings.topics.input, batch("a"))
            await reader.wait_for(5)
            async with asyncio.timeout(20):
                await commits.wait_until(lambda: committed_at(5))
            await produce(bootstrap, settings.topics.input, batch("b"))
            await reader.wait_for(10)
            async with asyncio.timeout(20):
                await commits.wait_until(lambda: committed_at(10))
    # By count, never per message: the interval (600 s) never came.
    assert commits.messages("committed ")[:2] == [f"committed {where}=5", f"committed {where}=10"]
