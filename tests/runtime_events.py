"""A worker's events, recorded through its observer seam and awaitable as they happen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.runtime.observer import RuntimeObserver


@dataclass(frozen=True)
class Event:
    name: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]


class RecordedEvents(RuntimeObserver):
    """Every event (per message ones included), in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.commits: dict[int, int] = {}  # the highest committed position per partition
        self._changed = asyncio.Event()

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.events.append(Event(name, args, kwargs))
        self._changed.set()

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e.name == name]

    async def wait_until(self, predicate: Callable[[], bool], what: str, timeout: float) -> None:
        """Until `predicate()` holds, checked at each event; bounded by `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            names = [e.name for e in self.events[-30:]]
            raise AssertionError(f"not {what} within {timeout}s; last events: {names}") from None

    async def committed_to(self, ends: Mapping[int, int], timeout: float = 30.0) -> None:
        """Until every partition's commit reached its end (next offset)."""
        await self.wait_until(
            lambda: all(self.commits.get(p, 0) >= end for p, end in ends.items()),
            f"committed to {dict(ends)}",
            timeout,
        )

    def connected(self) -> None:
        self._record("connected")

    def disconnected(self, error: BaseException | None) -> None:
        self._record("disconnected", error)

    def assigned(self, partitions: tuple[int, ...]) -> None:
        self._record("assigned", partitions)

    def restore_progress(self, partitions: tuple[int, ...], records: int) -> None:
        self._record("restore_progress", partitions, records)

    def restored(
        self, partition: int, *, sessions: int, replaying: int, records: int, kept: bool
    ) -> None:
        self._record(
            "restored",
            partition,
            sessions=sessions,
            replaying=replaying,
            records=records,
            kept=kept,
        )

    def revoked(self, partitions: tuple[int, ...], *, fenced: bool) -> None:
        self._record("revoked", partitions, fenced=fenced)

    def decided(self, partition: int, offset: int, routing: Mapping[str, Any]) -> None:
        self._record("decided", partition, offset, dict(routing))

    def dead_lettered(self, partition: int, offset: int, error_type: str) -> None:
        self._record("dead_lettered", partition, offset, error_type)

    def committed(self, positions: Mapping[int, int]) -> None:
        for partition, position in positions.items():
            self.commits[partition] = max(self.commits.get(partition, 0), position)
        self._record("committed", dict(positions))

    def expired(self, partition: int, sessions: int) -> None:
        self._record("expired", partition, sessions)
