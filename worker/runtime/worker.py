"""The consumer-group worker: fetch, decide per sender in order, publish, commit what is safe.

Flow of one input record:
  fetch (bounded by `max_in_flight`) -> decode (bad: DLQ) -> the sender's lane -> decide ->
  changelog + inbox records -> acknowledged by the broker -> its offset joins the committable
  prefix -> batched commit.
Sessions live in memory per assigned partition, restored from the changelog partition with the
same number before that partition's first message is decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError

from contracts.models import (
    DeadLetter,
    Route,
    Routing,
    SessionRecord,
    SessionReset,
    UserMessage,
    decode_input,
    encode_routed,
    encode_session,
)
from worker.config.endpoints import Topics
from worker.kafka.topics import TopicLayoutError, ensure_topics
from worker.routing.session import StickySession
from worker.runtime.changelog import Sessions, restore_sessions
from worker.runtime.coexistence_router import CoexistenceRouter
from worker.runtime.lanes import SenderLanes
from worker.runtime.offsets import DeliveryFailed, OffsetTracker, PendingOffset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeSettings:
    connection: Mapping[str, Any]  # aiokafka connection kwargs (bootstrap servers, security)
    topics: Topics = field(default_factory=Topics)
    group_id: str = "coexistence-router"
    create_topics: bool = True
    partitions: int = 6
    replication_factor: int = 1
    max_in_flight: int = 256
    commit_interval: float = 0.5
    session_ttl: float = 0.0  # seconds of idleness that end a session; 0 = never
    shutdown_timeout: float = 10.0
    rebalance_timeout: float = 10.0
    # The group coordinator's failure detection; Tansu also delays a join by half of it.
    session_timeout: float = 10.0
    reconnect_backoff_max: float = 30.0


class BadRecord(ValueError):
    """A record that cannot be routed; it goes to the DLQ with this error."""


@dataclass(slots=True)
class Inbound:
    record: ConsumerRecord[bytes, bytes]
    message: UserMessage | SessionReset
    pending: PendingOffset


class AssignedPartition:
    """One input partition this worker owns: its sessions, lanes and uncommitted offsets."""

    def __init__(
        self,
        number: int,
        sessions: Sessions,
        handle: Callable[[AssignedPartition, Inbound], Any],
    ) -> None:
        self.number = number
        self.sessions = sessions
        self.offsets = OffsetTracker()
        self.lanes: SenderLanes[Inbound] = SenderLanes(lambda item: handle(self, item))
        self.undecided = 0
        self.revoked = False
        # Set once the changelog partition is read; no message is decided before that.
        self.restored = asyncio.Event()


class RoutingWorker:
    def __init__(
        self,
        settings: RuntimeSettings,
        router: CoexistenceRouter,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.router = router
        self._clock = clock
        self._topics = settings.topics
        self._partitions: dict[int, AssignedPartition] = {}
        # Sessions of partitions revoked cleanly; reused if the same partition comes back.
        self._parked: dict[int, Sessions] = {}
        self._progress = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._failure: BaseException | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._restorer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()  # set once partitions are assigned and restored

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; broker trouble is retried with backoff, never a crash."""
        backoff = 0.5
        while not stop.is_set():
            try:
                await self._run_connected(stop)
                return
            except TopicLayoutError:
                raise
            except (KafkaError, DeliveryFailed, OSError) as exc:
                log.warning(
                    "kafka at %s unavailable (%s: %s); retrying in %.1fs",
                    self.settings.connection.get("bootstrap_servers"),
                    type(exc).__name__,
                    exc,
                    backoff,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, self.settings.reconnect_backoff_max)

    async def _run_connected(self, stop: asyncio.Event) -> None:
        settings = self.settings
        await ensure_topics(
            settings.connection,
            self._topics,
            create=settings.create_topics,
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
        )
        conn = dict(settings.connection)
        self._failure = None
        self._producer = AIOKafkaProducer(
            **conn,
            acks="all",
            # Tansu refuses the idempotent producer; ordering holds anyway because aiokafka
            # keeps at most one batch in flight per partition.
            enable_idempotence=False,
            linger_ms=5,
            max_batch_size=256 * 1024,
        )
        self._consumer = AIOKafkaConsumer(
            **conn,
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max(1, settings.max_in_flight),
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=max(100, int(settings.session_timeout * 1000 / 3)),
            rebalance_timeout_ms=int((settings.rebalance_timeout + 5) * 1000),
        )
        self._restorer = AIOKafkaConsumer(**conn, enable_auto_commit=False)
        started: list[Any] = []
        try:
            for client in (self._producer, self._restorer, self._consumer):
                await client.start()
                started.append(client)
            self._consumer.subscribe([self._topics.input], listener=_Rebalance(self))
            background = [
                asyncio.create_task(self._commit_loop(stop), name="commit-loop"),
                asyncio.create_task(self._expiry_loop(stop), name="expiry-loop"),
            ]
            try:
                await self._fetch_loop(stop)
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await self._drain_all()
            if self._failure is not None:
                raise self._failure
        finally:
            self.ready.clear()
            for client in reversed(started):
                with contextlib.suppress(Exception):
                    await client.stop()
            self._partitions.clear()
            self._parked.clear()
            self._consumer = self._producer = self._restorer = None

    async def _drain_all(self) -> None:
        """Shutdown: finish in-flight work within the bound, commit it, then leave the group."""
        numbers = list(self._partitions)
        if numbers:
            await self._release(numbers, self.settings.shutdown_timeout, park=False)

    # ---- fetching --------------------------------------------------------------------------

    def _undecided(self) -> int:
        return sum(p.undecided for p in self._partitions.values())

    async def _fetch_loop(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None
        limit = self.settings.max_in_flight
        while not stop.is_set() and self._failure is None:
            free = limit - self._undecided()
            if free <= 0:
                # Backpressure: stop fetching until some decisions are made.
                self._progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), 0.5)
                continue
            batch = await self._consumer.getmany(timeout_ms=200, max_records=free)
            for tp, records in batch.items():
                part = self._partitions.get(tp.partition)
                if part is None or part.revoked:
                    if tp in self._consumer.assignment():
                        # Not taken yet: fetch these again rather than skip past them.
                        self._consumer.seek(tp, records[0].offset)
                    continue  # revoked while the fetch was in flight: the new owner reads it
                for record in records:
                    await self._dispatch(part, record)

    async def _dispatch(
        self, part: AssignedPartition, record: ConsumerRecord[bytes, bytes]
    ) -> None:
        pending = part.offsets.track(record.offset)
        try:
            message = self._decode(record)
        except (BadRecord, ValidationError) as exc:
            pending.acks.append(await self._dead_letter(record, exc))
            pending.decided = True
            return
        part.undecided += 1
        part.lanes.submit(message.sender_id, Inbound(record, message, pending))

    @staticmethod
    def _decode(record: ConsumerRecord[bytes, bytes]) -> UserMessage | SessionReset:
        if record.value is None:
            raise BadRecord("record has no value")
        message = decode_input(record.value)
        if record.key is not None and record.key != message.sender_id.encode():
            raise BadRecord(
                f"record key {record.key.decode('utf-8', 'replace')!r} differs from "
                f"sender_id {message.sender_id!r}"
            )
        return message

    # ---- deciding and publishing -----------------------------------------------------------

    async def _handle(self, part: AssignedPartition, item: Inbound) -> None:
        try:
            await part.restored.wait()
            if isinstance(item.message, SessionReset):
                await self._reset(part, item)
            else:
                await self._route(part, item, item.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A defect in deciding must not stop the partition: the record is kept in the DLQ.
            log.exception("failed to route %s", _where(item.record))
            item.pending.acks.append(await self._dead_letter(item.record, exc))
        finally:
            item.pending.decided = True
            part.undecided -= 1
            self._progress.set()

    async def _reset(self, part: AssignedPartition, item: Inbound) -> None:
        sender = item.message.sender_id
        part.sessions.pop(sender, None)
        item.pending.acks.append(await self._write_session(part, sender, None))

    async def _route(self, part: AssignedPartition, item: Inbound, message: UserMessage) -> None:
        record, pending = item.record, item.pending
        sender = message.sender_id
        now = self._clock()
        session = part.sessions.get(sender)
        if (
            session is not None
            and session.decision is not None
            and session.message_id == message.message_id
        ):
            # Redelivery of the message that opened this session: its decision, unchanged.
            routing = session.decision
            session.decision = None
            pending.acks.append(await self._publish(record, sender, routing))
            return
        # A redelivered message older than the restored session was decided without it.
        replayed = session is not None and record.offset < session.since_offset
        decision = await self.router.decide(None if replayed else session, message)
        routing = decision.to_routing(now)
        if not replayed:
            after = decision.session_after
            if after is None and session is not None:
                del part.sessions[sender]
                pending.acks.append(await self._write_session(part, sender, None))
            elif after is not None and (session is None or session.route is not after):
                opened = StickySession(after, record.offset, now, message.message_id)
                part.sessions[sender] = opened
                pending.acks.append(await self._write_session(part, sender, opened, routing))
            elif session is not None:
                session.seen_at = now
                if self._needs_refresh(session, now):
                    pending.acks.append(await self._write_session(part, sender, session))
        pending.acks.append(await self._publish(record, sender, routing))

    def _needs_refresh(self, session: StickySession, now: float) -> bool:
        # Keep the changelog's `seen_at` within half a TTL of the truth, so a restored
        # session does not expire much earlier than it would have in the old owner.
        ttl = self.settings.session_ttl
        return ttl > 0 and now - session.written_at > ttl / 2

    async def _publish(
        self, record: ConsumerRecord[bytes, bytes], sender: str, routing: Routing
    ) -> asyncio.Future[object]:
        assert self._producer is not None and record.value is not None
        topic = self._topics.calm if routing.route is Route.CALM else self._topics.nlu
        fut: asyncio.Future[object] = await self._producer.send(
            topic, encode_routed(record.value, routing), key=sender.encode()
        )
        return fut

    async def _write_session(
        self,
        part: AssignedPartition,
        sender: str,
        session: StickySession | None,
        routing: Routing | None = None,
    ) -> asyncio.Future[object]:
        """Changelog partition = input partition, whatever partitioner the connectors used."""
        assert self._producer is not None
        value = None
        if session is not None:
            session.written_at = session.seen_at
            value = encode_session(
                SessionRecord(
                    route=session.route,
                    since_offset=session.since_offset,
                    message_id=session.message_id,
                    routing=routing,
                    seen_at=session.seen_at,
                )
            )
        fut: asyncio.Future[object] = await self._producer.send(
            self._topics.sessions, value, key=sender.encode(), partition=part.number
        )
        return fut

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], error: BaseException
    ) -> asyncio.Future[object]:
        assert self._producer is not None
        letter = DeadLetter(
            error_type=type(error).__name__,
            error_message=_describe(error),
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
        )
        log.warning("dead-lettered %s: %s", _where(record), letter.error_message)
        fut: asyncio.Future[object] = await self._producer.send(
            self._topics.dlq, record.value, key=record.key, headers=letter.to_headers()
        )
        return fut

    # ---- committing ------------------------------------------------------------------------

    async def _commit_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.commit_interval)
            try:
                await self._commit(list(self._partitions))
            except DeliveryFailed as exc:
                log.error("a produced record was not acknowledged (%s); reconnecting", exc)
                self._failure = exc
                return

    async def _commit(self, numbers: list[int]) -> None:
        """Commit the acknowledged prefix of each partition in one request."""
        assert self._consumer is not None
        async with self._commit_lock:
            offsets: dict[TopicPartition, int] = {}
            for number in numbers:
                part = self._partitions.get(number)
                if part is None:
                    continue  # revoked: never commit for a partition we no longer own
                position = part.offsets.committable()
                if position is not None:
                    offsets[TopicPartition(self._topics.input, number)] = position
                    part.offsets.committed = position
            if not offsets:
                return
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # The group moved on; the new owner re-reads from the last good commit.
                log.warning("commit of %s failed: %s", _tps(offsets), exc)

    # ---- rebalancing -----------------------------------------------------------------------

    async def _assign(self, numbers: list[int]) -> None:
        """Take partitions: their records may arrive at once, but wait for the restore."""
        assert self._consumer is not None and self._restorer is not None
        fresh: list[AssignedPartition] = []
        for number in numbers:
            if number in self._partitions:
                continue
            parked = self._parked.pop(number, None)
            part = AssignedPartition(number, parked if parked is not None else {}, self._handle)
            self._partitions[number] = part
            if parked is None:
                fresh.append(part)
            else:
                part.restored.set()
        self._parked.clear()
        committed: dict[int, int] = {}
        for part in fresh:
            offset = await self._consumer.committed(TopicPartition(self._topics.input, part.number))
            committed[part.number] = offset if offset is not None else 0
        try:
            restored = await restore_sessions(
                self._restorer, self._topics.sessions, [p.number for p in fresh], committed
            )
        except KafkaError as exc:
            # Deciding without the sessions would break stickiness: reconnect and retry.
            log.error("restoring sessions of partitions %s failed: %s", committed, exc)
            self._failure = exc
            return
        for part in fresh:
            part.sessions.update(restored[part.number])
            part.restored.set()
        log.info("assigned input partitions %s", sorted(self._partitions))
        self.ready.set()

    async def _release(self, numbers: list[int], timeout: float, *, park: bool) -> None:
        """Finish (or abandon, past `timeout`) a partition's work, commit it, then drop it."""
        parts = [self._partitions[n] for n in numbers if n in self._partitions]
        for part in parts:
            part.revoked = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        clean: set[int] = set()
        for part in parts:
            finished = await part.lanes.wait_idle(max(0.0, deadline - loop.time()))
            if not finished:
                log.warning(
                    "partition %d: abandoning %d undecided messages after %.1fs; "
                    "they will be redelivered",
                    part.number,
                    part.undecided,
                    timeout,
                )
                await part.lanes.abandon()
            acks = part.offsets.acks_outstanding()
            if acks:
                await asyncio.wait(acks, timeout=max(0.1, deadline - loop.time()))
            if finished and not part.offsets.acks_outstanding():
                clean.add(part.number)
        try:
            await self._commit([p.number for p in parts])
        except DeliveryFailed as exc:
            log.error("not committing revoked partitions: %s", exc)
            clean.clear()
        for part in parts:
            del self._partitions[part.number]
            if park and part.number in clean and len(part.offsets) == 0:
                self._parked[part.number] = part.sessions
        self._progress.set()

    # ---- idle expiry -----------------------------------------------------------------------

    async def _expiry_loop(self, stop: asyncio.Event) -> None:
        ttl = self.settings.session_ttl
        if ttl <= 0:
            return
        period = max(0.05, min(ttl / 4, 30.0))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
            await self.expire_idle_sessions()

    async def expire_idle_sessions(self) -> int:
        """End sessions idle for longer than the TTL with a tombstone; returns how many."""
        ttl = self.settings.session_ttl
        now = self._clock()
        ended = 0
        for part in list(self._partitions.values()):
            if part.revoked:
                continue
            idle = [
                sender
                for sender, session in part.sessions.items()
                if now - session.seen_at >= ttl and not part.lanes.busy(sender)
            ]
            for sender in idle:
                if part.revoked or part.lanes.busy(sender):
                    continue
                part.sessions.pop(sender, None)
                await self._write_session(part, sender, None)
                ended += 1
        if ended:
            log.info("ended %d idle sessions", ended)
        return ended


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: RoutingWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in revoked if tp.topic == self._worker._topics.input]
        await self._worker._release(numbers, self._worker.settings.rebalance_timeout, park=True)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in assigned if tp.topic == self._worker._topics.input]
        await self._worker._assign(numbers)


def _where(record: ConsumerRecord[bytes, bytes]) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


def _tps(offsets: Mapping[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]={o}" for tp, o in offsets.items())


def _describe(error: BaseException) -> str:
    """One line naming what is wrong (pydantic errors without the offending input values)."""
    if isinstance(error, ValidationError):
        parts = []
        for problem in error.errors(include_input=False, include_url=False):
            where = ".".join(str(p) for p in problem["loc"]) or "record"
            parts.append(f"{where}: {problem['msg']}")
        return "; ".join(parts)
    return str(error) or type(error).__name__
