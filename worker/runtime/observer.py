"""The one seam through which anything outside the runtime sees what it does: metrics, health,
tests. Nothing else (no log text) is meant to be read by a program.

Events are pushed to a `RuntimeObserver` as they happen; state that changes per message
(sessions per partition, messages in flight, positions for consumer lag, the fetch loop's last
poll) is pulled from `RoutingWorker.status()` when it is wanted, so that it costs nothing per
message. Every event is called on the worker's event loop, synchronously: an observer must
return at once and never raise (`Observers` shields the worker from one that does). The no-op
base class costs one method call per event; `decided` and `dead_lettered` are the only ones per
message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Restored:
    """A partition's sessions are in memory: read from `records` changelog records in `seconds`
    (partitions restored together share the time), or `kept` from before a rebalance that gave
    it straight back (then `records` is 0 and `seconds` the check that its changelog did not
    move). `replaying` senders have decisions on the changelog for offsets not yet committed."""

    partition: int
    sessions: int
    replaying: int
    records: int
    seconds: float
    kept: bool


class RuntimeObserver:
    """Override what you need; every method here does nothing."""

    def connected(self) -> None:
        """The clients are started: the broker is reachable."""

    def disconnected(self, error: BaseException | None) -> None:
        """The clients are closed: `error` is why (None: a requested stop)."""

    def assigned(self, partitions: tuple[int, ...]) -> None:
        """The group gave this member these input partitions (now all it holds); each is
        restored before its first message is decided."""

    def restore_progress(self, partitions: tuple[int, ...], records: int) -> None:
        """A restore of these partitions has read `records` changelog records so far."""

    def restored(self, restore: Restored) -> None:
        """A partition's sessions are in memory (see `Restored`)."""

    def revoked(self, partitions: tuple[int, ...], *, fenced: bool) -> None:
        """The partitions are gone. `fenced`: the member had lost them before it could finish
        (thrown out of the group, or it could not prove it still held them), so nothing of
        them was committed and their lanes were cancelled at once."""

    def decided(self, partition: int, offset: int, routing: Mapping[str, Any]) -> None:
        """A message was routed; `routing` is its inbox record's routing block (as published:
        a redelivered decision comes back as it was)."""

    def dead_lettered(self, partition: int, offset: int, error_type: str) -> None:
        """The record went to the DLQ."""

    def committed(self, positions: Mapping[int, int]) -> None:
        """The group coordinator accepted these positions (input partition -> next offset)."""

    def expired(self, partition: int, sessions: int) -> None:
        """`sessions` idle sessions of the partition ended (their tombstones are queued)."""


class ForwardingObserver(RuntimeObserver):
    """Every event as one call, `event(name, *args, **kwargs)`: for fan-out and recording."""

    def event(self, name: str, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    def connected(self) -> None:
        self.event("connected")

    def disconnected(self, error: BaseException | None) -> None:
        self.event("disconnected", error)

    def assigned(self, partitions: tuple[int, ...]) -> None:
        self.event("assigned", partitions)

    def restore_progress(self, partitions: tuple[int, ...], records: int) -> None:
        self.event("restore_progress", partitions, records)

    def restored(self, restore: Restored) -> None:
        self.event("restored", restore)

    def revoked(self, partitions: tuple[int, ...], *, fenced: bool) -> None:
        self.event("revoked", partitions, fenced=fenced)

    def decided(self, partition: int, offset: int, routing: Mapping[str, Any]) -> None:
        self.event("decided", partition, offset, routing)

    def dead_lettered(self, partition: int, offset: int, error_type: str) -> None:
        self.event("dead_lettered", partition, offset, error_type)

    def committed(self, positions: Mapping[int, int]) -> None:
        self.event("committed", positions)

    def expired(self, partition: int, sessions: int) -> None:
        self.event("expired", partition, sessions)


class Observers(ForwardingObserver):
    """Several observers as one; an observer that raises is logged, not the worker's problem."""

    def __init__(self, *observers: RuntimeObserver) -> None:
        self._observers = observers

    def event(self, name: str, *args: Any, **kwargs: Any) -> None:
        for observer in self._observers:
            try:
                getattr(observer, name)(*args, **kwargs)
            except Exception:  # noqa: BLE001 - metrics must never stop routing
                log.exception("observer %s failed on %s", type(observer).__name__, name)


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    partition: int
    restored: bool
    sessions: int  # sticky sessions held (0 while restoring)
    replaying: int  # senders with decisions on the changelog for offsets not yet committed
    undecided: int  # messages waiting in the partition's lanes
    fetched: int | None  # the offset after the last record fetched
    committed: int | None  # the last position the coordinator accepted from this member
    highwater: (
        int | None
    )  # the input partition's end, as of the last fetch (lag = this - committed)


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    connected: bool  # the clients are started (the broker was reachable)
    assigned: bool  # the member holds an assignment (False while rebalancing or disconnected)
    last_poll: float | None  # time.monotonic() when the fetch loop last returned from a poll
    partitions: tuple[PartitionStatus, ...]

    @property
    def restored(self) -> bool:
        return all(p.restored for p in self.partitions)

    @property
    def in_flight(self) -> int:
        return sum(p.undecided for p in self.partitions)
