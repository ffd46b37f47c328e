"""Every record the worker writes: inbox outputs, changelog records, dead letters.

Each write returns the broker's acknowledgement as a future; the worker attaches it to the input
offset it belongs to, which is committed only once all of them are in (acks=all).

Inbox and DLQ records carry every header of their input record unchanged, after it the
worker's own (a DLQ record's `x-error-*`, `x-source-*`); with tracing on, an inbox record's
`traceparent` is the one its routing span continues (worker.runtime.tracing).

A decision's records are checked against their topics' size limits, headers included, before any
of them is queued: a message that cannot be routed whole raises RecordTooLarge having written
nothing, and goes to the DLQ instead. A dead letter itself always fits: a value too large for the
DLQ topic is cut to what fits, with `x-truncated` giving its original size; input headers that
leave no room even for an empty value are left out first, from the last on
(`x-truncated-headers`: how many), and a key too large alone is cut last.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import ValidationError

from contracts.models import (
    TRUNCATED_HEADER,
    TRUNCATED_HEADERS_HEADER,
    TRUNCATED_KEY_HEADER,
    DeadLetter,
    Route,
    encode_routed,
    session_value,
)
from worker.config.endpoints import Topics
from worker.kafka.outbox import Ack, Headers, Outbox, RecordTooLarge, estimate_size
from worker.logs import at_record
from worker.routing.session import StickySession
from worker.runtime.changelog import input_offset_headers
from worker.runtime.tracing import MessageTracing
from worker.runtime.transition import Write

log = logging.getLogger(__name__)

# An error message is a header of the dead letter: bounded, whatever the input held.
MAX_ERROR_MESSAGE = 1000


class Publisher:
    def __init__(
        self, outbox: Outbox, topics: Topics, tracing: MessageTracing | None = None
    ) -> None:
        self._outbox = outbox
        self._topics = topics
        self._tracing = tracing

    def _inbox_headers(
        self, record: ConsumerRecord[bytes, bytes], routing: dict[str, Any]
    ) -> Headers:
        if self._tracing is not None:
            return self._tracing.inbox_headers(record, routing)
        return list(record.headers) if record.headers else []

    def routed(
        self, record: ConsumerRecord[bytes, bytes], sender: str, routing: dict[str, Any]
    ) -> Ack:
        """The input message unchanged under `message`, plus the `routing` block (as
        contracts.models.routing_block makes it), to the route's inbox."""
        assert record.value is not None
        topic = self._topics.calm if routing["route"] is Route.CALM else self._topics.nlu
        return self._outbox.add(
            topic,
            encode_routed(record.value, routing),
            key=sender.encode(),
            headers=self._inbox_headers(record, routing),
        )

    def decision(
        self,
        record: ConsumerRecord[bytes, bytes],
        sender: str,
        routing: dict[str, Any],
        session: StickySession | None,
        write: Write,
        *,
        message_id: str,
        acks: list[Ack],
    ) -> Ack | None:
        """A decided message: its changelog record (as `write` says), then its inbox record;
        their acks go to `acks`, and the changelog record's is returned. Raises
        RecordTooLarge, having queued nothing, when either record is larger than its topic
        takes."""
        if write is Write.NOTHING:
            acks.append(self.routed(record, sender, routing))
            return None
        assert record.value is not None
        key = sender.encode()
        topic = self._topics.calm if routing["route"] is Route.CALM else self._topics.nlu
        routed = encode_routed(record.value, routing)
        headers = self._inbox_headers(record, routing)
        if not self._outbox.fits(topic, key, routed, headers):
            size = estimate_size(key, routed, headers)
            raise RecordTooLarge(
                f"the routed record ({size} bytes) is larger than {topic} takes "
                f"({self._outbox.limit(topic)} bytes)"
            )
        if write is Write.OPEN:
            # The opening decision is stored with the session: a redelivery gets it back.
            changelog = self.session(
                record.partition,
                sender,
                session,
                routing=routing,
                message_id=message_id,
                input_offset=record.offset,
            )
        elif write is Write.REFRESH:
            changelog = self.session(record.partition, sender, session, input_offset=record.offset)
        else:
            changelog = self.session(record.partition, sender, None, input_offset=record.offset)
        acks.append(changelog)
        # After the state record: a crash never leaves an output whose state change was lost.
        acks.append(self._outbox.add(topic, routed, key=key, headers=headers))
        return changelog

    def session(
        self,
        partition: int,
        sender: str,
        session: StickySession | None,
        *,
        routing: dict[str, Any] | None = None,
        message_id: str | None = None,
        input_offset: int | None = None,
    ) -> Ack:
        """A session record (None: a tombstone) to the changelog partition numbered like the
        input partition, whatever partitioner the connectors used. `routing` is stored with
        the record that opens a session, with that message's id, so a redelivery of the
        message gets it back."""
        value = None
        if session is not None:
            session.written_at = session.seen_at
            value = session_value(
                session.route,
                session.since_offset,
                session.seen_at,
                message_id=message_id,
                routing=routing,
            )
        return self._outbox.add(
            self._topics.sessions,
            value,
            key=sender.encode(),
            partition=partition,
            headers=input_offset_headers(input_offset),
        )

    def dead_letter(self, record: ConsumerRecord[bytes, bytes], error: BaseException) -> Ack:
        """The original key and bytes, with headers naming the error and the source; cut to
        fit the DLQ topic if they must be."""
        letter = DeadLetter(
            error_type=type(error).__name__,
            error_message=describe(error),
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
        )
        log.warning(
            "dead-lettered %s: %s", where(record), letter.error_message, extra=at_record(record)
        )
        if self._tracing is not None:
            self._tracing.dead_lettered(record, letter.error_type)
        topic, key, value = self._topics.dlq, record.key, record.value
        inherited, own = list(record.headers), letter.to_headers()
        headers = [*inherited, *own]
        if not self._outbox.fits(topic, key, value, headers):
            key, value, headers = _cut(self._outbox.limit(topic), key, value, inherited, own)
        return self._outbox.add(topic, value, key=key, headers=headers)


