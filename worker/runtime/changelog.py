"""The `routing-sessions` changelog: restoring a partition's sessions, and writing changes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from contracts.models import SessionRecord, session_record_adapter
from worker.routing.session import StickySession

log = logging.getLogger(__name__)

Sessions = dict[str, StickySession]


def session_from_record(record: SessionRecord, keep_decision: bool) -> StickySession:
    return StickySession(
        record.route,
        record.since_offset,
        record.seen_at,
        record.message_id,
        record.routing if keep_decision else None,
    )


async def restore_sessions(
    consumer: AIOKafkaConsumer,
    topic: str,
    partitions: Iterable[int],
    committed: dict[int, int],
    fetch_timeout_ms: int = 500,
) -> dict[int, Sessions]:
    """Read changelog partitions up to their end offsets as of now, by manual assignment.

    `committed` maps each input partition to its committed offset: a session opened at or after
    it may see its opening message redelivered, so its decision is kept to be replayed as-is.
    """
    tps = [TopicPartition(topic, p) for p in partitions]
    restored: dict[int, Sessions] = {tp.partition: {} for tp in tps}
    if not tps:
        return restored
    consumer.assign(tps)
    listed = await consumer.end_offsets(tps)
    remaining = {tp for tp in tps if listed[tp] > 0}
    # The end offset is captured once, at assignment: ListOffsets, raised to the high watermark
    # of the first fetch (Tansu's ListOffsets answers a batch's base offset + 1 instead).
    end: dict[TopicPartition, int] = {}
    if remaining:
        await consumer.seek_to_beginning(*remaining)
    started = time.monotonic()
    count = 0
    while remaining:
        batch = await consumer.getmany(*remaining, timeout_ms=fetch_timeout_ms)
        for tp in remaining:
            highwater = consumer.highwater(tp)
            if tp not in end and highwater is not None:
                end[tp] = max(listed[tp], highwater)
        for tp, records in batch.items():
            sessions = restored[tp.partition]
            floor = committed.get(tp.partition, 0)
            limit = end.get(tp, listed[tp])
            for record in records:
                if record.offset >= limit:
                    break
                count += 1
                key = record.key.decode("utf-8", "replace") if record.key is not None else None
                if key is None:
                    continue
                if record.value is None:
                    sessions.pop(key, None)
                    continue
                try:
                    value = session_record_adapter.validate_json(record.value)
                except ValidationError as exc:
                    log.warning(
                        "skipping unreadable session record %s[%d]@%d: %d errors",
                        topic,
                        tp.partition,
                        record.offset,
                        exc.error_count(),
                    )
                    continue
                sessions[key] = session_from_record(value, value.since_offset >= floor)
        for tp in list(remaining):
            if tp in end and await consumer.position(tp) >= end[tp]:
                remaining.discard(tp)
    consumer.assign([])
    log.info(
        "restored %d sessions from %d changelog records of %s partitions %s in %.2fs",
        sum(len(s) for s in restored.values()),
        count,
        topic,
        sorted(restored),
        time.monotonic() - started,
    )
    return restored
