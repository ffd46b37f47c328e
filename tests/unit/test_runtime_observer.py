"""The observer seam: several observers as one, and one that fails is not the worker's problem."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest

from worker.runtime.observer import Observers, Restored, RuntimeObserver


class Counting(RuntimeObserver):
    def __init__(self) -> None:
        self.decided_count = 0
        self.positions: list[Mapping[int, int]] = []

    def decided(self, partition: int, offset: int, routing: Mapping[str, Any]) -> None:
        self.decided_count += 1

    def committed(self, positions: Mapping[int, int]) -> None:
        self.positions.append(positions)


class Broken(RuntimeObserver):
    def decided(self, partition: int, offset: int, routing: Mapping[str, Any]) -> None:
        raise RuntimeError("a metrics bug")


def test_every_observer_hears_every_event_even_after_one_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, last = Counting(), Counting()
    both = Observers(first, Broken(), last)
    with caplog.at_level(logging.ERROR, "worker.runtime.observer"):
        both.decided(0, 7, {"route": "calm"})
        both.committed({0: 8})
    assert (first.decided_count, last.decided_count) == (1, 1)
    assert first.positions == last.positions == [{0: 8}]
    assert "observer Broken failed on decided" in caplog.text


def test_the_base_observer_ignores_everything() -> None:
    quiet = RuntimeObserver()
    quiet.assigned((0, 1))
    quiet.restored(Restored(0, sessions=1, replaying=0, records=1, seconds=0.5, kept=False))
    quiet.revoked((0,), fenced=True)
    quiet.dead_lettered(0, 1, "ValidationError")
    quiet.expired(0, 3)
    quiet.disconnected(None)
