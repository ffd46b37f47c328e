"""The consumer-group worker: fetch, decide per sender in order, publish, commit what is safe.

Flow of one input record:
  fetch (at most `max_in_flight` undecided; at the bound the partitions are paused) -> decode
  (bad: DLQ) -> decide at once when nothing needs fetching and no earlier message of the sender
  waits, else in the sender's lane once the NLU server or the LLM answers -> changelog + inbox
  records into the outbox -> acknowledged by the broker -> its offset joins the committable
  prefix -> commit, batched by time and by count.
Sessions live in memory per assigned partition, restored from the changelog partition with the
same number before that partition's first message is decided. The restore runs outside the
rebalance callback: aiokafka sends no heartbeats while a callback runs, so a long restore there
would get the worker thrown out of the group, over and over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError

from contracts.models import SessionReset, UserMessage, block_of, decode_input
from worker.config.endpoints import Topics
from worker.kafka.client_logs import quiet_client_logs
from worker.kafka.connect_errors import describe_connection_failure
from worker.kafka.outbox import Ack, Outbox
from worker.kafka.topics import TopicLayoutError, ensure_topics
from worker.routing.decision import RoutingDecision
from worker.routing.session import SessionTable, StickySession
from worker.runtime.changelog import restore_sessions, unchanged_since
from worker.runtime.coexistence_router import CoexistenceRouter
from worker.runtime.lanes import SenderLanes
from worker.runtime.offsets import DeliveryFailed, OffsetTracker, PendingOffset
from worker.runtime.publisher import Publisher, where
from worker.runtime.replay import Replay, SenderHistory

log = logging.getLogger(__name__)

MAX_REQUEST_SIZE = 1_048_576  # bytes: aiokafka's default, and Kafka's default message.max.bytes


@dataclass(frozen=True)
class RuntimeSettings:
    connection: Mapping[str, Any]  # aiokafka connection kwargs (bootstrap servers, security)
    topics: Topics = field(default_factory=Topics)
    group_id: str = "coexistence-router"
    create_topics: bool = True
    partitions: int = 6
    replication_factor: int = 1
    max_in_flight: int = 256
    commit_interval: float = 0.5  # seconds between commits ...
    commit_count: int = 500  # ... or sooner, once this many offsets completed since the last
    session_ttl: float = 0.0  # seconds of idleness that end a session; 0 = never
    shutdown_timeout: float = 10.0
    rebalance_timeout: float = 10.0
    # The group coordinator's failure detection; Tansu also delays a join by half of it.
    session_timeout: float = 10.0
    fetch_max_wait_ms: int = 100
    reconnect_backoff_max: float = 30.0


class BadRecord(ValueError):
    """A record that cannot be routed; it goes to the DLQ with this error."""


@dataclass(slots=True)
class Inbound:
    record: ConsumerRecord[bytes, bytes]
    message: UserMessage | SessionReset | None  # None: it could not be decoded
    pending: PendingOffset


class AssignedPartition:
    """One input partition this worker owns: its sessions, lanes and uncommitted offsets."""

    def __init__(
        self, number: int, handle: Callable[[AssignedPartition, Inbound], Awaitable[None]]
    ) -> None:
        self.number = number
        self.sessions = SessionTable()
        self.replay: Replay = {}
        self.offsets = OffsetTracker()
        self.lanes: SenderLanes[Inbound] = SenderLanes(lambda item: handle(self, item))
        self.undecided = 0
        self.revoked = False
        # Set once the changelog partition is read; no message is decided before that.
        self.restored = asyncio.Event()
        # Idle-expiry tombstones: no input offset waits for them, revocation does.
        self.expiry_acks: list[Ack] = []
        # How far this worker knows the changelog partition: its restore, then its own writes.
        self.changelog_end = 0
        self.changelog_ack: Ack | None = None  # the last changelog batch being watched

    def changelog_written(self, ack: Ack) -> None:
        if not ack.cancelled() and ack.exception() is None:
            self.changelog_end = max(self.changelog_end, ack.result())

    def history(self, sender: str, offset: int) -> SenderHistory | None:
        """The sender's replay history while `offset` is a redelivery decided before."""
        history = self.replay.get(sender)
        if history is not None and not history.covers(offset):
            del self.replay[sender]  # past the last message decided before: routed normally
            return None
        return history


