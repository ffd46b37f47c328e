"""From an input record of an owned partition to its outputs: decode, decide, publish.

A message that needs nothing fetched (an intent in `parse_data`, a sticky session, an intent
payload) is decided in the fetch loop as it is read, with no task and no await, unless an earlier
message of its sender still waits; a message that waits for the NLU server or the LLM goes to
its sender's lane, and so do the sender's next messages until the lane is empty. Router calls in
flight are bounded by `max_in_flight`. Anything that goes wrong with one record (it cannot be
decoded, its outputs are too large for their topics, a defect in deciding it) sends that record
to the DLQ and the partition goes on. With tracing (worker.runtime.tracing), each record is taken,
decided and published within its tracing scope; without it, nothing of tracing runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import ConsumerRecord
from pydantic import ValidationError

from contracts.models import SessionReset, UserMessage, block_of, decode_input
from worker.kafka.outbox import RecordTooLarge
from worker.routing.decision import RoutingDecision
from worker.routing.session import StickySession
from worker.runtime.coexistence_router import CoexistenceRouter
from worker.runtime.observer import RuntimeObserver
from worker.runtime.partition import AssignedPartition, Inbound, MembershipLost
from worker.runtime.publisher import Publisher, where
from worker.runtime.tracing import MessageTracing
from worker.runtime.transition import Write, after_decision, after_reset

log = logging.getLogger(__name__)


class BadRecord(ValueError):
    """A record that cannot be routed; it goes to the DLQ with this error."""


class Dispatcher:
    def __init__(
        self,
        router: CoexistenceRouter,
        publisher: Publisher,
        observer: RuntimeObserver,
        *,
        max_in_flight: int,
        session_ttl: float,
        clock: Callable[[], float],
        on_decided: Callable[[], None],
        on_fetchable: Callable[[], None],
        alive: Callable[[], bool],
        on_failure: Callable[[BaseException], None],
        tracing: MessageTracing | None = None,
    ) -> None:
        self._router = router
        self._publisher = publisher
        self._observer = observer
        self._calls = asyncio.Semaphore(max_in_flight)
        self._ttl = session_ttl
        self._clock = clock
        self._on_decided = on_decided  # the committer counts decisions
        self._on_fetchable = on_fetchable  # a lane's message is done: its partition may fetch
        # False when the member may have lost its partitions while a lane waited (the process
        # was stopped, or its loop blocked, past the group's session timeout).
        self._alive = alive
        self._on_failure = on_failure
        # Per message: not even a call when nobody listens.
        listening = type(observer).decided is not RuntimeObserver.decided
        self._decided = observer.decided if listening else None
        self._tracing = tracing
        if tracing is not None:
            # Only then, so that the untraced fetch loop pays nothing for it per message.
            self.dispatch = self._dispatch_traced  # type: ignore[method-assign]

    def _dispatch_traced(
        self, part: AssignedPartition, record: ConsumerRecord[bytes, bytes]
    ) -> None:
        assert self._tracing is not None
        with self._tracing.message(record):
            Dispatcher.dispatch(self, part, record)

    def dispatch(self, part: AssignedPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        """Decide the record now when nothing needs waiting for, else queue it in its lane."""
        pending = part.offsets.track(record.offset)
        try:
            message = decode(record)
        except (BadRecord, ValidationError) as exc:
            self._dead_letter(record, pending.acks, exc, bad_input=True)
            pending.decided = True
            self._on_decided()
            return
        item = Inbound(record, message, pending)
        sender = message.sender_id
        # In fetch order and without a task: no earlier message of the sender waits in its
        # lane, it is no redelivery, and the router needs no I/O.
        if not part.lanes.busy(sender) and sender not in part.state.replay:
            try:
                if isinstance(message, SessionReset):
                    self._reset(part, item, message)
                    self._done(item)
                    return
                session = part.state.sessions.get(sender)
                decision = self._router.decide_now(session, message)
                if decision is not None:
                    self._apply(part, item, message, session, decision)
                    pending.decided = True
                    self._on_decided()
                    return
            except Exception as exc:  # noqa: BLE001 - see handle
                self._dead_letter(record, pending.acks, exc)
                self._done(item)
                return
        part.undecided += 1
        part.lanes.submit(sender, item)

    async def handle(self, part: AssignedPartition, item: Inbound) -> None:
        """A message of a sender's lane: decided once the earlier ones are."""
        if self._tracing is None:
            await self._handle(part, item)
        else:
            with self._tracing.message(item.record):
                await self._handle(part, item)

    async def _handle(self, part: AssignedPartition, item: Inbound) -> None:
        try:
            if isinstance(item.message, SessionReset):
                self._reset(part, item, item.message)
            else:
                await self._route(part, item, item.message)
        except asyncio.CancelledError:
            # Abandoned: the offset stays undecided, so it is never committed past.
            raise
        except MembershipLost as exc:
            self._on_failure(exc)  # undecided: whoever holds the partition now decides it
        except Exception as exc:  # noqa: BLE001 - a defect must not stop the partition
            try:
                self._dead_letter(item.record, item.pending.acks, exc)
            except Exception as failed:  # noqa: BLE001 - nowhere to put it: start over
                log.exception("cannot dead-letter %s", where(item.record))
                self._on_failure(failed)
                return
            self._done(item)
        else:
            self._done(item)
        finally:
            part.undecided -= 1
            self._on_fetchable()

    def _done(self, item: Inbound) -> None:
        item.pending.decided = True
        self._on_decided()

    def _dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        acks: list[asyncio.Future[int]],
        error: Exception,
        *,
        bad_input: bool = False,
    ) -> None:
        """The record goes to the DLQ (a bad record, or one that cannot be routed)."""
        if isinstance(error, RecordTooLarge):
            log.error("cannot route %s whole: %s", where(record), error)
        elif not bad_input:
            log.exception("failed to route %s", where(record))
        acks.append(self._publisher.dead_letter(record, error))
        self._observer.dead_lettered(record.partition, record.offset, type(error).__name__)

    def _reset(self, part: AssignedPartition, item: Inbound, message: SessionReset) -> None:
        sender, offset = message.sender_id, item.record.offset
        if part.history(sender, offset) is not None:
            return  # decided before: its tombstone, and whatever followed, is in the changelog
        sessions = part.state.sessions
        if after_reset(sessions.get(sender)) is Write.END:
            ack = self._publisher.session(part.number, sender, None, input_offset=offset)
            item.pending.acks.append(part.changelog_write(ack))
            sessions.pop(sender)

    async def _route(self, part: AssignedPartition, item: Inbound, message: UserMessage) -> None:
        record, sender = item.record, message.sender_id
        history = part.history(sender, record.offset)
        if history is not None:
            # A redelivery of a message decided before (see worker.runtime.replay): the same
            # decision, and no state change, since the changelog already holds what followed.
            stored = history.decision_for(record.offset, message.message_id)
            if stored is None:
                decision = await self._decide(history.session_before(record.offset), message)
                routing = decision.routing(self._clock())
            else:
                routing = block_of(stored)
            self._still_held(part)
            item.pending.acks.append(self._publisher.routed(record, sender, routing))
            if self._decided is not None:
                self._decided(part.number, record.offset, routing)
            return
        session = part.state.sessions.get(sender)
        decision = await self._decide(session, message)
        self._still_held(part)
        self._apply(part, item, message, session, decision)

    def _still_held(self, part: AssignedPartition) -> None:
        """After a lane's wait: publish only while the member may still hold the partition."""
        if not self._alive():
            raise MembershipLost(f"partition {part.number} may be held by another member now")

    async def _decide(self, session: StickySession | None, message: UserMessage) -> RoutingDecision:
        decision = self._router.decide_now(session, message)
        if decision is not None:
            return decision
        async with self._calls:
            return await self._router.decide(session, message)

    def _apply(
        self,
        part: AssignedPartition,
        item: Inbound,
        message: UserMessage,
        session: StickySession | None,
        decision: RoutingDecision,
    ) -> None:
        """Publish a decision, then (its records queued) hold the session it leaves."""
        record, sender = item.record, message.sender_id
        now = self._clock()
        routing = decision.routing(now)
        after, write = after_decision(session, decision, record.offset, now, self._ttl)
        changelog = self._publisher.decision(
            record,
            sender,
            routing,
            after,
            write,
            message_id=message.message_id,
            acks=item.pending.acks,
        )
        if changelog is not None:
            part.changelog_write(changelog)
        sessions = part.state.sessions
        if after is None:
            if session is not None:
                sessions.pop(sender)
        else:
            sessions.put(sender, after)
        if self._decided is not None:
            self._decided(part.number, record.offset, routing)


def decode(record: ConsumerRecord[bytes, bytes]) -> UserMessage | SessionReset:
    if record.value is None:
        raise BadRecord("record has no value")
    message = decode_input(record.value)
    if record.key is not None and record.key != message.sender_id.encode():
        shown = record.key[:100].decode("utf-8", "replace")
        raise BadRecord(
            f"record key {shown!r}{'…' if len(record.key) > 100 else ''} differs from "
            f"sender_id {message.sender_id[:100]!r}"
        )
    return message
