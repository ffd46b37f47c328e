"""Per-sender routing state: none (router engaged) or a sticky session held by one route."""

from __future__ import annotations

from collections.abc import Iterator

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


# One int per session, from the lowest bit: seen_at in milliseconds (44 bits: 1970 to the year
# 2527; lowest, so the idle scan reads it with one mask), the route (1 bit: Route has two
# members), written_at in milliseconds (44 bits), then since_offset, unbounded and signed
# (Python's shifts keep the sign of a negative int, so -1 packs too).
_ROUTES = (Route.CALM, Route.NLU)
_MS_BITS = 44
_MS_MAX = (1 << _MS_BITS) - 1
_LATEST = _MS_MAX / 1000
_ROUTE_SHIFT = _MS_BITS
_WRITTEN_SHIFT = _ROUTE_SHIFT + 1
_OFFSET_SHIFT = _WRITTEN_SHIFT + _MS_BITS


def _millis(at: float) -> int:
    """`at` (seconds) in whole milliseconds, held to the field's range: a time before 1970 (or
    NaN) from some odd changelog writer reads as long idle rather than failing a restore."""
    if 0.0 < at < _LATEST:
        return int(at * 1000 + 0.5)
    return _MS_MAX if at >= _LATEST else 0


class SessionTable:
    """The sticky sessions of one input partition, by sender.

    A restore holds every session of its partitions, a million or more, and a `StickySession`
    with its floats costs about as much as the sender id again; so each session is stored as
    one packed int, and a `StickySession` exists only while its sender is being routed. Times
    keep millisecond precision. Sender ids are kept as UTF-8 bytes: a bytes object is 16 bytes
    smaller than the same str, and the dict's stored hashes for non-str keys take back 8.
    """

    __slots__ = ("_packed",)

    def __init__(self) -> None:
        self._packed: dict[bytes, int] = {}

    def get(self, sender: str) -> StickySession | None:
        """The sender's session, as a new object: change it, then `put` it back."""
        packed = self._packed.get(sender.encode())
        if packed is None:
            return None
        session = StickySession(
            _ROUTES[(packed >> _ROUTE_SHIFT) & 1],
            packed >> _OFFSET_SHIFT,
            (packed & _MS_MAX) / 1000,
        )
        session.written_at = ((packed >> _WRITTEN_SHIFT) & _MS_MAX) / 1000
        return session

    def put(self, sender: str, session: StickySession) -> None:
        self._packed[sender.encode()] = (
            session.since_offset << _OFFSET_SHIFT
            | _millis(session.written_at) << _WRITTEN_SHIFT
            | (session.route is Route.NLU) << _ROUTE_SHIFT
            | _millis(session.seen_at)
        )

    def pop(self, sender: str) -> None:
        """End the sender's session, if it has one."""
        self._packed.pop(sender.encode(), None)

    def idle_senders(self, now: float, ttl: float) -> list[str]:
        """The senders last seen `ttl` seconds or longer before `now`."""
        # seen_at <= now - ttl, on the stored milliseconds: no session object per sender.
        latest = (now - ttl) * 1000
        return [
            sender.decode() for sender, packed in self._packed.items() if packed & _MS_MAX <= latest
        ]

    def __len__(self) -> int:
        return len(self._packed)

    def __contains__(self, sender: object) -> bool:
        return isinstance(sender, str) and sender.encode() in self._packed

    def __iter__(self) -> Iterator[str]:
        return (sender.decode() for sender in self._packed)

    def __repr__(self) -> str:
        return f"SessionTable({len(self._packed)} sessions)"
