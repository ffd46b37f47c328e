"""Every record the worker writes: inbox outputs, changelog records, dead letters.

Each write returns the broker's acknowledgement as a future; the worker attaches it to the input
offset it belongs to, which is committed only once all of them are in (acks=all).
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import ValidationError

from contracts.models import DeadLetter, Route, encode_routed, session_value
from worker.config.endpoints import Topics
from worker.kafka.outbox import Ack, Outbox
from worker.logs import at_record
from worker.routing.session import StickySession
from worker.runtime.changelog import input_offset_headers

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, outbox: Outbox, topics: Topics) -> None:
        self._outbox = outbox
        self._topics = topics

    def routed(
        self, record: ConsumerRecord[bytes, bytes], sender: str, routing: dict[str, Any]
    ) -> Ack:
        """The input message unchanged under `message`, plus the `routing` block (as
        contracts.models.routing_block makes it), to the route's inbox."""
        assert record.value is not None
        topic = self._topics.calm if routing["route"] is Route.CALM else self._topics.nlu
        return self._outbox.add(topic, encode_routed(record.value, routing), key=sender.encode())

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
        """The original key and bytes, with headers naming the error and the source."""
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
        return self._outbox.add(
            self._topics.dlq, record.value, key=record.key, headers=letter.to_headers()
        )


def where(record: ConsumerRecord[bytes, bytes]) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


def describe(error: BaseException) -> str:
    """One line naming what is wrong (pydantic errors without the offending input values)."""
    if isinstance(error, ValidationError):
        parts = []
        for problem in error.errors(include_input=False, include_url=False):
            loc = ".".join(str(p) for p in problem["loc"]) or "record"
            parts.append(f"{loc}: {problem['msg']}")
        return "; ".join(parts)
    return str(error) or type(error).__name__
