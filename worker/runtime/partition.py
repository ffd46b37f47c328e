"""One input partition this member holds: its sessions, lanes, offsets and writes.

Its life: RESTORING (assigned; nothing of it is fetched until its changelog is read), OWNED
(messages are decided and published), RELEASING (revoked: no new message is taken, the lanes
may finish), GONE (nothing of it is written or committed any more).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError

from contracts.models import SessionReset, UserMessage
from worker.kafka.outbox import Ack
from worker.runtime.changelog import RestoredPartition
from worker.runtime.lanes import SenderLanes
from worker.runtime.offsets import OffsetTracker, PendingOffset
from worker.runtime.replay import SenderHistory


class MembershipLost(KafkaError):  # type: ignore[misc]
    """The member may no longer hold its partitions: it writes nothing more for them."""


class Phase(Enum):
    RESTORING = "restoring"
    OWNED = "owned"
    RELEASING = "releasing"
    GONE = "gone"


@dataclass(slots=True)
class Inbound:
    record: ConsumerRecord[bytes, bytes]
    message: UserMessage | SessionReset
    pending: PendingOffset


class AssignedPartition:
    def __init__(
        self, number: int, handle: Callable[[AssignedPartition, Inbound], Awaitable[None]]
    ) -> None:
        self.number = number
        self.phase = Phase.RESTORING
        self.state = RestoredPartition()  # replaced by the restore
        self.offsets = OffsetTracker()
        self.lanes: SenderLanes[Inbound] = SenderLanes(lambda item: handle(self, item))
        self.undecided = 0  # messages in its lanes
        # Writes no input offset waits for (idle-expiry tombstones); a release waits for them.
        self._loose_writes: list[Ack] = []
        self._changelog_ack: Ack | None = None  # the last changelog batch being watched

    @property
    def owned(self) -> bool:
        return self.phase is Phase.OWNED

    def restored_as(self, state: RestoredPartition) -> None:
        self.state = state
        self.phase = Phase.OWNED

    def changelog_write(self, ack: Ack) -> Ack:
        """Note a changelog record of this partition: its batch's end moves `state.end`."""
        if ack is not self._changelog_ack:  # records of one batch share their ack
            self._changelog_ack = ack
            ack.add_done_callback(self.state.written)
        return ack

    def loose_write(self, ack: Ack) -> None:
        if len(self._loose_writes) > 1000:
            self._loose_writes = [a for a in self._loose_writes if not a.done()]
        self._loose_writes.append(ack)

    def outstanding(self) -> list[Ack]:
        """Every write of this partition the broker has not answered yet."""
        acks = self.offsets.acks_outstanding()
        acks.extend(ack for ack in self._loose_writes if not ack.done())
        return acks

    def history(self, sender: str, offset: int) -> SenderHistory | None:
        """The sender's replay history while `offset` is a redelivery decided before."""
        replay = self.state.replay
        history = replay.get(sender)
        if history is not None and not history.covers(offset):
            del replay[sender]  # past the last message decided before: routed normally
            return None
        return history

    def all_committed(self) -> bool:
        """Every offset this member took of the partition is decided and committed."""
        offsets = self.offsets
        return len(offsets) == 0 and offsets.position == offsets.committed
