"""Creating the worker's topics, checking the ones that exist, and learning their size limits.

The sessions changelog must have exactly the input's partition count (sessions of input
partition p live in changelog partition p, whichever partitioner the connectors used) and be
compacted (a deleting changelog loses sessions after its retention). A changelog the worker
creates also gets `min.compaction.lag.ms`, so the record that opened a session, which carries
its decision, outlives every redelivery of that message even when a later record of the sender
follows at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from worker.config.endpoints import Topics

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36  # Kafka's error code: another worker of the group was first
# A day: far longer than any offset stays uncommitted while a worker runs (seconds) or while
# the group recovers from a crash; shorter would let compaction drop an opener (and its
# decision) that a redelivery still needs, longer only makes restores read more records.
MIN_COMPACTION_LAG_MS = 24 * 3600 * 1000
CHANGELOG_CONFIGS = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": str(MIN_COMPACTION_LAG_MS),
}
# Metadata of a topic just created may take a moment to reach every broker.
DESCRIBE_TIMEOUT = 10.0


class TopicLayoutError(RuntimeError):
    """The topics exist in a shape the worker cannot run on; start-up is refused."""


@dataclass(frozen=True)
class TopicLayout:
    partitions: int  # of the input topic (and so of the changelog)
    # Topic -> its max.message.bytes, where the broker reports one: the largest record batch
    # it accepts.
    max_message_bytes: Mapping[str, int] = field(default_factory=dict)


async def ensure_topics(
    connection: Mapping[str, Any],
    topics: Topics,
    *,
    create: bool,
    partitions: int,
    replication_factor: int,
) -> TopicLayout:
    """Create missing topics (when allowed), check the layout, and learn the size limits."""
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
        if missing:
            counts = await _partition_counts(admin, [n for n in wanted if n in existing])
            input_partitions = counts.get(topics.input, partitions)
            await _create(admin, topics, missing, input_partitions, partitions, replication_factor)
        counts = await _described(admin, [topics.input, topics.sessions])
        input_count, sessions_count = counts[topics.input], counts[topics.sessions]
        if input_count != sessions_count:
            raise TopicLayoutError(
                f"state topic {topics.sessions!r} has {sessions_count} partitions but input topic "
                f"{topics.input!r} has {input_count}: they must be equal, because the sessions of "
                f"input partition p are kept in state partition p"
            )
        configs = await _configs(admin, wanted)
        check_changelog(topics.sessions, configs.get(topics.sessions, {}))
        limits = {
            name: int(values["max.message.bytes"])
            for name, values in configs.items()
            if values.get("max.message.bytes", "").isdigit()
        }
        return TopicLayout(input_count, limits)
    finally:
        await admin.close()


async def _create(
    admin: AIOKafkaAdminClient,
    topics: Topics,
    missing: list[str],
    input_partitions: int,
    partitions: int,
    replication_factor: int,
) -> None:
    new_topics = []
    for name in missing:
        count = input_partitions if name in (topics.input, topics.sessions) else partitions
        configs = CHANGELOG_CONFIGS if name == topics.sessions else {}
        new_topics.append(NewTopic(name, count, replication_factor, topic_configs=configs))
    response = await admin.create_topics(new_topics)
    problems = creation_problems(response.topic_errors)
    if problems:
        raise TopicLayoutError("; ".join(problems))
    created = [entry[0] for entry in response.topic_errors if entry[1] == 0]
    if created:
        log.info("created topics %s", ", ".join(created))


def creation_problems(topic_errors: Iterable[tuple[Any, ...]]) -> list[str]:
    """What a CreateTopics answer says went wrong, per topic: (topic, error code[, message]).
    A topic that already exists is none (another worker of the group was first)."""
    problems = []
    for entry in topic_errors:
        name, code = entry[0], entry[1]
        if code in (0, TOPIC_ALREADY_EXISTS):
            continue
        error = for_code(code)
        message = entry[2] if len(entry) > 2 and entry[2] else error.description
        problems.append(f"creating topic {name!r} failed: {error.__name__}: {message}")
    return problems


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    described = await admin.describe_topics(names)
    counts: dict[str, int] = {}
    for topic in described:
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def _described(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition counts of `names`, asked again for a while: a topic just created (by this
    worker or another) may not be in every broker's metadata yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DESCRIBE_TIMEOUT
    pause = 0.1
    while True:
        counts = await _partition_counts(admin, names)
        if all(name in counts for name in names):
            return counts
        if loop.time() + pause > deadline:
            unknown = ", ".join(repr(n) for n in names if n not in counts)
            raise TopicLayoutError(f"topics {unknown} could not be described")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


async def _configs(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    """The topic configs the broker reports (Kafka: all, defaults included; Tansu: only those
    set when the topic was created)."""
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    )
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            error_code, _, _, name, entries = resource[:5]
            if error_code == 0:
                configs[name] = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
    return configs


def check_changelog(name: str, configs: Mapping[str, str]) -> None:
    """Refuse a changelog that deletes (it would lose sessions); warn where the broker does not
    say, or where compaction may drop an opener too soon."""
    policy = configs.get("cleanup.policy")
    if policy is None:
        log.warning(
            "the broker does not report cleanup.policy of state topic %r: make sure it is "
            "compact, or sessions are deleted with its retention",
            name,
        )
    elif "compact" not in policy.split(","):
        raise TopicLayoutError(
            f"state topic {name!r} has cleanup.policy={policy}: it must be compact, or the "
            f"broker deletes sessions after the topic's retention"
        )
    lag = configs.get("min.compaction.lag.ms")
    if policy is not None and (lag is None or lag == "0"):
        log.warning(
            "state topic %r has min.compaction.lag.ms=%s: compaction may drop the record that "
            "opened a session (and its decision) before a redelivery needs it; %d is advised",
            name,
            lag or "0",
            MIN_COMPACTION_LAG_MS,
        )
