"""Creating the worker's topics and checking that input and changelog are co-partitioned."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from worker.config.endpoints import Topics

log = logging.getLogger(__name__)


class TopicLayoutError(RuntimeError):
    """The topics exist in a shape the worker cannot run on; start-up is refused."""


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    described = await admin.describe_topics(names)
    counts: dict[str, int] = {}
    for topic in described:
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def ensure_topics(
    connection: Mapping[str, Any],
    topics: Topics,
    *,
    create: bool,
    partitions: int,
    replication_factor: int,
) -> int:
    """Create missing topics (when allowed) and return the input topic's partition count.

    The sessions changelog must have exactly the input's partition count: sessions of input
    partition p live in changelog partition p, whichever partitioner the connectors used.
    """
    admin = AIOKafkaAdminClient(**connection)
    await admin.start()
    try:
        wanted = [topics.input, topics.calm, topics.nlu, topics.sessions, topics.dlq]
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing and not create:
            raise TopicLayoutError(
                f"topics {', '.join(missing)} do not exist and create_topics is false"
            )
        counts = await _partition_counts(admin, [n for n in wanted if n in existing])
        input_partitions = counts.get(topics.input, partitions)
        new_topics = []
        for name in missing:
            count = input_partitions if name in (topics.input, topics.sessions) else partitions
            configs = {"cleanup.policy": "compact"} if name == topics.sessions else {}
            new_topics.append(NewTopic(name, count, replication_factor, topic_configs=configs))
        if new_topics:
            # Another worker of the group may have created them first.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new_topics)
            log.info("created topics %s", ", ".join(t.name for t in new_topics))
            counts = await _partition_counts(admin, wanted)
        input_count = counts.get(topics.input)
        sessions_count = counts.get(topics.sessions)
        if input_count is None or sessions_count is None:
            raise TopicLayoutError(
                f"topics {topics.input!r} and {topics.sessions!r} could not be described"
            )
        if input_count != sessions_count:
            raise TopicLayoutError(
                f"state topic {topics.sessions!r} has {sessions_count} partitions but input topic "
                f"{topics.input!r} has {input_count}: they must be equal, because the sessions of "
                f"input partition p are kept in state partition p"
            )
        return input_count
    finally:
        await admin.close()
