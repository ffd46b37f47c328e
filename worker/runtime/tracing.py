"""What the runtime asks of a tracer (worker.ops.tracing builds one when tracing is on).

Without one, the runtime does no tracing work at all: no import of OpenTelemetry, no call per
message. With one, every input record is decided and published inside `message(record)` — in
the fetch loop for a message decided at once, in its sender's lane otherwise, so an LLM call
made for it happens inside it too — and its inbox record gets `inbox_headers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from aiokafka import ConsumerRecord

from worker.kafka.outbox import Headers


class MessageTracing(Protocol):
    def message(self, record: ConsumerRecord[bytes, bytes]) -> AbstractContextManager[None]:
        """The scope of one input record: from taking it to publishing what it led to."""

    def inbox_headers(
        self, record: ConsumerRecord[bytes, bytes], routing: Mapping[str, Any]
    ) -> Headers:
        """The input's headers for its inbox record, carrying the trace context continued by
        the record's span (its `traceparent` replaced), which learns the routing."""

    def dead_lettered(self, record: ConsumerRecord[bytes, bytes], error_type: str) -> None:
        """The record went to the DLQ instead (its DLQ record keeps the input's headers)."""
