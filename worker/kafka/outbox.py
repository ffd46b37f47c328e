"""Records on their way to the broker, handed to the producer a whole batch at a time.

aiokafka's `send` costs a future, a partitioner call and a metadata lookup per record; at tens
of thousands of records a second that was a third of the worker's CPU. The outbox appends each
record to the open batch of its topic partition (aiokafka's own BatchBuilder, so the bytes on
the wire are what `send` would have made) and hands that batch to the producer on the next turn
of the event loop. Every record of a batch shares one acknowledgement.

Order within a topic partition is the order of `add` calls: a partition's batches are handed
over one at a time, oldest first, and aiokafka sends one batch per partition at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from worker.kafka.partitioner import RememberingPartitioner

# Resolves to the offset just past the batch's last record once the broker has it (acks=all).
Ack = asyncio.Future[int]

# A list: aiokafka's C batch builder takes nothing else.
Headers = list[tuple[str, bytes]]


class _Batch:
    __slots__ = ("builder", "ack", "records")

    def __init__(self, builder: Any, ack: Ack) -> None:
        self.builder = builder
        self.ack = ack
        self.records = 0

    def settle(self, delivered: asyncio.Future[Any]) -> None:
        if self.ack.done():
            return
        if delivered.cancelled():
            self.ack.set_exception(KafkaError("the producer dropped the batch"))
        elif (error := delivered.exception()) is not None:
            self.ack.set_exception(error)
        else:
            metadata = delivered.result()  # None for a batch left empty by a failed append
            self.ack.set_result(0 if metadata is None else int(metadata.offset) + self.records)


class Outbox:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        max_request_size: int = 1_048_576,  # the producer's, which `send` would check
        queued_batches: int = 4,
    ) -> None:
        self._producer = producer
        self._max_request_size = max_request_size
        self._partitioner = RememberingPartitioner()
        self._partitions: dict[str, range] = {}
        self._open: dict[tuple[str, int], _Batch] = {}
        # Full batches not handed over yet; `room` waits while a partition has too many.
        self._full: dict[tuple[str, int], deque[_Batch]] = {}
        self._queued_batches = queued_batches
        self._room = asyncio.Event()
        self._handing_over: dict[tuple[str, int], asyncio.Task[None]] = {}

    async def learn(self, topics: list[str]) -> None:
        """Learn the partition counts of the topics whose records are placed by key."""
        for topic in topics:
            self._partitions[topic] = range(len(await self._producer.partitions_for(topic)))

    def add(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> Ack:
        """Queue one record; `partition` None picks it by key like Kafka's default partitioner
        (the topic must be learnt first). Never waits: callers wait for `room` now and then."""
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or [])
        if size > self._max_request_size:
            # Refused here, like aiokafka's `send` does, rather than failing the whole batch at
            # the broker (and with it every record of other messages in it).
            raise MessageSizeTooLargeError(
                f"a record of {size} bytes for {topic} is larger than the producer's "
                f"max_request_size ({self._max_request_size})"
            )
        if partition is None:
            partitions = self._partitions.get(topic)
            if partitions is None:
                raise KeyError(f"the outbox has not learnt the partitions of {topic!r}")
            partition = self._partitioner(key, partitions, partitions)
        where = (topic, partition)
        batch = self._open.get(where) or self._open_batch(where)
        appended = batch.builder.append(timestamp=None, key=key, value=value, headers=headers or [])
        if appended is not None:
            batch.records += 1
            return batch.ack
        if batch.records == 0:
            raise MessageSizeTooLargeError(
                f"a record of {len(value or b'')} bytes does not fit a batch for {topic}"
            )
        self._full.setdefault(where, deque()).append(self._open.pop(where))
        return self.add(topic, value, key=key, partition=partition, headers=headers)

    def has_room(self) -> bool:
        """No partition has more full batches waiting than `queued_batches`."""
        return all(len(full) <= self._queued_batches for full in self._full.values())

    async def room(self) -> None:
        """Wait until `has_room`: the producer has taken enough batches."""
        while not self.has_room():
            self._room.clear()
            await self._room.wait()

    def _open_batch(self, where: tuple[str, int]) -> _Batch:
        batch = _Batch(self._producer.create_batch(), asyncio.get_running_loop().create_future())
        self._open[where] = batch
        if where not in self._handing_over:
            task = asyncio.create_task(self._hand_over(where), name=f"outbox:{where}")
            self._handing_over[where] = task
        return batch

    def _next(self, where: tuple[str, int]) -> _Batch | None:
        full = self._full.get(where)
        if full:
            batch = full.popleft()
            self._room.set()
            return batch
        return self._open.pop(where, None)

    async def _hand_over(self, where: tuple[str, int]) -> None:
        """Runs while the partition has batches: everything added until it got to run goes as
        one batch, and whatever arrives while the producer waits to take it goes as the next."""
        topic, partition = where
        try:
            while (batch := self._next(where)) is not None:
                try:
                    delivered = await self._producer.send_batch(
                        batch.builder, topic, partition=partition
                    )
                except asyncio.CancelledError:
                    batch.ack.set_exception(_closed())
                    raise
                except Exception as exc:  # noqa: BLE001 - the records' owners learn of it
                    batch.ack.set_exception(exc)
                    continue
                delivered.add_done_callback(batch.settle)
        finally:
            del self._handing_over[where]

    async def flush(self) -> None:
        """Hand every queued record to the producer (whose `stop` then sends them)."""
        while self._handing_over:
            await asyncio.gather(*self._handing_over.values(), return_exceptions=True)

    async def close(self) -> None:
        """Stop handing over; records not handed over yet fail (their input is redelivered)."""
        tasks = list(self._handing_over.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for full in self._full.values():
            for batch in full:
                batch.ack.set_exception(_closed())
        for batch in self._open.values():
            batch.ack.set_exception(_closed())
        self._full.clear()
        self._open.clear()
        self._room.set()


def _closed() -> KafkaError:
    return KafkaError("the outbox closed before the producer took the record")
