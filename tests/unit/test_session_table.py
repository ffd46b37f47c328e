"""SessionTable: every StickySession field survives packing, and idle expiry reads it right."""

from __future__ import annotations

import math

import pytest

from contracts.models import Route
from worker.routing.session import SessionTable, StickySession


def session(
    route: Route, since_offset: int, seen_at: float, written_at: float | None = None
) -> StickySession:
    made = StickySession(route, since_offset, seen_at)
    if written_at is not None:
        made.written_at = written_at
    return made


def fields(s: StickySession | None) -> tuple[Route, int, float, float] | None:
    return None if s is None else (s.route, s.since_offset, s.seen_at, s.written_at)


@pytest.mark.parametrize("route", list(Route))
@pytest.mark.parametrize("since_offset", [-1, 0, 1, 2**31, 2**62, 2**63 - 1])
def test_every_field_comes_back(route: Route, since_offset: int) -> None:
    table = SessionTable()
    table.put("u", session(route, since_offset, 1763800000.123, written_at=1763799000.001))
    assert fields(table.get("u")) == (route, since_offset, 1763800000.123, 1763799000.001)


def test_neighbouring_fields_do_not_bleed_into_each_other() -> None:
    table = SessionTable()
    # All-ones millisecond fields next to a negative offset and the NLU bit.
    top = (2**44 - 1) / 1000
    table.put("a", session(Route.NLU, -1, top, written_at=top))
    table.put("b", session(Route.CALM, 2**63 - 1, 0.001, written_at=0.0))
    assert fields(table.get("a")) == (Route.NLU, -1, top, top)
    assert fields(table.get("b")) == (Route.CALM, 2**63 - 1, 0.001, 0.0)


@pytest.mark.parametrize(
    ("seen_at", "kept"),
    [(1.0004, 1.0), (1.0006, 1.001), (0.25, 0.25), (1763800000.9995, 1763800001.0)],
)
def test_times_keep_milliseconds(seen_at: float, kept: float) -> None:
    table = SessionTable()
    table.put("u", session(Route.CALM, 7, seen_at))
    restored = table.get("u")
    assert restored is not None
    assert restored.seen_at == kept and restored.written_at == kept


@pytest.mark.parametrize(
    ("seen_at", "kept"),
    [(-5.0, 0.0), (math.nan, 0.0), (1e12, (2**44 - 1) / 1000), (math.inf, (2**44 - 1) / 1000)],
)
def test_times_out_of_range_are_held_to_it(seen_at: float, kept: float) -> None:
    table = SessionTable()
    table.put("u", session(Route.NLU, 3, seen_at))
    assert fields(table.get("u")) == (Route.NLU, 3, kept, kept)


def test_get_gives_a_copy_and_put_replaces() -> None:
    table = SessionTable()
    table.put("u", session(Route.CALM, 5, 10.0))
    copy = table.get("u")
    assert copy is not None
    copy.seen_at = 20.0
    assert fields(table.get("u")) == (Route.CALM, 5, 10.0, 10.0)
    table.put("u", copy)
    assert fields(table.get("u")) == (Route.CALM, 5, 20.0, 10.0)
    table.put("u", session(Route.NLU, 9, 30.0))
    assert fields(table.get("u")) == (Route.NLU, 9, 30.0, 30.0)
    assert len(table) == 1


def test_pop_len_contains_and_iteration() -> None:
    table = SessionTable()
    assert len(table) == 0 and "u" not in table and table.get("u") is None
    table.pop("u")  # nothing to end: no error
    for i, sender in enumerate(["u", "v", "w"]):
        table.put(sender, session(Route.CALM, i, 1.0))
    assert len(table) == 3 and "v" in table and sorted(table) == ["u", "v", "w"]
    table.pop("v")
    assert len(table) == 2 and "v" not in table and table.get("v") is None
    assert sorted(table) == ["u", "w"]
    assert fields(table.get("w")) == (Route.CALM, 2, 1.0, 1.0)


def test_any_sender_id_comes_back_as_it_went_in() -> None:
    table = SessionTable()
    senders = ["", "Zoë", "用户-42", "\U0001f600 " * 3, "a" * 1000]
    for i, sender in enumerate(senders):
        table.put(sender, session(Route.NLU, i, 5.0))
    assert sorted(table) == sorted(senders)
    assert sorted(table.idle_senders(6.0, 1.0)) == sorted(senders)
    for i, sender in enumerate(senders):
        assert sender in table and fields(table.get(sender)) == (Route.NLU, i, 5.0, 5.0)
    assert b"Zo\xc3\xab" not in table  # senders are str, whatever the table keeps


def test_idle_senders_are_those_seen_ttl_or_longer_ago() -> None:
    table = SessionTable()
    table.put("old", session(Route.CALM, 1, 100.0))
    table.put("edge", session(Route.NLU, 2, 100.75))
    table.put("fresh", session(Route.CALM, 3, 100.751))
    # written_at plays no part: only the last message counts.
    table.put("written-long-ago", session(Route.CALM, 4, 100.9, written_at=1.0))
    assert sorted(table.idle_senders(101.0, 0.25)) == ["edge", "old"]
    assert table.idle_senders(101.0, 1.5) == []
    assert sorted(table.idle_senders(1000.0, 0.25)) == sorted(table)