def _cut(
    limit: int, key: bytes | None, value: bytes | None, inherited: Headers, own: Headers
) -> tuple[bytes | None, bytes | None, Headers]:
    """Key, value and headers that fit `limit`. The input's headers go first, from the last on,
    but only while even an empty value would leave no room; then the value is cut; the key only
    if it alone is too large. A header of ours says what each cut took."""
    # Length prefixes are varints: a shorter value may need fewer bytes, never more than 4 fewer.
    slack = 4
    whole = value or b""
    cut_value = (TRUNCATED_HEADER, str(len(whole)).encode())
    kept = list(inherited)
    while kept and estimate_size(key, b"", [*kept, *own, cut_value]) > limit - slack:
        kept.pop()
    headers = [*kept, *own]
    if len(kept) < len(inherited):
        headers.append((TRUNCATED_HEADERS_HEADER, str(len(inherited) - len(kept)).encode()))
        if estimate_size(key, value, headers) <= limit:
            return key, value, headers  # the value fits whole once those are left out
    headers.append(cut_value)
    if estimate_size(key, b"", headers) > limit and key is not None:
        headers.append((TRUNCATED_KEY_HEADER, str(len(key)).encode()))
        room = limit - estimate_size(b"", b"", headers) - slack
        key = key[: max(0, room)]
    room = limit - estimate_size(key, b"", headers) - slack
    return key, whole[: max(0, room)], headers


def where(record: ConsumerRecord[bytes, bytes]) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


def describe(error: BaseException) -> str:
    """One line naming what is wrong (pydantic errors without the offending input values)."""
    if isinstance(error, ValidationError):
        parts = []
        for problem in error.errors(include_input=False, include_url=False):
            loc = ".".join(str(p) for p in problem["loc"]) or "record"
            parts.append(f"{loc}: {problem['msg']}")
        text = "; ".join(parts)
    else:
        text = str(error) or type(error).__name__
    if len(text) > MAX_ERROR_MESSAGE:
        text = text[: MAX_ERROR_MESSAGE - 1] + "…"
    return text
