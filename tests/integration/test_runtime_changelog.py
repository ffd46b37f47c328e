"""The changelog against the real broker: a restore reads every record; an unchanged end is
recognised by the fetch high watermark (Tansu's ListOffsets is short for multi-record batches)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contracts.models import Route, SessionRecord, encode_session
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
