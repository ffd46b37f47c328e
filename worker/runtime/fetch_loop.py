"""The fetch loop: poll, hand each record of an owned partition to the dispatcher, repeat.

It never waits on anything but the poll itself: backpressure pauses partitions
(worker.runtime.backpressure) and the poll goes on, so the member stays in its group however
long a restore, a slow router or a lagging producer takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

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

    async def run(self, running: Callable[[], bool]) -> None:
        consumer, assignments, dispatch = self._consumer, self._assignments, self._dispatcher
        while running():
            self._pause()
            batch = await consumer.getmany(timeout_ms=POLL_MS)
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

    def _pause(self) -> None:
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
