"""Per-sender routing state: none (router engaged) or a sticky session held by one route."""

from __future__ import annotations

from contracts.models import Route


class StickySession:
    """A sender's session held by `route` since input offset `since_offset`.

    The opening message's id and decision are not kept here but in the changelog and, for
    offsets not yet committed, in the restore's replay histories (worker.runtime.replay), so a
    million sessions stay small in memory.
    """

    __slots__ = ("route", "since_offset", "seen_at", "written_at")

    def __init__(
        self,
        route: Route,
        since_offset: int,
        seen_at: float,
    ) -> None:
        self.route = route
        self.since_offset = since_offset
        self.seen_at = seen_at  # last message of the sender, for idle expiry
        self.written_at = seen_at  # when the changelog last heard of this session

    def __repr__(self) -> str:
        return f"StickySession(route={self.route.value}, since_offset={self.since_offset})"
