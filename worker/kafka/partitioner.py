"""The producer's partitioner for inbox records: Java's and aiokafka's murmur2, remembered.

aiokafka computes murmur2 in pure Python (about 7 µs for a 32-byte key, a tenth of the intent
router's CPU per message); senders write many messages, so each key's partition is remembered.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.partitioner import DefaultPartitioner


class RememberingPartitioner:
    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._known: dict[tuple[bytes, int], int] = {}
        self._default = DefaultPartitioner()

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return int(self._default(key, all_partitions, available))
        known = (key, len(all_partitions))
        partition = self._known.get(known)
        if partition is None:
            if len(self._known) >= self._limit:
                self._known.clear()  # bounded memory; hot senders come straight back
            partition = int(self._default(key, all_partitions, available))
            self._known[known] = partition
        return partition
