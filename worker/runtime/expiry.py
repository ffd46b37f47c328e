"""Idle expiry: a session its sender has not used for `session_ttl` seconds ends with a tombstone.

A pass goes through the owned partitions a slice at a time, waiting for the outbox's room and
giving the event loop back between slices: after downtime longer than the TTL every session of
a partition may be idle at once, and writing a million tombstones in one go would stop the
fetch loop, the heartbeats' callbacks and the lanes for seconds and overfill the outbox.
A tombstone belongs to no input offset (it carries no `x-input-offset` header); its partition's
release waits for it like for any other write, and a tombstone the broker does not acknowledge
stops the outbox's partition and makes the worker reconnect, like any unacknowledged record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from worker.kafka.outbox import Outbox
from worker.runtime.observer import RuntimeObserver
from worker.runtime.partition import AssignedPartition
from worker.runtime.publisher import Publisher

log = logging.getLogger(__name__)

SLICE = 500  # tombstones queued between two turns of the event loop


class Expiry:
    def __init__(
        self,
        publisher: Publisher,
        outbox: Outbox,
        observer: RuntimeObserver,
        *,
        ttl: float,
        clock: Callable[[], float],
    ) -> None:
        self._publisher = publisher
        self._outbox = outbox
        self._observer = observer
        self._ttl = ttl
        self._clock = clock

    async def run(self, partitions: Callable[[], Iterable[AssignedPartition]]) -> None:
        """A pass every quarter TTL (at most every 30 s) until cancelled; nothing when ttl 0."""
        if self._ttl <= 0:
            return
        period = max(0.05, min(self._ttl / 4, 30.0))
        while True:
            await asyncio.sleep(period)
            await self.expire(partitions())

    async def expire(self, parts: Iterable[AssignedPartition]) -> int:
        """End the sessions idle for longer than the TTL; returns how many."""
        now = self._clock()
        ended = 0
        for part in parts:
            if not part.owned:
                continue
            idle = part.state.sessions.idle_senders(now, self._ttl)
            for start in range(0, len(idle), SLICE):
                if not part.owned:
                    break  # released while this pass waited
                count = self._end(part, idle[start : start + SLICE], now)
                if count:
                    ended += count
                    self._observer.expired(part.number, count)
                await self._outbox.room()
                await asyncio.sleep(0)
        if ended:
            log.info("ended %d idle sessions", ended)
        return ended

    def _end(self, part: AssignedPartition, senders: list[str], now: float) -> int:
        sessions, ended = part.state.sessions, 0
        for sender in senders:
            if part.lanes.busy(sender):
                continue  # a message of the sender waits to be decided: not idle
            session = sessions.get(sender)
            if session is None or session.seen_at > now - self._ttl:
                continue  # ended or used since the pass began
            sessions.pop(sender)
            ack = self._publisher.session(part.number, sender, None)
            part.loose_write(part.changelog_write(ack))
            ended += 1
        return ended
