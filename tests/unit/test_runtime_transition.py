"""The session transition: what a decided message leaves, and what the changelog must hear."""

from __future__ import annotations

import pytest

from contracts.models import Reason, Route, RouterName
from worker.routing.decision import RoutingDecision
from worker.routing.session import StickySession
from worker.runtime.transition import Write, after_decision, after_reset

CALM_STICKY = RoutingDecision(Route.CALM, True, Reason.LISTED_INTENT, RouterName.INTENT)
NLU_STICKY = RoutingDecision(Route.NLU, True, Reason.NO_INTENT, RouterName.INTENT)
NLU_ONCE = RoutingDecision(Route.NLU, False, Reason.LISTED_INTENT, RouterName.INTENT)
RESTART = RoutingDecision(Route.CALM, False, Reason.RESTART, RouterName.INTENT, ends_session=True)
TTL = 100.0


def held(
    route: Route, since: int = 3, seen_at: float = 1000.0, written_at: float = 1000.0
) -> StickySession:
    session = StickySession(route, since, seen_at)
    session.written_at = written_at
    return session


def fields(session: StickySession | None) -> tuple[Route, int, float, float] | None:
    if session is None:
        return None
    return (session.route, session.since_offset, session.seen_at, session.written_at)


def test_a_sticky_decision_without_a_session_opens_one_at_its_offset() -> None:
    after, write = after_decision(None, CALM_STICKY, 7, 1010.0, TTL)
    assert write is Write.OPEN
    assert fields(after) == (Route.CALM, 7, 1010.0, 1010.0)


def test_a_sticky_decision_for_the_other_route_opens_a_new_session() -> None:
    after, write = after_decision(held(Route.NLU), CALM_STICKY, 7, 1010.0, TTL)
    assert write is Write.OPEN
    assert fields(after) == (Route.CALM, 7, 1010.0, 1010.0)


def test_the_same_route_keeps_the_session_and_renews_when_it_was_seen() -> None:
    before = held(Route.CALM, since=3, seen_at=1000.0, written_at=1000.0)
    after, write = after_decision(before, CALM_STICKY, 9, 1040.0, TTL)
    assert write is Write.NOTHING  # the changelog's copy is younger than half a TTL
    assert fields(after) == (Route.CALM, 3, 1040.0, 1000.0)
    assert fields(before) == (Route.CALM, 3, 1000.0, 1000.0)  # the input is not changed


def test_the_changelog_hears_of_a_session_again_once_its_copy_is_half_a_ttl_old() -> None:
    after, write = after_decision(held(Route.CALM, written_at=1000.0), CALM_STICKY, 9, 1051.0, TTL)
    assert write is Write.REFRESH
    assert fields(after) == (Route.CALM, 3, 1051.0, 1000.0)  # the publisher stamps written_at


def test_without_expiry_a_held_session_is_never_refreshed() -> None:
    _, write = after_decision(held(Route.CALM, written_at=0.0), CALM_STICKY, 9, 10**9, 0.0)
    assert write is Write.NOTHING


@pytest.mark.parametrize("session", [None, held(Route.NLU)], ids=["none", "held"])
def test_a_non_sticky_decision_leaves_no_session(session: StickySession | None) -> None:
    after, write = after_decision(session, NLU_ONCE, 9, 1010.0, TTL)
    assert after is None
    assert write is (Write.NOTHING if session is None else Write.END)


def test_a_restart_ends_the_session_whatever_held_it() -> None:
    after, write = after_decision(held(Route.CALM), RESTART, 9, 1010.0, TTL)
    assert (after, write) == (None, Write.END)


def test_nlu_sticky_without_a_session_opens_an_nlu_session() -> None:
    after, write = after_decision(None, NLU_STICKY, 0, 1.0, TTL)
    assert write is Write.OPEN and fields(after) == (Route.NLU, 0, 1.0, 1.0)


def test_a_reset_ends_a_session_and_writes_nothing_without_one() -> None:
    assert after_reset(held(Route.CALM)) is Write.END
    assert after_reset(None) is Write.NOTHING
