from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner

from worker.kafka.partitioner import RememberingPartitioner


def test_same_partitions_as_aiokafkas_murmur2() -> None:
    remembering = RememberingPartitioner(limit=50)
    default = DefaultPartitioner()
    rng = random.Random(7)
    keys = [f"sender-{rng.randrange(10**9)}".encode() for _ in range(200)]
    for count in (1, 3, 6, 12):
        partitions = list(range(count))
        for key in keys + keys:  # the second pass is answered from memory (and cleared at 50)
            assert remembering(key, partitions, partitions) == default(key, partitions, partitions)


def test_keyless_records_still_spread() -> None:
    remembering = RememberingPartitioner()
    partitions = [0, 1, 2, 3]
    assert {remembering(None, partitions, partitions) for _ in range(200)} == set(partitions)