@dataclass(frozen=True, slots=True)
class Parked:
    """Sessions of a cleanly revoked partition; valid if its changelog still ends where this
    worker last knew it to (else another member wrote there meanwhile)."""

    sessions: SessionTable
    changelog_end: int


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
        # Eager rebalancing revokes everything, and often gives the same partitions back.
        self._parked: dict[int, Parked] = {}
        self._progress = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._commit_due = asyncio.Event()
        self._decided_since_commit = 0
        self._failure: BaseException | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._publisher: Publisher | None = None
        self._outbox: Outbox | None = None
        self._restorer: AIOKafkaConsumer | None = None
        self._restore_task: asyncio.Task[None] | None = None
        self._connected = False
        self.ready = asyncio.Event()  # set once partitions are assigned and restored

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; broker trouble is retried with backoff, never a crash."""
        quiet_client_logs()
        initial = backoff = 0.5
        while not stop.is_set():
            self._connected = False
            try:
                await self._run_connected(stop)
                return
            except TopicLayoutError:
                raise
            except (KafkaError, DeliveryFailed, OSError) as exc:
                if self._connected:
                    backoff = initial  # it worked for a while: a fresh failure, not a loop
                log.warning(
                    "kafka at %s unavailable (%s); retrying in %.1fs",
                    self.settings.connection.get("bootstrap_servers"),
                    describe_connection_failure(exc, self.settings.connection),
                    backoff,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, self.settings.reconnect_backoff_max)

    async def _run_connected(self, stop: asyncio.Event) -> None:
        settings = self.settings
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
            max_request_size=MAX_REQUEST_SIZE,
        )
        self._outbox = outbox = Outbox(self._producer, max_request_size=MAX_REQUEST_SIZE)
        self._publisher = Publisher(outbox, self._topics)
        self._consumer = AIOKafkaConsumer(
            **conn,
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max(1, settings.max_in_flight),
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=max(100, int(settings.session_timeout * 1000 / 3)),
            rebalance_timeout_ms=int((settings.rebalance_timeout + 5) * 1000),
            # Tansu holds every fetch for the full wait even when records arrive; Kafka answers
            # as soon as there are any. Either way this bounds an idle partition's added latency.
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
        )
        self._restorer = AIOKafkaConsumer(
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
        started: list[Any] = []
        try:
            # Connecting may hang on an unreachable broker: a stop signal must still win.
            if not await _unless_stopped(self._ensure_topics(), stop):
                return
            for client in (self._producer, self._restorer, self._consumer):
                started.append(client)  # closed below even if its start is cut short
                if not await _unless_stopped(client.start(), stop):
                    return
            topics = self._topics
            if not await _unless_stopped(outbox.learn([topics.calm, topics.nlu, topics.dlq]), stop):
                return
            self._connected = True
            log.info("connected to kafka at %s", conn.get("bootstrap_servers"))
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
            await self._cancel_restore()
            self.ready.clear()
            # Leave the group first (its commits are done), then flush and close the rest;
            # all of it within one more shutdown_timeout, even with the broker gone.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.shutdown_timeout
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(outbox.flush(), self.settings.shutdown_timeout / 2)
            await outbox.close()
            for client in reversed(started):
                try:
                    await asyncio.wait_for(client.stop(), max(0.1, deadline - loop.time()))
                except Exception as exc:  # noqa: BLE001 - closing is best effort
                    log.warning("closing %s: %r", type(client).__name__, exc)
            self._partitions.clear()
            self._parked.clear()
            self._consumer = self._producer = self._restorer = None
            self._publisher = self._outbox = None

    async def _ensure_topics(self) -> None:
        await ensure_topics(
            self.settings.connection,
            self._topics,
            create=self.settings.create_topics,
            partitions=self.settings.partitions,
            replication_factor=self.settings.replication_factor,
        )

    async def _drain_all(self) -> None:
        """Shutdown: finish in-flight work within the bound, commit it, then leave the group."""
        numbers = list(self._partitions)
        if numbers:
            await self._release(numbers, self.settings.shutdown_timeout, park=False)

    # ---- fetching --------------------------------------------------------------------------

    def _undecided(self) -> int:
        return sum(p.undecided for p in self._partitions.values())

    async def _fetch_loop(self, stop: asyncio.Event) -> None:
        consumer, outbox = self._consumer, self._outbox
        assert consumer is not None and outbox is not None
        limit = self.settings.max_in_flight
        while not stop.is_set() and self._failure is None:
            self._progress.clear()
            free = limit - self._undecided()
            if free <= 0:
                # Backpressure: no fetching at all (not even into aiokafka's buffer) until some
                # decisions are made. Pausing again each round covers a rebalance meanwhile.
                consumer.pause(*consumer.assignment())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), 0.5)
                continue
            consumer.resume(*consumer.paused())
            batch = await consumer.getmany(timeout_ms=200, max_records=free)
            for tp, records in batch.items():
                part = self._partitions.get(tp.partition)
                if part is None or part.revoked:
                    if part is None and tp in consumer.assignment():
                        # Not taken yet: fetch these again rather than skip past them.
                        consumer.seek(tp, records[0].offset)
                    continue  # revoked while the fetch was in flight: the new owner reads it
                for record in records:
                    self._dispatch(part, record)
            if not outbox.has_room():
                # The outbox's batches are bounded: fetch no more while the producer lags (it
                # may lag for its whole request timeout with the broker gone: stop still wins).
                await _unless_stopped(outbox.room(), stop)

    def _dispatch(self, part: AssignedPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        """Decide the record now when nothing needs waiting for, else queue it in its lane."""
        pending = part.offsets.track(record.offset)
        try:
            message = self._decode(record)
        except (BadRecord, ValidationError) as exc:
            self._dead_letter(Inbound(record, None, pending), exc)
            return
        item = Inbound(record, message, pending)
        sender = message.sender_id
        # In fetch order and without a task: the partition is restored, no earlier message of
        # the sender waits in its lane, it is no redelivery, and the router needs no I/O.
        if part.restored.is_set() and not part.lanes.busy(sender) and sender not in part.replay:
            try:
                if isinstance(message, SessionReset):
                    self._reset(part, item, message)
                    self._decided(pending)
                    return
                session = part.sessions.get(sender)
                decision = self.router.decide_now(session, message)
                if decision is not None:
                    self._apply(part, item, message, session, decision)
                    self._decided(pending)
                    return
            except Exception as exc:  # noqa: BLE001 - see _handle
                self._dead_letter(item, exc)
                return
        part.undecided += 1
        part.lanes.submit(sender, item)

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
        """A message of a sender's lane: decided once the earlier ones are."""
        try:
            await part.restored.wait()
            if isinstance(item.message, SessionReset):
                self._reset(part, item, item.message)
            else:
                assert item.message is not None
                await self._route(part, item, item.message)
        except asyncio.CancelledError:
            # Abandoned: the offset stays undecided, so it is never committed past.
            raise
        except Exception as exc:  # noqa: BLE001 - a defect must not stop the partition
            self._dead_letter(item, exc)
        else:
            self._decided(item.pending)
        finally:
            part.undecided -= 1
            self._progress.set()

    def _dead_letter(self, item: Inbound, error: Exception) -> None:
        """The record goes to the DLQ (a bad record, or a defect in deciding it)."""
        assert self._publisher is not None
        if item.message is not None:
            log.exception("failed to route %s", where(item.record))
        item.pending.acks.append(self._publisher.dead_letter(item.record, error))
        self._decided(item.pending)

    def _decided(self, pending: PendingOffset) -> None:
        pending.decided = True
        self._decided_since_commit += 1
        if self._decided_since_commit >= self.settings.commit_count:
            self._commit_due.set()

    def _reset(self, part: AssignedPartition, item: Inbound, message: SessionReset) -> None:
        sender, offset = message.sender_id, item.record.offset
        if part.history(sender, offset) is not None:
            return  # decided before: its tombstone, and whatever followed, is in the changelog
        part.sessions.pop(sender)
        item.pending.acks.append(self._write_session(part, sender, None, input_offset=offset))

    async def _route(self, part: AssignedPartition, item: Inbound, message: UserMessage) -> None:
        assert self._publisher is not None
        record, sender = item.record, message.sender_id
        history = part.history(sender, record.offset)
        if history is not None:
            # A redelivery of a message decided before (see worker.runtime.replay): the same
            # decision, and no state change, since the changelog already holds what followed.
            routing = history.decision_for(record.offset, message.message_id)
            if routing is None:
                earlier = history.session_before(record.offset)
                decision = await self.router.decide(earlier, message)
                block = decision.routing(self._clock())
            else:
                block = block_of(routing)
            item.pending.acks.append(self._publisher.routed(record, sender, block))
            return
        session = part.sessions.get(sender)
        decision = await self.router.decide(session, message)
        self._apply(part, item, message, session, decision)

    def _apply(
        self,
        part: AssignedPartition,
        item: Inbound,
        message: UserMessage,
        session: StickySession | None,
        decision: RoutingDecision,
    ) -> None:
        """Publish a decision: the session change to the changelog, then the routed message."""
        assert self._publisher is not None
        record, acks, sender = item.record, item.pending.acks, message.sender_id
        now = self._clock()
        routing = decision.routing(now)
        after = decision.session_after
        if after is None and session is not None:
            part.sessions.pop(sender)
            acks.append(self._write_session(part, sender, None, input_offset=record.offset))
        elif after is not None and (session is None or session.route is not after):
            opened = StickySession(after, record.offset, now)
            part.sessions.put(sender, opened)
            # The opening decision is stored with the session: a redelivery gets it back.
            acks.append(
                self._write_session(
                    part,
                    sender,
                    opened,
                    input_offset=record.offset,
                    routing=routing,
                    message_id=message.message_id,
                )
            )
        elif session is not None:
            session.seen_at = now
            if self._needs_refresh(session, now):
                acks.append(self._write_session(part, sender, session, input_offset=record.offset))
            part.sessions.put(sender, session)
        # After the state record: a crash never leaves an output whose state change was lost.
        acks.append(self._publisher.routed(record, sender, routing))

    def _write_session(
        self,
        part: AssignedPartition,
        sender: str,
        state: StickySession | None,
        **extra: Any,
    ) -> Ack:
        assert self._publisher is not None
        ack = self._publisher.session(part.number, sender, state, **extra)
        if ack is not part.changelog_ack:  # records of one batch share their ack
            part.changelog_ack = ack
            ack.add_done_callback(part.changelog_written)
        return ack

    def _needs_refresh(self, session: StickySession, now: float) -> bool:
        # Keep the changelog's `seen_at` within half a TTL of the truth, so a restored
        # session does not expire much earlier than it would have in the old owner.
        ttl = self.settings.session_ttl
        return ttl > 0 and now - session.written_at > ttl / 2

    # ---- committing ------------------------------------------------------------------------

    async def _commit_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            waiters = [
                asyncio.create_task(stop.wait()),
                asyncio.create_task(self._commit_due.wait()),
            ]
            try:
                await asyncio.wait(
                    waiters,
                    timeout=self.settings.commit_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if stop.is_set():
                return  # the drain commits
            by_count = self._commit_due.is_set()
            self._commit_due.clear()
            self._decided_since_commit = 0
            if by_count:
                # Commit the full count once its records are in, not a round later.
                acks = [a for p in self._partitions.values() for a in p.offsets.acks_outstanding()]
                if acks:
                    await asyncio.wait(acks, timeout=self.settings.commit_interval)
            try:
                await self._commit(list(self._partitions))
            except DeliveryFailed as exc:
                log.error("a produced record was not acknowledged (%s); reconnecting", exc)
                self._failure = exc
                self._progress.set()
                return

    async def _commit(self, numbers: list[int]) -> None:
        """Commit the acknowledged prefix of each partition in one request."""
        assert self._consumer is not None
        async with self._commit_lock:
            offsets: dict[TopicPartition, int] = {}
            parts: list[AssignedPartition] = []
            for number in numbers:
                part = self._partitions.get(number)
                if part is None:
                    continue  # revoked: never commit for a partition we no longer own
                position = part.offsets.committable()
                if position is not None:
                    offsets[TopicPartition(self._topics.input, number)] = position
                    parts.append(part)
            if not offsets:
                return
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # The group moved on; the new owner re-reads from the last good commit.
                log.warning("commit of %s failed: %s", _tps(offsets), exc)
                return
            for part in parts:
                part.offsets.committed = offsets[TopicPartition(self._topics.input, part.number)]
            log.debug("committed %s", _tps(offsets))

    # ---- rebalancing -----------------------------------------------------------------------

    def _assign(self, numbers: list[int]) -> None:
        """Take partitions: their records may be fetched at once, but wait for the restore."""
        for number in numbers:
            if number not in self._partitions:
                self._partitions[number] = AssignedPartition(number, self._handle)
        for number in list(self._parked):
            if number not in self._partitions:
                del self._parked[number]  # went elsewhere: its changelog will move on
        log.info("assigned input partitions %s", sorted(self._partitions))
        if self._restore_task is None or self._restore_task.done():
            self._restore_task = asyncio.create_task(self._restore_pending(), name="restore")

    async def _restore_pending(self) -> None:
        """Restore every assigned partition not restored yet; then the worker is ready."""
        try:
            while parts := [
                p for p in self._partitions.values() if not p.restored.is_set() and not p.revoked
            ]:
                await self._restore(parts)
        except (KafkaError, TimeoutError) as exc:
            # Deciding without the sessions would break stickiness: reconnect and retry (which
            # also creates the changelog again if it is gone).
            log.error("restoring sessions failed: %r", exc)
            self._failure = exc
            self._progress.set()
            return
        self.ready.set()

    async def _restore(self, parts: list[AssignedPartition]) -> None:
        assert self._consumer is not None and self._restorer is not None
        parked = {p.number: self._parked.pop(p.number) for p in parts if p.number in self._parked}
        if parked:
            unchanged = await unchanged_since(
                self._restorer,
                self._topics.sessions,
                {n: kept.changelog_end for n, kept in parked.items()},
                self.settings.rebalance_timeout,
            )
            for part in parts:
                kept = parked.get(part.number)
                if kept is not None and part.number in unchanged:
                    # Nobody wrote to its changelog since we did: our sessions are current.
                    part.sessions = kept.sessions
                    part.changelog_end = kept.changelog_end
                    part.restored.set()
        fresh = [p for p in parts if not p.restored.is_set()]
        if not fresh:
            return
        committed: dict[int, int] = {}
        for part in fresh:
            offset = await self._consumer.committed(TopicPartition(self._topics.input, part.number))
            committed[part.number] = offset if offset is not None else 0
        restored = await restore_sessions(
            self._restorer,
            self._topics.sessions,
            list(committed),
            committed,
            metadata_timeout=self.settings.rebalance_timeout,
        )
        for part in fresh:
            if not part.revoked:
                part.sessions = restored[part.number].sessions
                part.replay = restored[part.number].replay
                part.changelog_end = max(part.changelog_end, restored[part.number].end)
                part.restored.set()

    async def _cancel_restore(self) -> None:
        task, self._restore_task = self._restore_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _release(self, numbers: list[int], timeout: float, *, park: bool) -> None:
        """Finish (or abandon, past `timeout`) a partition's work, commit it, then drop it."""
        parts = [self._partitions[n] for n in numbers if n in self._partitions]
        if not parts:
            return
        for part in parts:
            part.revoked = True
        await self._cancel_restore()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        clean: set[int] = set()
        for part in parts:
            if part.restored.is_set():
                finished = await part.lanes.wait_idle(max(0.0, deadline - loop.time()))
            else:
                finished = False  # nothing of it was decided: nothing to wait for
            if not finished:
                if part.restored.is_set():
                    log.warning(
                        "partition %d: abandoning %d undecided messages after %.1fs; "
                        "they will be redelivered",
                        part.number,
                        part.undecided,
                        timeout,
                    )
                await part.lanes.abandon()
            acks = part.offsets.acks_outstanding()
            acks += [ack for ack in part.expiry_acks if not ack.done()]
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
            if self._partitions.get(part.number) is part:  # a shutdown may race a rebalance
                del self._partitions[part.number]
            committed = len(part.offsets) == 0 and part.offsets.position == part.offsets.committed
            # Only when all is committed: a redelivery would otherwise meet sessions it opened.
            if park and part.number in clean and committed:
                self._parked[part.number] = Parked(part.sessions, part.changelog_end)
        log.info("released input partitions %s", sorted(p.number for p in parts))
        self._progress.set()
        if any(not p.restored.is_set() for p in self._partitions.values()):
            self._restore_task = asyncio.create_task(self._restore_pending(), name="restore")

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
        assert self._publisher is not None
        ttl = self.settings.session_ttl
        now = self._clock()
        ended = 0
        for part in list(self._partitions.values()):
            if part.revoked or not part.restored.is_set():
                continue
            part.expiry_acks = [ack for ack in part.expiry_acks if not ack.done()]
            for sender in part.sessions.idle_senders(now, ttl):
                if part.lanes.busy(sender):
                    continue  # a message of the sender is being decided: not idle
                part.sessions.pop(sender)
                part.expiry_acks.append(self._write_session(part, sender, None))
                ended += 1
        if ended:
            log.info("ended %d idle sessions", ended)
        return ended


async def _unless_stopped(step: Awaitable[Any], stop: asyncio.Event) -> bool:
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


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: RoutingWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in revoked if tp.topic == self._worker._topics.input]
        await self._worker._release(numbers, self._worker.settings.rebalance_timeout, park=True)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in assigned if tp.topic == self._worker._topics.input]
        self._worker._assign(numbers)


def _tps(offsets: Mapping[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]={o}" for tp, o in offsets.items())
