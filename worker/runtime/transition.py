"""What one decided message does to its sender's session, and what the changelog must hear of it.

A pure function of (session before, decision, offset, time, expiry): no I/O, no table. The worker
publishes the records the transition calls for first, and changes its session table only once
they are queued, so a message whose records cannot be written changes nothing.
"""

from __future__ import annotations

from enum import Enum

from worker.routing.decision import RoutingDecision
from worker.routing.session import StickySession


class Write(Enum):
    NOTHING = "nothing"  # the changelog already says what holds
    OPEN = "open"  # a new session: written with the decision that opened it
    REFRESH = "refresh"  # the same session, its `seen_at` renewed on the changelog
    END = "end"  # a tombstone


def after_decision(
    session: StickySession | None,
    decision: RoutingDecision,
    offset: int,
    now: float,
    ttl: float,
) -> tuple[StickySession | None, Write]:
    """The sender's session after the message at `offset`, decided at `now`, and the write."""
    route = decision.session_after
    if route is None:
        return None, (Write.NOTHING if session is None else Write.END)
    if session is None or session.route is not route:
        return StickySession(route, offset, now), Write.OPEN
    kept = StickySession(route, session.since_offset, now)
    kept.written_at = session.written_at
    # Keep the changelog's `seen_at` within half a TTL of the truth, so that a session
    # restored elsewhere expires no more than half a TTL before it would have here.
    stale = ttl > 0 and now - session.written_at > ttl / 2
    return kept, (Write.REFRESH if stale else Write.NOTHING)


def after_reset(session: StickySession | None) -> Write:
    """A `session_reset` (Rasa's action_reset_routing) ends whatever session there is."""
    return Write.NOTHING if session is None else Write.END
