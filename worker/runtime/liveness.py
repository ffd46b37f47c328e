"""Whether this process's event loop kept running: the member's own side of its group session.

A process that was stopped (SIGSTOP, a paused VM) or whose loop was blocked sent no heartbeat
meanwhile; once that lasted longer than the group's session timeout, the coordinator has moved
its partitions and another member may be restoring them. What the member decided before has to
go unpublished: a tick every `period` notices the gap (and `alive()` says so before the tick
runs), and the member reconnects as a new one instead of writing for partitions it lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from worker.runtime.partition import MembershipLost


class Liveness:
    def __init__(
        self,
        limit: float,
        on_lost: Callable[[BaseException], None],
        *,
        period: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._on_lost = on_lost
        self._period = period
        self._clock = clock
        self.last_tick = clock()

    def alive(self) -> bool:
        """False once the loop has not ticked for longer than the limit (before the tick that
        would say so has run)."""
        return self._clock() - self.last_tick <= self._limit

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            now = self._clock()
            frozen = now - self.last_tick
            if frozen > self._limit:
                self._on_lost(
                    MembershipLost(
                        f"the event loop stood still for {frozen:.1f}s, longer than the group's "
                        f"session timeout ({self._limit:g}s): the group may have given this "
                        f"member's partitions to another"
                    )
                )
                return
            self.last_tick = now
