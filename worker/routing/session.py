"""Per-sender routing state: none (router engaged) or a sticky session held by one route."""

from __future__ import annotations

from contracts.models import Route


class StickySession:
    """A sender's session held by `route` since input offset `since_offset`.

    Decisions to replay for redelivered messages are not kept here but in the restore's replay
    histories (worker.runtime.replay), so a million sessions stay small in memory.
    """

    __slots__ = ("route", "since_offset", "seen_at", "written_at", "message_id")

    def __init__(
        self,
        route: Route,
        since_offset: int,
        seen_at: float,
        message_id: str | None = None,
    ) -> None:
        self.route = route
        self.since_offset = since_offset
        self.seen_at = seen_at  # last message of the sender, for idle expiry
        self.written_at = seen_at  # when the changelog last heard of this session
        self.message_id = message_id

    def __repr__(self) -> str:
        return f"StickySession(route={self.route.value}, since_offset={self.since_offset})"
