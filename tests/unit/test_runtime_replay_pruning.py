"""Replay histories are dropped once the committed offset passes them, whoever never returns."""

from __future__ import annotations

from contracts.models import Route
from worker.routing.session import StickySession
from worker.runtime.replay import ChangelogEvent, Replay, SenderHistory


def history(*offsets: int) -> SenderHistory:
    made = SenderHistory(None)
    for offset in offsets:
        made.add(ChangelogEvent(offset, StickySession(Route.CALM, offset, 1.0)))
    return made


def test_a_commit_past_a_senders_last_record_drops_its_history() -> None:
    replay = Replay(early=history(3, 5), late=history(9), middle=history(6))
    assert replay.prune(6) == 1  # early's last record is for offset 5: never redelivered now
    assert sorted(replay) == ["late", "middle"]
    assert replay.prune(6) == 0
    assert replay.prune(10) == 2
    assert replay == {}


def test_a_history_removed_meanwhile_is_not_counted() -> None:
    replay = Replay(a=history(1), b=history(2))
    replay.prune(0)  # builds the order
    del replay["a"]  # its sender's next message came past it
    assert replay.prune(5) == 1
    assert replay == {}
