"""One connection's worth of Kafka clients: the group consumer, the changelog reader, the
producer and its outbox. Built, started and closed together; a reconnect builds new ones.

Closing order is what keeps a departing member from writing after it left: the outbox stops
handing over and the producer is stopped (its last batches answered or failed) before the
consumer leaves the group, so no record of this member can reach the broker after another
member was given its partitions. Every step is bounded: with the broker gone, each client is
left behind once its share of the time is spent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from worker.kafka.outbox import Outbox
from worker.kafka.topics import TopicLayout
from worker.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

MAX_REQUEST_SIZE = 1_048_576  # bytes: aiokafka's default, and Kafka's default message.max.bytes
MAX_BATCH_SIZE = 256 * 1024
# How long the broker has to answer a produce request before its batch fails; a released
# partition waits this long (plus a little) for its last records' answers.
PRODUCE_TIMEOUT = 15.0
# A bound for one offset commit (aiokafka would retry for as long as the coordinator is away).
COMMIT_TIMEOUT = 5.0


class KafkaClients:
    def __init__(self, settings: RuntimeSettings, layout: TopicLayout) -> None:
        conn = dict(settings.connection)
        self.producer = AIOKafkaProducer(
            **conn,
            acks="all",
            # Tansu refuses the idempotent producer; ordering holds because the outbox hands a
            # partition's next batch over only once the previous one is acknowledged.
            enable_idempotence=False,
            # The outbox batches: a batch it hands over is complete, lingering adds latency.
            linger_ms=0,
            max_batch_size=MAX_BATCH_SIZE,
            max_request_size=MAX_REQUEST_SIZE,
            request_timeout_ms=int(PRODUCE_TIMEOUT * 1000),
        )
        self.outbox = Outbox(
            self.producer, max_request_size=MAX_REQUEST_SIZE, limits=layout.max_message_bytes
        )
        self.consumer = AIOKafkaConsumer(
            **conn,
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max(1, settings.max_in_flight),
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=max(100, int(settings.session_timeout * 1000 / 3)),
            # How long the group waits for a member's revocation: its lanes, the broker's
            # answers to its last writes, and its commits (see worker.runtime.assignments).
            rebalance_timeout_ms=int(
                (settings.rebalance_timeout + PRODUCE_TIMEOUT + 2 * COMMIT_TIMEOUT + 5) * 1000
            ),
            # Tansu holds every fetch for the full wait even when records arrive; Kafka answers
            # as soon as there are any. Either way this bounds an idle partition's added latency.
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            fetch_min_bytes=settings.fetch_min_bytes,
        )
        self.restorer = AIOKafkaConsumer(
            **conn,
            enable_auto_commit=False,
            # aiokafka resets a freshly assigned partition by this policy on its own, and applies
            # that answer even when seek_to_beginning() asked for the beginning meanwhile: with
            # "latest" a restore could start at the (short, on Tansu) end and miss sessions.
            auto_offset_reset="earliest",
            # Checking that a parked changelog partition is unchanged fetches at its end, where
            # the broker would otherwise hold the answer for 500 ms.
            fetch_max_wait_ms=50,
        )
        self._started: list[Any] = []

    async def start(self, stop: asyncio.Event, topics: list[str]) -> bool:
        """Start every client (and learn the keyed topics); False when `stop` came first."""
        for client in (self.producer, self.restorer, self.consumer):
            self._started.append(client)  # closed later even if its start is cut short
            if not await unless_stopped(client.start(), stop):
                return False
        return await unless_stopped(self.outbox.learn(topics), stop)

    async def close(self, timeout: float) -> None:
        """Outbox, producer, changelog reader, then the group consumer (leaving the group),
        all within `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.outbox.close()
        order = [self.producer, self.restorer, self.consumer]
        for index, client in enumerate(order):
            if client not in self._started:
                continue
            # The producer may need its share to deliver its last batch; the consumer's leave
            # request is one round trip.
            share = (deadline - loop.time()) / (len(order) - index)
            try:
                await asyncio.wait_for(client.stop(), max(0.05, share))
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.warning("closing %s: %r", type(client).__name__, exc)
        self._started.clear()


async def unless_stopped(step: Awaitable[Any], stop: asyncio.Event) -> bool:
    """Await `step` unless `stop` is set first (then it is cancelled); True when it finished."""
    task = asyncio.ensure_future(step)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False
