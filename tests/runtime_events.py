"""A worker's events, recorded through its observer seam and awaitable as they happen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.runtime.observer import ForwardingObserver


@dataclass(frozen=True)
class Event:
    name: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]


class RecordedEvents(ForwardingObserver):
    """Every event (per message ones included), in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.commits: dict[int, int] = {}  # the highest committed position per partition
        self._changed = asyncio.Event()

    def event(self, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "committed":
            for partition, position in args[0].items():
                self.commits[partition] = max(self.commits.get(partition, 0), position)
        # Copies: the worker may reuse what it passes.
        args = tuple(dict(a) if isinstance(a, Mapping) else a for a in args)
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
