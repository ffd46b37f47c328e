"""Test plumbing for the real broker: unique topics, producing, consuming, a running worker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from worker.config.endpoints import Topics
from worker.runtime.coexistence_router import CoexistenceRouter
from worker.runtime.observer import RuntimeObserver
from worker.runtime.settings import RuntimeSettings
from worker.runtime.worker import RoutingWorker


def unique_topics() -> Topics:
    tag = uuid.uuid4().hex[:8]
    return Topics().renamed(lambda name: f"{name}-{tag}")


@dataclass
class Outgoing:
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None


def user_message(sender: str, text: str, intent: str | None = None, **extra: Any) -> Outgoing:
    body: dict[str, Any] = {
        "message_id": extra.pop("message_id", uuid.uuid4().hex),
        "sender_id": sender,
        "text": text,
        **extra,
    }
    if intent is not None:
        body["parse_data"] = {"intent": {"name": intent, "confidence": 0.95}, "entities": []}
    return Outgoing(orjson.dumps(body), sender.encode())


def session_reset(sender: str) -> Outgoing:
    body = {"type": "session_reset", "message_id": uuid.uuid4().hex, "sender_id": sender}
    return Outgoing(orjson.dumps(body), sender.encode())


def _client_kwargs(bootstrap: str, connection: Mapping[str, Any] | None) -> dict[str, Any]:
    """`connection`: aiokafka security settings (KafkaSettings.connection_kwargs()), if any."""
    return {**(connection or {}), "bootstrap_servers": bootstrap}


async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[Outgoing],
    *,
    connection: Mapping[str, Any] | None = None,
) -> None:
    producer = AIOKafkaProducer(
        **_client_kwargs(bootstrap, connection), acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(
                topic, r.value, key=r.key, partition=r.partition, headers=r.headers
            )
    finally:
        await producer.stop()


async def produce_many(bootstrap: str, topic: str, records: Iterable[Outgoing]) -> None:
    """Like `produce`, without a round trip per record (order per partition holds)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5
    )
    await producer.start()
    try:
        sent = [
            await producer.send(topic, r.value, key=r.key, partition=r.partition, headers=r.headers)
            for r in records
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


class TopicReader:
    """Reads topics from the beginning, without a group, and waits for records to arrive."""

    def __init__(
        self, bootstrap: str, *topics: str, connection: Mapping[str, Any] | None = None
    ) -> None:
        self._consumer = AIOKafkaConsumer(
            *topics,
            **_client_kwargs(bootstrap, connection),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        self.records: list[ConsumerRecord[bytes, bytes]] = []

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def _poll(self, timeout: float) -> None:
        batch = await self._consumer.getmany(timeout_ms=int(max(0.01, min(timeout, 0.5)) * 1000))
        for records in batch.values():
            self.records.extend(records)

    async def wait_until(
        self,
        predicate: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
        what: str,
        timeout: float = 30.0,
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Read until `predicate(records)` holds; bounded by `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.records):
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(
                    f"not {what} within {timeout}s ({len(self.records)} records read)"
                )
            await self._poll(left)
        return self.records

    async def wait_for(
        self, count: int, timeout: float = 30.0
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Wait until at least `count` records arrived in total; bounded by `timeout`."""
        return await self.wait_until(lambda r: len(r) >= count, f"{count} records", timeout)

    async def read_to_end(self, timeout: float = 30.0) -> list[ConsumerRecord[bytes, bytes]]:
        """Everything the topics hold now (for topics nobody writes to any more).

        The end is each partition's high watermark as reported by a fetch: Tansu's ListOffsets
        is short for multi-record batches.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            assigned: set[TopicPartition] = self._consumer.assignment()
            ends = {tp: self._consumer.highwater(tp) for tp in assigned}
            if assigned and all(end is not None for end in ends.values()):
                positions = {tp: await self._consumer.position(tp) for tp in assigned}
                if all(positions[tp] >= (ends[tp] or 0) for tp in assigned):
                    return self.records
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"topics not read to their end within {timeout}s")
            await self._poll(left)

    def by_topic(self, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
        return [r for r in self.records if r.topic == topic]


def routed(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    assert record.value is not None
    value: dict[str, Any] = orjson.loads(record.value)
    return value


@contextlib.asynccontextmanager
async def running_worker(
    settings: RuntimeSettings,
    router: CoexistenceRouter,
    observer: RuntimeObserver | None = None,
) -> AsyncIterator[RoutingWorker]:
    worker = RoutingWorker(settings, router, observer=observer)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    ready = asyncio.create_task(worker.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    if ready not in done:
        ready.cancel()
        task.cancel()
        raise AssertionError("worker did not get its partitions within 30s")
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
