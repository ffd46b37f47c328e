"""The fetch loop: poll, hand each record of an owned partition to the dispatcher, repeat.

It never stops polling: backpressure pauses partitions (worker.runtime.backpressure) and the
poll goes on, so the member stays in its group however long a restore, a slow router or a
lagging producer takes. When the outbox is out of room it first waits up to `POLL_MS` with
nothing paused; while every partition is held, it waits for what can release one (a lane's
message decided, a restore ended, the outbox's room) rather than in a poll that cannot return
records, and polls without waiting once that comes or `POLL_MS` has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiokafka import AIOKafkaConsumer

from worker.kafka.outbox import Outbox
from worker.runtime.assignments import Assignments
from worker.runtime.backpressure import paused
from worker.runtime.dispatch import Dispatcher
from worker.runtime.partition import Phase

POLL_MS = 200


class FetchLoop:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        assignments: Assignments,
        dispatcher: Dispatcher,
        outbox: Outbox,
        *,
        limit: int,
        alive: Callable[[], bool],
    ) -> None:
        self._consumer = consumer
        self._assignments = assignments
        self._dispatcher = dispatcher
        self._outbox = outbox
        self._limit = limit
        self._alive = alive  # False: the member may have lost its partitions (see liveness)
        self.last_poll: float | None = None  # time.monotonic() after the last poll
        self._fetchable = asyncio.Event()

    def wake(self) -> None:
        """A held partition may be fetched now (a lane's message was decided, a restore ended)."""
        self._fetchable.set()

    async def run(self, running: Callable[[], bool]) -> None:
        consumer, assignments, dispatch = self._consumer, self._assignments, self._dispatcher
        while running():
            if not self._outbox.has_room():
                # A short wait, with nothing paused: aiokafka goes on fetching ahead meanwhile,
                # and pausing would drop what it fetched. Only a longer lag pauses.
                await self._bounded(self._outbox.room())
            timeout = POLL_MS
            if self._pause():
                await self._until_fetchable()
                self._pause()
                timeout = 0  # polled all the same, to stay in the group
            batch = await consumer.getmany(timeout_ms=timeout)
            self.last_poll = time.monotonic()
            if not running() or not self._alive():
                return
            for tp, records in batch.items():
                part = assignments.get(tp.partition)
                if part is None or not part.owned:
                    restoring = part is None or part.phase is Phase.RESTORING
                    if restoring and tp in consumer.assignment():
                        # Fetched before it was paused: fetch these again once it is restored.
                        consumer.seek(tp, records[0].offset)
                    continue  # released meanwhile: its next owner reads it
                for record in records:
                    dispatch.dispatch(part, record)

    async def _until_fetchable(self) -> None:
        """Until the outbox has room (when it has none) or `wake`, at most POLL_MS."""
        self._fetchable.clear()
        await self._bounded(
            self._outbox.room() if not self._outbox.has_room() else self._fetchable.wait()
        )

    @staticmethod
    async def _bounded(wait: Coroutine[Any, Any, Any]) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wait, POLL_MS / 1000)

    def _pause(self) -> bool:
        """Pause what may not be fetched now, resume the rest; True when all is held."""
        consumer = self._consumer
        assigned = {tp.partition: tp for tp in consumer.assignment()}
        hold = paused(
            assigned, self._assignments.get, limit=self._limit, room=self._outbox.has_room()
        )
        held = {tp.partition for tp in consumer.paused()}
        if hold != held:
            if resume := [assigned[n] for n in held - hold if n in assigned]:
                consumer.resume(*resume)
            if pause := [assigned[n] for n in hold - held]:
                consumer.pause(*pause)
        return bool(assigned) and len(hold) == len(assigned)
