"""Commits are batched by count as well as by time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from tests.integration.test_intent_routing import make_router, make_settings
from tests.kafka_support import Outgoing, TopicReader, produce, running_worker, user_message


class CommitLog(logging.Handler):
    """The worker's "committed ..." debug lines, awaitable."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("committed "):
            self.lines.append(record.getMessage())
            self._changed.set()

    async def wait_for(self, text: str, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(text in line for line in self.lines):
                self._changed.clear()
                await self._changed.wait()


@contextmanager
def commit_log() -> Iterator[CommitLog]:
    logger = logging.getLogger("worker.runtime.worker")
    handler, level = CommitLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_a_full_batch_is_committed_without_waiting_for_the_interval(bootstrap: str) -> None:
    settings = make_settings(bootstrap, partitions=1, commit_interval=600.0, commit_count=5)
    where = f"{settings.topics.input}[0]"

    def batch(tag: str) -> list[Outgoing]:
        return [user_message(f"{tag}{i}", "hi", "transfer_money") for i in range(5)]

    with commit_log() as commits:
        async with (
            running_worker(settings, make_router()),
            TopicReader(bootstrap, settings.topics.calm) as reader,
        ):
            await produce(bootstrap, settings.topics.input, batch("a"))
            await reader.wait_for(5)
            await commits.wait_for(f"{where}=5")
            await produce(bootstrap, settings.topics.input, batch("b"))
            await reader.wait_for(10)
            await commits.wait_for(f"{where}=10")
    # By count, never per message: the interval (600 s) never came.
    assert commits.lines[:2] == [f"committed {where}=5", f"committed {where}=10"]
