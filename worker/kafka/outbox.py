"""Records on their way to the broker, handed to the producer a whole batch at a time.

aiokafka's `send` costs a future, a partitioner call and a metadata lookup per record; at tens
of thousands of records a second that was a third of the worker's CPU. The outbox appends each
record to the open batch of its topic partition (aiokafka's own BatchBuilder, so the bytes on
the wire are what `send` would have made) and hands that batch to the producer once the
partition's previous batch is acknowledged. Every record of a batch shares one acknowledgement.

Order within a topic partition is the order of `add` calls, and a record the broker does not
acknowledge stops its partition: the next batch is handed over only after the previous one is
acknowledged, so when one fails nothing after it reaches the broker. aiokafka alone would not
do that: without the idempotent producer (which Tansu refuses) it sends the next batch of a
partition after one that timed out, reordering the partition and leaving a hole in it. The
failed batch, every later record of its partition, and everything added to that partition
afterwards fail; `failure` says so, and the owner reconnects, which builds a new outbox.

Sizes: a record is refused on its own (before it joins a batch) when a batch of it alone would
exceed what its topic takes, and a batch is closed before it grows past that limit, so the
broker never rejects a whole batch for its size with other messages' records in it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from worker.kafka.partitioner import RememberingPartitioner

# Resolves to the offset just past the batch's last record once the broker has it (acks=all).
Ack = asyncio.Future[int]

# A list: aiokafka's C batch builder takes nothing else.
Headers = list[tuple[str, bytes]]

estimate_size = DefaultRecordBatchBuilder.estimate_size_in_bytes
# What a batch costs beyond its records (estimate_size counts it with every record).
BATCH_OVERHEAD = estimate_size(None, None, []) - DefaultRecordBatchBuilder.size_of(None, None, [])


class RecordTooLarge(MessageSizeTooLargeError):  # type: ignore[misc]
    """A record larger than its topic takes; nothing of it was queued."""


class PartitionStopped(KafkaError):  # type: ignore[misc]
    """An earlier record of the same topic partition was not acknowledged."""


class _Batch:
    __slots__ = ("builder", "ack", "records", "size")

    def __init__(self, builder: Any, ack: Ack) -> None:
        self.builder = builder
        self.ack = ack
        self.records = 0
        self.size = BATCH_OVERHEAD  # an upper bound of the encoded batch

    def fail(self, error: BaseException) -> None:
        if not self.ack.done():
            self.ack.set_exception(error)
            # Seen: the owner learns of it through `failure` or by awaiting the ack, and an
            # input partition abandoned in a reconnect drops its acks unawaited; asyncio would
            # log each of those as "Future exception was never retrieved".
            self.ack.exception()


class Outbox:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        max_request_size: int = 1_048_576,  # the producer's, which `send` would check
        limits: Mapping[str, int] | None = None,  # topic -> largest batch it takes (bytes)
        queued_batches: int = 4,
    ) -> None:
        self._producer = producer
        self._max_request_size = max_request_size
        self._limits = {
            topic: min(limit, max_request_size) for topic, limit in (limits or {}).items()
        }
        self._partitioner = RememberingPartitioner()
        self._partitions: dict[str, range] = {}
        self._open: dict[tuple[str, int], _Batch] = {}
        # Full batches not handed over yet; `room` waits while a partition has too many.
        self._full: dict[tuple[str, int], deque[_Batch]] = {}
        self._queued_batches = queued_batches
        self._room = asyncio.Event()
        self._handing_over: dict[tuple[str, int], asyncio.Task[None]] = {}
        # Topic partitions a batch of which was not acknowledged: an ack that failed already.
        self._stopped: dict[tuple[str, int], Ack] = {}
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._closed: Ack | None = None  # once closed: the answer to every later add

    async def learn(self, topics: list[str]) -> None:
        """Learn the partition counts of the topics whose records are placed by key."""
        for topic in topics:
            self._partitions[topic] = range(len(await self._producer.partitions_for(topic)))

    def limit(self, topic: str) -> int:
        """The largest batch `topic` takes, in bytes (a record alone must fit one)."""
        return self._limits.get(topic, self._max_request_size)

    def fits(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> bool:
        return int(estimate_size(key, value, headers)) <= self.limit(topic)

    @property
    def failure(self) -> BaseException | None:
        """The first error of a batch the broker did not acknowledge, if any."""
        return self._failure

    async def failed(self) -> BaseException:
        """Returns that error once there is one."""
        await self._failed.wait()
        assert self._failure is not None
        return self._failure

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
        (the topic must be learnt first). Never waits: callers wait for `room` now and then.
        Raises RecordTooLarge, having queued nothing, for a record its topic cannot take."""
        headers = headers or []
        size = estimate_size(key, value, headers)
        limit = self._limits.get(topic, self._max_request_size)
        if size > limit:
            # Refused here, like aiokafka's `send` does, rather than failing the whole batch at
            # the broker (and with it every record of other messages in it).
            raise RecordTooLarge(
                f"a record of {size} bytes for {topic} is larger than the {limit} bytes the "
                f"topic takes"
            )
        if partition is None:
            partitions = self._partitions.get(topic)
            if partitions is None:
                raise KeyError(f"the outbox has not learnt the partitions of {topic!r}")
            partition = self._partitioner(key, partitions, partitions)
        where = (topic, partition)
        stopped = self._stopped.get(where) or self._closed
        if stopped is not None:
            return stopped
        record_size = size - BATCH_OVERHEAD
        batch = self._open.get(where)
        if batch is None:
            batch = self._open_batch(where)
        elif batch.size + record_size > limit:
            batch = self._close_open(where)
        appended = batch.builder.append(timestamp=None, key=key, value=value, headers=headers)
        if appended is None:  # the producer's max_batch_size: this one is full
            batch = self._close_open(where)
            appended = batch.builder.append(timestamp=None, key=key, value=value, headers=headers)
            assert appended is not None  # the first record of a batch is always taken
        batch.records += 1
        batch.size += record_size
        return batch.ack

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

    def _close_open(self, where: tuple[str, int]) -> _Batch:
        self._full.setdefault(where, deque()).append(self._open.pop(where))
        return self._open_batch(where)

    def _next(self, where: tuple[str, int]) -> _Batch | None:
        full = self._full.get(where)
        if full:
            batch = full.popleft()
            self._room.set()
            return batch
        return self._open.pop(where, None)

    async def _hand_over(self, where: tuple[str, int]) -> None:
        """Runs while the partition has batches: hands one over, waits for the broker's
        answer, then the next (everything added meanwhile), so a batch that fails is the last
        of its partition the broker ever sees."""
        topic, partition = where
        try:
            while (batch := self._next(where)) is not None:
                try:
                    delivered = await self._producer.send_batch(
                        batch.builder, topic, partition=partition
                    )
                    metadata = await delivered
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        batch.fail(_closed())  # close(): the producer may still deliver it
                        raise
                    # The producer cancelled the batch's delivery itself.
                    self._stop(where, batch, KafkaError("the producer dropped the batch"))
                    return
                except Exception as exc:  # noqa: BLE001 - the records' owners learn of it
                    self._stop(where, batch, exc)
                    return
                if not batch.ack.done():
                    # None for a batch left empty by a failed append.
                    end = 0 if metadata is None else int(metadata.offset) + batch.records
                    batch.ack.set_result(end)
        finally:
            del self._handing_over[where]

    def _stop(self, where: tuple[str, int], failed: _Batch, error: BaseException) -> None:
        failed.fail(error)
        topic, partition = where
        later = PartitionStopped(
            f"not sent: an earlier batch of {topic}[{partition}] was not acknowledged "
            f"({type(error).__name__}: {error})"
        )
        self._stopped[where] = _failed(later)
        for batch in self._full.pop(where, ()):
            batch.fail(later)
        open_batch = self._open.pop(where, None)
        if open_batch is not None:
            open_batch.fail(later)
        self._room.set()
        if self._failure is None:
            self._failure = error
            self._failed.set()

    async def flush(self) -> None:
        """Until every queued record is acknowledged or has failed."""
        while self._handing_over:
            await asyncio.gather(*self._handing_over.values(), return_exceptions=True)

    async def close(self) -> None:
        """Stop handing over; records not handed over yet fail (their input is redelivered).
        A batch the producer holds is its to send or fail: stop the producer after this."""
        self._closed = _failed(_closed())
        tasks = list(self._handing_over.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for full in self._full.values():
            for batch in full:
                batch.fail(_closed())
        for batch in self._open.values():
            batch.fail(_closed())
        self._full.clear()
        self._open.clear()
        self._room.set()


def _failed(error: BaseException) -> Ack:
    """An ack that failed already, shared by many records (its error counts as seen)."""
    ack: Ack = asyncio.get_running_loop().create_future()
    ack.set_exception(error)
    ack.exception()
    return ack


def _closed() -> KafkaError:
    return KafkaError("the outbox closed before the broker acknowledged the record")
