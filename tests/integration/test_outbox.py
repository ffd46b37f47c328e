"""The outbox on the real broker: batches per topic partition, in order, one ack per batch."""

from __future__ import annotations

import asyncio
import gc
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

from tests.kafka_support import TopicReader, unique_topics
from tests.tcp_proxy import TcpProxy
from worker.kafka.broker import EmbeddedBroker, free_loopback_port
from worker.kafka.outbox import Outbox, PartitionStopped
from worker.kafka.topics import ensure_topics


async def new_topic(bootstrap: str, partitions: int) -> str:
    topic = f"outbox-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


def producer(bootstrap: str, **extra: object) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, **extra
    )


async def test_records_arrive_in_add_order_in_the_partition_of_their_key(bootstrap: str) -> None:
    topic = await new_topic(bootstrap, 3)
    client = producer(bootstrap)
    await client.start()
    outbox = Outbox(client)
    await outbox.learn([topic])
    keys = [f"sender-{i % 7}".encode() for i in range(60)]
    try:
        acks = [
            outbox.add(topic, f"{i}".encode(), key=key, headers=[("n", f"{i}".encode())])
            for i, key in enumerate(keys)
        ]
        ends = [await ack for ack in acks]
    finally:
        await client.stop()
    # Every record of a batch shares its ack: far fewer acks than records.
    assert len(set(map(id, acks))) < len(acks)
    async with TopicReader(bootstrap, topic) as reader:
        records = await reader.wait_for(60)
    default = DefaultPartitioner()
    for record in records:
        i = int(record.value or b"")
        assert record.key == keys[i]
        assert record.headers == (("n", f"{i}".encode()),)
        assert record.partition == default(keys[i], [0, 1, 2], [0, 1, 2])  # Kafka's murmur2
        assert ends[i] > record.offset  # an ack is the offset past its batch's last record
    for partition in range(3):
        numbers = [int(r.value or b"") for r in records if r.partition == partition]
        assert numbers == sorted(numbers)


async def test_full_batches_follow_each_other_in_order(bootstrap: str) -> None:
    topic = await new_topic(bootstrap, 1)
    client = producer(bootstrap, max_batch_size=1024)  # a few records per batch
    await client.start()
    outbox = Outbox(client, queued_batches=1)  # `room` waits for the producer to take batches
    acks = []
    waited = False  # `room` had to wait at least once: more batches than the producer took
    try:
        for i in range(300):
            acks.append(outbox.add(topic, f"{i:04d}".encode() * 20, key=None, partition=0))
            waited |= not outbox.has_room()
            await outbox.room()
            assert outbox.has_room()
        ends = [await ack for ack in acks]
    finally:
        await client.stop()
    assert waited
    assert ends == sorted(ends) and ends[-1] >= 300 and len(set(ends)) > 10
    async with TopicReader(bootstrap, topic) as reader:
        records = await reader.wait_for(300)
    assert [r.value for r in records] == [f"{i:04d}".encode() * 20 for i in range(300)]


async def test_closing_fails_the_records_not_handed_over(bootstrap: str) -> None:
    topic = await new_topic(bootstrap, 1)
    client = producer(bootstrap)
    await client.start()
    outbox = Outbox(client)
    try:
        ack = outbox.add(topic, b"never sent", key=b"k", partition=0)
        await outbox.close()  # before the outbox's hand-over ever ran
        with pytest.raises(KafkaError, match="outbox closed"):
            await ack
    finally:
        await client.stop()


async def test_an_ack_failed_by_closing_and_never_awaited_is_not_reported(bootstrap: str) -> None:
    """A reconnect abandons its partitions' acks unawaited: asyncio must not log each one as
    "Future exception was never retrieved" (the outbox's failure is reported once, elsewhere)."""
    topic = await new_topic(bootstrap, 1)
    client = producer(bootstrap)
    await client.start()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        outbox = Outbox(client)
        ack = outbox.add(topic, b"never sent", key=b"k", partition=0)
        await outbox.close()
        assert ack.done()  # failed, and not looked at here
        del ack, outbox
        gc.collect()  # an unretrieved exception is reported when its future is collected
    finally:
        loop.set_exception_handler(previous)
        await client.stop()
    assert reported == []


