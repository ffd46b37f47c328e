"""Redelivered messages: the decisions the changelog already holds for them.

After a crash (or an abandoned revocation) a new owner re-reads an input partition from its
committed offset. The previous owner may already have decided some of those messages, published
them and written their state changes to the changelog. Restoring the changelog gives the state
*after* all of that; deciding a redelivered message against it would use the future. So, for each
sender with changelog records written for not-yet-committed input offsets, the restore keeps:

- the session as it was before the first of them (`before`), and
- those records in order (`events`), each tagged with the input offset it was written for.

A redelivered message at or before the sender's last such offset is *replayed*: the message that
opened a session gets the routing block stored with that session, byte for byte (no second LLM
call); any other message is decided against the session in force just before it, which gives the
same route; nothing is written, because the changelog already says what happened next. The first
message past the last event leaves replay and is routed normally against the restored state.

Decisions that never reached the changelog (a non-sticky answer writes no state) cannot be known;
such a message is decided again.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from contracts.models import Routing
from worker.routing.session import StickySession


@dataclass(frozen=True, slots=True)
class ChangelogEvent:
    input_offset: int
    session: StickySession | None  # the sender's session after this record; None = ended
    routing: Routing | None = None  # set when the record opened the session at `input_offset`
    message_id: str | None = None


@dataclass(slots=True)
class SenderHistory:
    """One sender's changelog records for input offsets at or past the committed offset."""

    before: StickySession | None
    events: list[ChangelogEvent] = field(default_factory=list)

    @property
    def last_offset(self) -> int:
        return self.events[-1].input_offset if self.events else -1

    def add(self, event: ChangelogEvent) -> None:
        self.events.append(event)

    def covers(self, offset: int) -> bool:
        """True while `offset` was (or may have been) decided before: it is to be replayed."""
        return offset <= self.last_offset

    def decision_for(self, offset: int, message_id: str) -> Routing | None:
        """The routing block the message at `offset` got, where its decision opened a session."""
        for event in self.events:
            if (
                event.input_offset == offset
                and event.routing is not None
                and event.message_id == message_id
            ):
                return event.routing
        return None

    def session_before(self, offset: int) -> StickySession | None:
        """The session in force when the message at `offset` was first decided."""
        session = self.before
        for event in self.events:
            if event.input_offset >= offset:
                break
            session = event.session
        return session


class Replay(dict[str, SenderHistory]):
    """The histories of a restored partition, by sender.

    A history is needed until the sender's first message past it arrives, or until the
    partition's committed offset passes it (its messages are never redelivered to this owner
    then): `prune` drops those, so senders who never come back do not keep theirs forever.
    """

    # Filled at the first prune, when the restore has added every history.
    _by_last_offset: list[tuple[int, str]] | None = None

    def prune(self, position: int) -> int:
        """Drop the histories of offsets all below `position`; returns how many."""
        if not self:
            return 0
        heap = self._by_last_offset
        if heap is None:
            heap = self._by_last_offset = [(h.last_offset, s) for s, h in self.items()]
            heapq.heapify(heap)
        dropped = 0
        while heap and heap[0][0] < position:
            last_offset, sender = heapq.heappop(heap)
            history = self.get(sender)
            if history is not None and history.last_offset == last_offset:
                del self[sender]
                dropped += 1
        return dropped
