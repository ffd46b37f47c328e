"""When input offsets are committed, and what a commit says about the member.

The policy: every `commit_interval`, or as soon as `commit_count` offsets were decided since the
last commit (once their records are acknowledged), the acknowledged prefix of every owned
partition is committed in one request. Every wait is bounded: aiokafka retries a commit for as
long as the coordinator is unreachable, so each commit gets a deadline and, past it, counts as
not done (the offsets are committed next time, or redelivered to whoever owns them then).

A commit is also the member's proof that it still holds its partitions: the coordinator refuses
one from a member it has thrown out of the group (CommitFailedError). `commit` says which of
the three it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from enum import Enum

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    RebalanceInProgressError,
)

from worker.runtime.observer import RuntimeObserver
from worker.runtime.partition import AssignedPartition, MembershipLost

log = logging.getLogger(__name__)


class Commit(Enum):
    ACCEPTED = "accepted"  # the coordinator took it (or there was nothing to commit)
    FENCED = "fenced"  # the coordinator refused: another member may own the partitions now
    NOT_DONE = "not done"  # no answer within the bound, or the broker failed it otherwise


class Committer:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        observer: RuntimeObserver,
        *,
        interval: float,
        count: int,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._observer = observer
        self._interval = interval
        self._count = count
        self._decided = 0
        self._due = asyncio.Event()
        self._lock = asyncio.Lock()

    def decided(self) -> None:
        """One more offset decided: commit sooner once `count` of them are."""
        self._decided += 1
        if self._decided >= self._count:
            self._due.set()

    async def run(self, partitions: Callable[[], Iterable[AssignedPartition]]) -> None:
        """Commit by time and by count until cancelled. Raises DeliveryFailed when a record of
        the prefix to commit was not acknowledged, and MembershipLost when the coordinator
        refuses a commit."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self._interval)
            by_count = self._due.is_set()
            self._due.clear()
            self._decided = 0
            owned = [p for p in partitions() if p.owned]
            if by_count:
                # Commit the full count once its records are in, not a round later.
                acks = [a for p in owned for a in p.offsets.acks_outstanding()]
                if acks:
                    await asyncio.wait(acks, timeout=self._interval)
            if await self.commit(owned, self._interval * 4) is Commit.FENCED:
                raise MembershipLost("the group coordinator refused a commit of this member")

    async def commit(
        self, parts: Iterable[AssignedPartition], timeout: float, *, probe: bool = False
    ) -> Commit:
        """Commit the acknowledged prefix of each partition in one request, within `timeout`.

        `probe`: when a partition has nothing new to commit, commit its position again (the
        first offset still pending), so the answer says whether the member still holds it.
        Raises DeliveryFailed when a prefix's first incomplete offset has a failed record.
        """
        async with self._lock:
            offsets: dict[TopicPartition, int] = {}
            committing: list[tuple[AssignedPartition, int]] = []
            for part in parts:
                position = part.offsets.committable()
                if position is None and probe:
                    position = part.offsets.first_pending()
                if position is not None:
                    offsets[TopicPartition(self._topic, part.number)] = position
                    committing.append((part, position))
            if not offsets:
                return Commit.ACCEPTED
            try:
                await asyncio.wait_for(self._consumer.commit(offsets), max(0.01, timeout))
            except CommitFailedError as exc:
                if isinstance(exc.__cause__, RebalanceInProgressError):
                    # The group is between generations: this member's revocation has run or is
                    # about to; the commit is retried by whoever owns the partitions then.
                    log.info("commit of %s not done: the group is rebalancing", _tps(offsets))
                    return Commit.NOT_DONE
                log.warning("commit of %s refused: %r", _tps(offsets), exc.__cause__ or exc)
                return Commit.FENCED
            except (KafkaError, IllegalStateError, TimeoutError) as exc:
                log.warning("commit of %s not done: %r", _tps(offsets), exc)
                return Commit.NOT_DONE
            positions: dict[int, int] = {}
            for part, position in committing:
                part.offsets.committed = position
                part.state.replay.prune(position)
                positions[part.number] = position
            log.debug("committed %s", _tps(offsets))
            self._observer.committed(positions)
            return Commit.ACCEPTED


def _tps(offsets: Mapping[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]={o}" for tp, o in offsets.items())