async def test_a_record_over_the_request_size_is_refused_alone(bootstrap: str) -> None:
    topic = await new_topic(bootstrap, 1)
    client = producer(bootstrap)
    await client.start()
    outbox = Outbox(client, max_request_size=10_000)
    try:
        before = outbox.add(topic, b"before", key=b"k", partition=0)
        with pytest.raises(MessageSizeTooLargeError, match=f"for {topic} is larger"):
            outbox.add(topic, b"x" * 10_000, key=b"k", partition=0)
        after = outbox.add(topic, b"after", key=b"k", partition=0)
        await asyncio.gather(before, after)
    finally:
        await client.stop()
    async with TopicReader(bootstrap, topic) as reader:
        records = await reader.read_to_end()
    assert [r.value for r in records] == [b"before", b"after"]


async def test_a_batch_the_broker_never_answers_stops_every_later_record_of_its_partition(
    tmp_path: Path,
) -> None:
    """The produce request of one batch is lost on a stalled connection; aiokafka gives up on
    it after its request timeout and would send the partition's next batch on a new connection.
    Nothing after the lost batch may reach the broker: no reordering, no hole."""
    proxy_port = free_loopback_port()
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", advertised_port=proxy_port)
    async with broker, TcpProxy(broker.port, port=proxy_port) as proxy:
        topic = await new_topic(proxy.address, 1)
        client = producer(proxy.address, request_timeout_ms=1500, linger_ms=0)
        await client.start()
        outbox = Outbox(client)
        try:
            assert await outbox.add(topic, b"0", key=b"x", partition=0) > 0
            proxy.hold()  # the producer's connection delivers nothing from now on
            lost = outbox.add(topic, b"1", key=b"x", partition=0)
            await proxy.wait_held(timeout=10)  # its produce request is stuck in the network
            later = []
            for i in range(2, 10):
                later.append(outbox.add(topic, f"{i}".encode(), key=b"x", partition=0))
                await asyncio.sleep(0)  # separate batches, had they been handed over
            with pytest.raises(KafkaError):
                await lost
            outcomes = await asyncio.gather(*later, return_exceptions=True)
            assert all(isinstance(o, PartitionStopped) for o in outcomes), outcomes
            assert outbox.failure is not None
            # ... and so is everything added to that partition until a new outbox is made.
            with pytest.raises(PartitionStopped):
                await outbox.add(topic, b"10", key=b"x", partition=0)
        finally:
            await outbox.close()
            await client.stop()
        async with TopicReader(proxy.address, topic) as reader:
            records = await reader.read_to_end()
    assert [r.value for r in records] == [b"0"]


class MeasuringProducer(AIOKafkaProducer):  # type: ignore[misc]
    """A real producer that notes the size of every batch handed to it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_sizes: list[int] = []

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        self.batch_sizes.append(batch.size())
        return await super().send_batch(batch, topic, partition=partition)


async def test_batches_stay_within_the_topics_max_message_bytes(bootstrap: str) -> None:
    """A topic taking batches of at most 16 KiB gets no 256 KiB batch (a broker rejects one
    whole, with every record in it); what the broker says of the topic is what the worker uses."""
    topics = unique_topics()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topics.calm, 1, 1, topic_configs={"max.message.bytes": "16384"})]
        )
    finally:
        await admin.close()
    layout = await ensure_topics(
        {"bootstrap_servers": bootstrap}, topics, create=True, partitions=1, replication_factor=1
    )
    assert layout.max_message_bytes.get(topics.calm) == 16384
    client = MeasuringProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, max_batch_size=262144
    )
    await client.start()
    outbox = Outbox(client, limits=layout.max_message_bytes)
    values = [f"{i:05d}".encode() * 100 for i in range(400)]  # 500 bytes each, 200 KB in all
    try:
        acks = [outbox.add(topics.calm, value, key=b"k", partition=0) for value in values]
        with pytest.raises(MessageSizeTooLargeError, match="larger than the 16384 bytes"):
            outbox.add(topics.calm, b"x" * 16384, key=b"k", partition=0)
        await asyncio.gather(*acks)
    finally:
        await client.stop()
    assert len(client.batch_sizes) > 10
    assert max(client.batch_sizes) <= 16384
    async with TopicReader(bootstrap, topics.calm) as reader:
        records = await reader.read_to_end()
    assert [r.value for r in records] == values
