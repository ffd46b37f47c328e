"""The changelog against the real broker: a restore reads every record; an unchanged end is
recognised by the fetch high watermark (Tansu's ListOffsets is short for multi-record batches)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contracts.models import Route, SessionRecord, encode_session
from tests.integration.test_intent_routing import make_router, make_settings
from tests.kafka_support import TopicReader, produce_many, running_worker, user_message
from tests.runtime_events import RecordedEvents
from worker.runtime.changelog import (
    RESTORE_BATCH,
    input_offset_headers,
    restore_sessions,
    unchanged_since,
)


@pytest.fixture
async def changelog(bootstrap: str) -> AsyncIterator[tuple[str, AIOKafkaConsumer]]:
    """A two-partition changelog whose partition 0 holds three sessions in one batch."""
    topic = f"sessions-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 2, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=50)
    await producer.start()
    acks = [
        await producer.send(
            topic,
            encode_session(SessionRecord(route=Route.CALM, since_offset=i, message_id=f"m{i}")),
            key=f"s{i}".encode(),
            partition=0,
            headers=input_offset_headers(i),
        )
        for i in range(3)
    ]
    await asyncio.gather(*acks)
    await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        yield topic, consumer
    finally:
        await consumer.stop()


@pytest.mark.parametrize("max_records", [1, RESTORE_BATCH])
async def test_restore_reads_every_session_and_knows_the_true_end(
    changelog: tuple[str, AIOKafkaConsumer], max_records: int
) -> None:
    topic, consumer = changelog
    restored = await restore_sessions(
        consumer, topic, [0, 1], {0: 1, 1: 0}, max_records=max_records
    )
    assert sorted(restored[0].sessions) == ["s0", "s1", "s2"]
    held = [restored[0].sessions.get(f"s{i}") for i in range(3)]
    assert [(s.route, s.since_offset) for s in held if s is not None] == [
        (Route.CALM, 0),
        (Route.CALM, 1),
        (Route.CALM, 2),
    ]
    assert restored[0].end == 3 and restored[1].end == 0
    assert sorted(restored[0].replay) == ["s1", "s2"]  # written for offsets >= committed 1


async def test_an_unchanged_end_is_recognised_and_a_moved_one_is_not(
    changelog: tuple[str, AIOKafkaConsumer],
) -> None:
    topic, consumer = changelog
    assert await unchanged_since(consumer, topic, {0: 3, 1: 0}, timeout=10) == {0, 1}
    assert await unchanged_since(consumer, topic, {0: 2, 1: 0}, timeout=10) == {1}


async def test_a_new_group_on_an_old_changelog_drops_its_histories_as_it_commits(
    bootstrap: str,
) -> None:
    """A new group id starts at the earliest input offset, so every changelog record describes a
    message it will read again: each sender has a replay history. Once the group has committed
    past a sender's last record, the history is gone, whether the sender comes back or not."""
    settings = make_settings(bootstrap, partitions=1)
    senders = [f"old-{i}" for i in range(20)]
    opening = [user_message(s, "send money", "transfer_money") for s in senders]
    async with running_worker(settings, make_router()):
        await produce_many(bootstrap, settings.topics.input, opening)
        async with TopicReader(bootstrap, settings.topics.calm) as inbox:
            await inbox.wait_for(len(senders))
    renamed = dataclasses.replace(settings, group_id=f"{settings.group_id}-new")
    events = RecordedEvents()
    async with running_worker(renamed, make_router(), events) as worker:
        [restored] = events.named("restored")
        assert restored.args[0].replaying == len(senders)
        await events.committed_to({0: len(senders)})
        [partition] = worker.status().partitions
        assert (partition.sessions, partition.replaying) == (len(senders), 0)
    # Redelivered, each opener got its stored decision back.
    replayed = [e.args[2] for e in events.named("decided")]
    assert {(r["route"], r["reason"]) for r in replayed} == {("calm", "listed_intent")}
