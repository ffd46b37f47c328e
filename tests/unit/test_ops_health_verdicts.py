"""Liveness and readiness verdicts of worker.ops.health, from statuses and an injected clock
(the endpoints of a real worker are tests/integration/test_ops_health.py)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from worker.ops.health import BrokerProbe, Health
from worker.runtime.observer import PartitionStatus, WorkerStatus


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def part(number: int, restored: bool = True) -> PartitionStatus:
    return PartitionStatus(number, restored, 0, 0, 0, None, None, None)


def status(
    *parts: PartitionStatus,
    connected: bool = True,
    assigned: bool = True,
    last_poll: float | None = 1000.0,
) -> WorkerStatus:
    return WorkerStatus(connected, assigned, last_poll, parts)


class Probe(BrokerProbe):
    def __init__(self, reachable: bool, problem: str = "") -> None:
        connection: Mapping[str, Any] = {}
        super().__init__(connection)
        self.reachable, self.problem = reachable, problem


def test_alive_while_the_fetch_loop_polls() -> None:
    clock = Clock()
    health = Health(lambda: status(part(0)), clock=clock, stuck_after=30)
    clock.now += 29
    assert health.liveness().ok


def test_stuck_when_in_the_group_without_a_poll_beyond_the_bound() -> None:
    clock = Clock()
    health = Health(lambda: status(part(0)), clock=clock, stuck_after=30)
    clock.now += 31
    verdict = health.liveness()
    assert not verdict.ok
    assert "fetch loop has not polled for 31s" in verdict.reason


def _same(value: WorkerStatus) -> WorkerStatus:
    return value


def test_a_rebalance_or_a_broker_away_is_not_stuck() -> None:
    """aiokafka's poll blocks during a rebalance; a disconnected worker reconnects by itself."""
    clock = Clock()
    for waiting in (status(assigned=False), status(connected=False, assigned=False)):
        health = Health(functools.partial(_same, waiting), clock=clock, stuck_after=30)
        clock.now += 3600
        assert health.liveness().ok


def test_a_first_poll_that_never_returns_is_stuck_too() -> None:
    clock = Clock()
    current = status(part(0), last_poll=None)
    health = Health(lambda: current, clock=clock, stuck_after=30)
    assert health.liveness().ok  # seen in the group, no poll yet: the bound starts now
    clock.now += 31
    assert not health.liveness().ok
    current = status(part(0), last_poll=clock.now)
    assert health.liveness().ok


def test_ready_only_in_the_group_with_every_partition_restored_and_the_broker_answering() -> None:
    up = Probe(reachable=True)
    assert Health(lambda: status(part(0), part(3)), up).readiness().ok
    assert Health(lambda: status(), up).readiness().ok  # in the group with no partition
    restoring = Health(lambda: status(part(0), part(3, restored=False)), up).readiness()
    assert not restoring.ok and "restoring input partitions [3]" in restoring.reason
    rebalancing = Health(lambda: status(assigned=False), up).readiness()
    assert not rebalancing.ok and "not in the group" in rebalancing.reason
    away = Health(lambda: status(connected=False, assigned=False), up).readiness()
    assert not away.ok and "not connected" in away.reason
    down = Probe(reachable=False, problem="the broker did not answer within 2s")
    silent = Health(lambda: status(part(0)), down).readiness()
    assert not silent.ok and "did not answer within 2s" in silent.reason
