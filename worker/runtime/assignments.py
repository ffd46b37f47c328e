"""The input partitions this member holds: assign, restore, release, park.

Assign: the group gives partitions; each is paused (nothing of it is fetched) until its
changelog partition is read into memory, in a task of its own rather than in aiokafka's
rebalance callback, so a long restore neither blocks the group nor stops the fetch loop.

Release, when the group takes partitions back: first the member proves it still holds them (a
commit the coordinator accepts). A member that cannot — it was thrown out of the group, or the
coordinator does not answer — is fenced: its lanes are cancelled at once, nothing more of those
partitions is written or committed, since another member may be restoring them already, and the
connection is closed (outbox, producer, then consumer) so that none of their records still
queued is sent; the worker joins again as a new member. A member
that can gives their lanes `rebalance_timeout` to finish (the rest is abandoned and will be
redelivered), waits until the broker has answered every record they wrote, commits, and only
then lets aiokafka rejoin: no write of a released partition can reach the broker after its next
owner started reading the changelog.

Park: under eager rebalancing every partition is revoked and many come straight back. A released
partition whose every offset was committed keeps its whole restored state; it is reused if the
changelog still ends exactly where this member last wrote (else another member wrote there and
it is restored again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from worker.config.endpoints import Topics
from worker.runtime.changelog import RestoredPartition, restore_sessions, unchanged_since
from worker.runtime.committer import Commit, Committer
from worker.runtime.observer import Restored, RuntimeObserver
from worker.runtime.offsets import DeliveryFailed
from worker.runtime.partition import AssignedPartition, Inbound, MembershipLost, Phase

log = logging.getLogger(__name__)


class Assignments:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        restorer: AIOKafkaConsumer,
        committer: Committer,
        observer: RuntimeObserver,
        topics: Topics,
        *,
        handle: Callable[[AssignedPartition, Inbound], Awaitable[None]],
        metadata_timeout: float,
        on_failure: Callable[[BaseException], None],
        on_restored: Callable[[], None],
        ready: asyncio.Event,
    ) -> None:
        self._consumer = consumer
        self._restorer = restorer
        self._committer = committer
        self._observer = observer
        self._topics = topics
        self._handle = handle
        self._metadata_timeout = metadata_timeout
        self._on_failure = on_failure  # the worker reconnects
        self._on_restored = on_restored  # the fetch loop may wait while it is held
        self._partitions: dict[int, AssignedPartition] = {}
        self._parked: dict[int, RestoredPartition] = {}
        self._restore_task: asyncio.Task[None] | None = None
        # Releases, fences and the shutdown's close one at a time (a stop may race a rebalance).
        self._releasing = asyncio.Lock()
        self._ready = ready  # set while in the group with every partition restored
        self.in_group = False  # between an assignment and the next revocation

    def __iter__(self) -> Iterator[AssignedPartition]:
        return iter(list(self._partitions.values()))

    def get(self, number: int) -> AssignedPartition | None:
        return self._partitions.get(number)

    def tp(self, number: int) -> TopicPartition:
        return TopicPartition(self._topics.input, number)

    # ---- assign and restore ----------------------------------------------------------------

    def assign(self, numbers: list[int]) -> None:
        """Take partitions: paused until restored."""
        for number in numbers:
            if number not in self._partitions:
                self._partitions[number] = AssignedPartition(number, self._handle)
        for number in list(self._parked):
            if number not in self._partitions:
                del self._parked[number]  # went elsewhere: its changelog will move on
        self.in_group = True
        log.info("assigned input partitions %s", sorted(self._partitions))
        self._observer.assigned(tuple(sorted(self._partitions)))
        self._restore_pending()
        self._update_ready()

    def _update_ready(self) -> None:
        parts = self._partitions.values()
        if self.in_group and all(p.owned for p in parts):
            self._ready.set()
        else:
            self._ready.clear()

    def _restore_pending(self) -> None:
        if any(p.phase is Phase.RESTORING for p in self._partitions.values()) and (
            self._restore_task is None or self._restore_task.done()
        ):
            self._restore_task = asyncio.create_task(self._restore_all(), name="restore")

    async def _restore_all(self) -> None:
        try:
            while parts := [p for p in self._partitions.values() if p.phase is Phase.RESTORING]:
                await self._restore(parts)
        except (KafkaError, TimeoutError) as exc:
            # Deciding without the sessions would break stickiness: reconnect and retry (which
            # also creates the changelog again if it is gone).
            log.error("restoring sessions failed: %r", exc)
            self._on_failure(exc)

    async def _restore(self, parts: list[AssignedPartition]) -> None:
        kept = {p.number: self._parked.pop(p.number) for p in parts if p.number in self._parked}
        started = time.monotonic()
        if kept:
            unchanged = await unchanged_since(
                self._restorer,
                self._topics.sessions,
                {n: state.end for n, state in kept.items()},
                self._metadata_timeout,
            )
            for part in parts:
                state = kept.get(part.number)
                if state is not None and part.number in unchanged:
                    # Nobody wrote to its changelog since this member did: all of it is current.
                    self._restored(part, state, time.monotonic() - started, kept=True)
        fresh = [p for p in parts if p.phase is Phase.RESTORING]
        if not fresh:
            return
        floors = {p.number: await self._floor(p.number) for p in fresh}
        started = time.monotonic()
        numbers = tuple(sorted(floors))
        restored = await restore_sessions(
            self._restorer,
            self._topics.sessions,
            list(floors),
            floors,
            metadata_timeout=self._metadata_timeout,
            progress=lambda records: self._observer.restore_progress(numbers, records),
        )
        seconds = time.monotonic() - started
        for part in fresh:
            if part.phase is Phase.RESTORING:
                self._restored(part, restored[part.number], seconds, kept=False)

    async def _floor(self, number: int) -> int:
        """The first input offset that can still be delivered to this partition's owner: its
        committed offset, else (a new group) the first offset the input partition holds.
        Changelog records written for earlier offsets describe messages never seen again."""
        tp = self.tp(number)
        committed = await asyncio.wait_for(self._consumer.committed(tp), self._metadata_timeout)
        if committed is not None:
            return int(committed)
        beginning = await asyncio.wait_for(
            self._consumer.beginning_offsets([tp]), self._metadata_timeout
        )
        return int(beginning.get(tp, 0))

    def _restored(
        self, part: AssignedPartition, state: RestoredPartition, seconds: float, *, kept: bool
    ) -> None:
        part.restored_as(state)
        with contextlib.suppress(KafkaError):  # IllegalStateError: revoked meanwhile
            self._consumer.resume(self.tp(part.number))
        self._on_restored()
        self._observer.restored(
            Restored(
                part.number,
                sessions=len(state.sessions),
                replaying=len(state.replay),
                records=0 if kept else state.records,
                seconds=seconds,
                kept=kept,
            )
        )
        self._update_ready()

    async def _cancel_restore(self) -> None:
        task, self._restore_task = self._restore_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # ---- release and park ------------------------------------------------------------------

    async def release(self, numbers: list[int], budget: Budget, *, park: bool) -> None:
        """Finish (or abandon, past the budget) the partitions' work, commit it, drop them; or
        fence them at once when the member cannot prove it still holds them."""
        async with self._releasing:
            await self._release(numbers, budget, park=park)

    async def _release(self, numbers: list[int], budget: Budget, *, park: bool) -> None:
        self.in_group = False
        self._ready.clear()
        parts = [self._partitions[n] for n in numbers if n in self._partitions]
        if not parts:
            return
        taken = [p for p in parts if p.phase is not Phase.RESTORING]
        for part in parts:
            part.phase = Phase.RELEASING
        await self._cancel_restore()
        busy = [p for p in taken if p.undecided or p.outstanding()]
        if busy:
            proof = await self._commit(busy, budget.commit, probe=True)
            if proof is not Commit.ACCEPTED:
                await self._fence(numbers, f"its commit was {proof.value}")
                return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget.lanes
        finished: set[int] = set()
        for part in taken:
            if await part.lanes.wait_idle(max(0.0, deadline - loop.time())):
                finished.add(part.number)
                continue
            log.warning(
                "partition %d: abandoning %d undecided messages after %.1fs; they will be "
                "redelivered",
                part.number,
                part.undecided,
                budget.lanes,
            )
            await part.lanes.abandon()
        settled = await self._settle(taken, budget.writes)
        if all(p.phase is Phase.GONE for p in parts):
            return  # fenced meanwhile (the connection failed): nothing more of them is done
        taken = [p for p in taken if p.phase is Phase.RELEASING]
        committed = await self._commit(taken, budget.commit) if settled else Commit.NOT_DONE
        if committed is not Commit.ACCEPTED:
            log.warning(
                "partitions %s: not committed; what was not committed is redelivered",
                _numbers(taken),
            )
        for part in parts:
            self._drop(part)
            # Only when all of it is committed: a redelivery would otherwise meet sessions
            # (and replay histories) that already know of it.
            clean = part in taken and part.number in finished and committed is Commit.ACCEPTED
            if park and clean and part.all_committed():
                self._parked[part.number] = part.state
        log.info("released input partitions %s", _numbers(parts))
        self._observer.revoked(tuple(p.number for p in parts), fenced=False)
        self._restore_pending()

    async def _fence(self, numbers: list[int], why: str) -> None:
        """The member may not hold these partitions any more: stop their work at once (also
        while a release of them waits: it finds them gone and commits nothing)."""
        self.in_group = False
        self._ready.clear()
        parts = [self._partitions[n] for n in numbers if n in self._partitions]
        if not parts:
            return
        for part in parts:
            part.phase = Phase.GONE
        await self._cancel_restore()
        for part in parts:
            await part.lanes.abandon()
            self._drop(part)
            self._parked.pop(part.number, None)
        log.warning(
            "fenced input partitions %s (%s): their work is abandoned, nothing of it is "
            "committed, and it will be redelivered",
            _numbers(parts),
            why,
        )
        self._observer.revoked(tuple(p.number for p in parts), fenced=True)
        # Their records still in the outbox must not be handed over either: a new connection
        # (the outbox closed, the producer stopped before the consumer leaves) guarantees it.
        self._on_failure(MembershipLost(f"fenced input partitions {_numbers(parts)}: {why}"))

    async def _commit(self, parts: list[AssignedPartition], timeout: float, **kw: bool) -> Commit:
        try:
            return await self._committer.commit(parts, timeout, **kw)
        except DeliveryFailed as exc:
            log.error("not committing partitions %s: %s", _numbers(parts), exc)
            return Commit.NOT_DONE

    async def _settle(self, parts: list[AssignedPartition], timeout: float) -> bool:
        """Wait, bounded, until the broker answered every write of `parts`."""
        acks = [ack for part in parts for ack in part.outstanding()]
        if acks:
            await asyncio.wait(acks, timeout=timeout)
        unanswered = sum(1 for ack in acks if not ack.done())
        if not unanswered:
            return True
        # Letting the group move on now could let those writes land after the next owner has
        # read the changelog: reconnect instead, which closes the producer before the consumer.
        self._on_failure(
            DeliveryFailed(
                f"{unanswered} batches of partitions {_numbers(parts)} unanswered after "
                f"{timeout:.1f}s"
            )
        )
        return False

    def _drop(self, part: AssignedPartition) -> None:
        part.phase = Phase.GONE
        if self._partitions.get(part.number) is part:
            del self._partitions[part.number]

    async def close(self, budget: Budget | None) -> None:
        """Shutdown: release everything within `budget` (commit included); None: fence it all
        (a failure: nothing waits, nothing more is written)."""
        await self._cancel_restore()
        numbers = list(self._partitions)
        if budget is not None:
            await self.release(numbers, budget, park=False)
        else:
            await self._fence(numbers, "the connection is being closed")
        self._parked.clear()
        self.in_group = False


@dataclass(frozen=True)
class Budget:
    """Seconds a release may spend: lanes to finish, the broker to answer, the commit."""

    lanes: float
    writes: float
    commit: float


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's callbacks, for the input topic's partitions."""

    def __init__(self, assignments: Assignments, topic: str, budget: Budget) -> None:
        self._assignments = assignments
        self._topic = topic
        self._budget = budget

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in revoked if tp.topic == self._topic]
        await self._assignments.release(numbers, self._budget, park=True)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._assignments.assign([tp.partition for tp in assigned if tp.topic == self._topic])


def _numbers(parts: list[AssignedPartition]) -> list[int]:
    return sorted(p.number for p in parts)
