"""The `routing-sessions` changelog: what a record says, and restoring a partition from it.

Changelog partition p holds the sessions of input partition p, whatever partitioner the
connectors used. Each record the worker writes for an input message carries the header
`x-input-offset` (that message's offset), so a restore can tell which records describe messages
that will be redelivered (see `worker.runtime.replay`). Idle-expiry tombstones carry no header:
they belong to no message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from contracts.models import INPUT_OFFSET_HEADER, SessionRecord, session_record_adapter
from worker.logs import at_record
from worker.routing.session import SessionTable, StickySession
from worker.runtime.replay import ChangelogEvent, Replay, SenderHistory

log = logging.getLogger(__name__)

# Records decoded at a time by a restore. The sessions it keeps are allocated among the
# records it drops, so the memory that held a batch stays resident, pinned by the sessions:
# whole fetches (thousands of records) cost 10-25 more bytes per restored session than this.
RESTORE_BATCH = 500


def input_offset_headers(offset: int | None) -> list[tuple[str, bytes]]:
    return [] if offset is None else [(INPUT_OFFSET_HEADER, str(offset).encode())]


def _input_offset(headers: Sequence[tuple[str, bytes]]) -> int | None:
    for name, value in headers:
        if name == INPUT_OFFSET_HEADER:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def session_from_record(record: SessionRecord) -> StickySession:
    return StickySession(record.route, record.since_offset, record.seen_at)


@dataclass(slots=True)
class RestoredPartition:
    """Everything a partition's owner knows from its changelog: kept whole, never in parts,
    when a revoked partition is parked for a rebalance that may give it straight back."""

    sessions: SessionTable = field(default_factory=SessionTable)
    # Senders with changelog records for input offsets at or past the committed offset.
    replay: Replay = field(default_factory=Replay)
    # How far the owner knows the changelog partition: the restore's end, then its own
    # acknowledged writes.
    end: int = 0
    records: int = 0  # changelog records the restore read

    def written(self, ack: asyncio.Future[int]) -> None:
        """A done-callback for the acknowledgement of a changelog batch of this partition."""
        if not ack.cancelled() and ack.exception() is None:
            self.end = max(self.end, ack.result())

    def apply(self, topic: str, record: ConsumerRecord[bytes, bytes], committed: int) -> None:
        if record.key is None:
            return
        key = record.key.decode("utf-8", "replace")
        written_for = _input_offset(record.headers)
        session: StickySession | None = None
        opened = None
        message_id = None
        if record.value is not None:
            try:
                value = session_record_adapter.validate_json(record.value)
            except ValidationError as exc:
                log.warning(
                    "skipping unreadable session record %s[%d]@%d: %d errors",
                    topic,
                    record.partition,
                    record.offset,
                    exc.error_count(),
                    extra=at_record(record),
                )
                return
            session = session_from_record(value)
            message_id = value.message_id
            if written_for is None and value.routing is not None:
                written_for = value.since_offset  # written before the header existed: an opener
            if value.routing is not None and value.since_offset == written_for:
                opened = value.routing
        history = self.replay.get(key)
        if written_for is not None and written_for >= committed:
            if history is None:
                history = self.replay[key] = SenderHistory(self.sessions.get(key))
            # Per sender, records follow input order; max() only guards against odd writers.
            at = max(written_for, history.last_offset)
            history.add(ChangelogEvent(at, session, opened, message_id))
        elif history is not None:
            # An idle expiry (or a record of unknown origin) after the sender's last message.
            history.add(ChangelogEvent(history.last_offset, session))
        if session is None:
            self.sessions.pop(key)
        else:
            self.sessions.put(key, session)


async def restore_sessions(
    consumer: AIOKafkaConsumer,
    topic: str,
    partitions: Iterable[int],
    committed: dict[int, int],
    fetch_timeout_ms: int = 500,
    metadata_timeout: float = 30.0,
    max_records: int = RESTORE_BATCH,
    progress: Callable[[int], None] | None = None,
) -> dict[int, RestoredPartition]:
    """Read changelog partitions up to their end offsets as of now, by manual assignment.

    `committed` maps each input partition to its committed offset: records written for offsets
    at or after it describe messages that will be redelivered, and are kept for replay.
    Raises TimeoutError when the end offsets cannot be listed within `metadata_timeout`
    (aiokafka waits forever for a partition that does not exist). `progress` hears the count
    of records read so far after each fetch.
    """
    tps = [TopicPartition(topic, p) for p in partitions]
    restored = {tp.partition: RestoredPartition() for tp in tps}
    if not tps:
        return restored
    started = time.monotonic()
    count = 0
    consumer.assign(tps)
    try:
        listed = await asyncio.wait_for(consumer.end_offsets(tps), metadata_timeout)
        remaining = {tp for tp in tps if listed[tp] > 0}
        # The end offset is captured once, at assignment: ListOffsets, raised to the high
        # watermark of the first fetch (Tansu's ListOffsets answers a batch's base offset + 1).
        end: dict[TopicPartition, int] = {}
        if remaining:
            await consumer.seek_to_beginning(*remaining)
        while remaining:
            batch = await consumer.getmany(
                *remaining, timeout_ms=fetch_timeout_ms, max_records=max_records
            )
            for tp in remaining:
                highwater = consumer.highwater(tp)
                if tp not in end and highwater is not None:
                    end[tp] = max(listed[tp], highwater)
            for tp, records in batch.items():
                target = restored[tp.partition]
                floor = committed.get(tp.partition, 0)
                limit = end.get(tp, listed[tp])
                for record in records:
                    if record.offset >= limit:
                        break
                    count += 1
                    target.records += 1
                    target.apply(topic, record, floor)
            if progress is not None and batch:
                progress(count)
            for tp in list(remaining):
                if tp in end and await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        for tp in tps:
            restored[tp.partition].end = end.get(tp, listed[tp])
    finally:
        consumer.assign([])
    log.info(
        "restored %d sessions (%d senders to replay) from %d changelog records of %s "
        "partitions %s in %.2fs",
        sum(len(r.sessions) for r in restored.values()),
        sum(len(r.replay) for r in restored.values()),
        count,
        topic,
        sorted(restored),
        time.monotonic() - started,
    )
    return restored


async def unchanged_since(
    consumer: AIOKafkaConsumer, topic: str, ends: dict[int, int], timeout: float
) -> set[int]:
    """The changelog partitions whose log still ends exactly at `ends[p]`: nobody wrote there
    since this worker last knew its end (its own restore, its own acknowledged writes).

    The true end is the high watermark of a fetch from that offset, not ListOffsets, which
    Tansu answers short of the end. A partition without an answer within `timeout` counts as
    changed.
    """
    expected = {TopicPartition(topic, p): end for p, end in ends.items()}
    if not expected:
        return set()
    consumer.assign(list(expected))
    changed: set[TopicPartition] = set()
    try:
        for tp, end in expected.items():
            consumer.seek(tp, end)
        unknown = set(expected)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while unknown and loop.time() < deadline:
            # getmany holds out for records until its timeout; the answer we want is the high
            # watermark, which an empty fetch response sets: look often.
            batch = await consumer.getmany(*unknown, timeout_ms=50)
            changed.update(tp for tp, records in batch.items() if records)
            for tp in list(unknown):
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    unknown.discard(tp)
                    if highwater != expected[tp]:
                        changed.add(tp)
        changed |= unknown
    finally:
        consumer.assign([])
    return {tp.partition for tp in expected if tp not in changed}
