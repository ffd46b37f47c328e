"""Traces through OpenTelemetry (the `otel` extra; imported only when tracing is on, see
worker.ops.tracing).

- A span per input record the worker routes, `process <topic>` (kind CONSUMER), a child of
  the record's `traceparent` (W3C trace context, or whatever `OTEL_PROPAGATORS` names), from
  the moment the worker takes the record to the moment its inbox record is queued, with the
  routing as attributes. The inbox record carries the context this span continues: its
  `traceparent` replaces the input's; every other header (`tracestate` included) is kept as
  it came. A record that goes to the DLQ gets an error span instead; its DLQ record keeps the
  input's headers as they are.
- A span per LLM attempt, `llm attempt <group>` (kind CLIENT), a child of its message's span,
  from the gateway's attempt seam (worker.llm.observer): model group, deployment, outcome and
  latency; an error status when it failed.

The span of a record is made only when something needs it (its inbox record, a dead letter,
an LLM attempt), so a record that the fetch loop hands to a lane costs nothing there.
Spans are exported in batches by the SDK's BatchSpanProcessor, on its own thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib.metadata import entry_points
from time import time_ns
from typing import Any

from aiokafka import ConsumerRecord
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context

from worker.kafka.outbox import Headers
from worker.llm.observer import SUCCESS, AttemptObserver

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
EXPORTER_GROUP = "opentelemetry_traces_exporter"
# OTEL_EXPORTER_OTLP_PROTOCOL -> the entry point of the exporter that speaks it.
OTLP_EXPORTERS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}


class _RecordHeaders(Getter[Any]):
    """Reads trace context from Kafka headers: (name, bytes) pairs, names compared without
    case, as W3C trace context compares HTTP header names."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        key = key.lower()
        values = [v.decode("latin-1") for k, v in carrier if k.lower() == key and v is not None]
        return values or None

    def keys(self, carrier: Any) -> list[str]:
        return [k for k, _ in carrier]


_HEADERS = _RecordHeaders()


@dataclass(slots=True)
class _Message:
    record: ConsumerRecord[bytes, bytes]
    started: int  # time_ns() when the worker took it
    span: Span | None = None


class Tracing(AttemptObserver):
    """The runtime's MessageTracing (worker.runtime.tracing) and an attempt observer of the
    gateways: one tracer provider of its own, shut down (spans flushed) by `close()`."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("coexistence-router")
        self._propagator = get_global_textmap()  # OTEL_PROPAGATORS, W3C trace context by default
        self._current: ContextVar[_Message | None] = ContextVar("traced_message", default=None)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], service: str) -> Tracing | None:
        exporters = _exporters(environ)
        if not exporters:
            return None
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service}))
        provider = TracerProvider(resource=resource)
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        log.info(
            "tracing: spans of %s exported by %s",
            resource.attributes.get(SERVICE_NAME),
            ", ".join(type(e).__name__ for e in exporters),
        )
        return cls(provider)

    # ---- the runtime's seam ------------------------------------------------------------------

    @contextmanager
    def message(self, record: ConsumerRecord[bytes, bytes]) -> Iterator[None]:
        message = _Message(record, time_ns())
        token = self._current.set(message)
        try:
            yield
        except BaseException:
            if message.span is not None:
                message.span.set_status(Status(StatusCode.ERROR, "abandoned"))
            raise
        finally:
            self._current.reset(token)
            if message.span is not None:
                message.span.end()

    def inbox_headers(
        self, record: ConsumerRecord[bytes, bytes], routing: Mapping[str, Any]
    ) -> Headers:
        message = self._current.get()
        if message is None or message.record is not record:
            return list(record.headers)  # outside a message's scope: nothing to continue
        span = self._span(message)
        span.set_attributes(
            {
                "coexistence_router.route": str(routing["route"]),
                "coexistence_router.reason": str(routing["reason"]),
                "coexistence_router.router": str(routing["router"]),
                "coexistence_router.sticky": bool(routing["sticky"]),
            }
        )
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=set_span_in_context(span))
        traceparent = carrier.get(TRACEPARENT)
        headers: Headers = []
        replaced = False
        for name, value in record.headers:
            if traceparent is not None and name.lower() == TRACEPARENT:
                if not replaced:
                    headers.append((name, traceparent.encode()))
                    replaced = True
                continue
            headers.append((name, value))
        if traceparent is not None and not replaced:
            headers.append((TRACEPARENT, traceparent.encode()))
        present = {name.lower() for name, _ in headers}
        for name, text in carrier.items():  # tracestate, baggage: only where the input had none
            if name.lower() not in present:
                headers.append((name, text.encode()))
        return headers

    def dead_lettered(self, record: ConsumerRecord[bytes, bytes], error_type: str) -> None:
        message = self._current.get()
        if message is None or message.record is not record:
            return
        span = self._span(message)
        span.set_attribute("coexistence_router.dead_letter", error_type)
        span.set_status(Status(StatusCode.ERROR, f"dead-lettered: {error_type}"))

    # ---- the gateway's seam ------------------------------------------------------------------

    def attempt(self, group: str, deployment: str, outcome: str, seconds: float) -> None:
        end = time_ns()
        message = self._current.get()
        parent = set_span_in_context(self._span(message)) if message is not None else None
        span = self._tracer.start_span(
            f"llm attempt {group}",
            context=parent,
            kind=SpanKind.CLIENT,
            start_time=end - int(seconds * 1e9),
            attributes={
                "coexistence_router.model_group": group,
                "coexistence_router.deployment": deployment,
                "coexistence_router.outcome": outcome,
                "coexistence_router.latency_ms": round(seconds * 1000, 3),
            },
        )
        if outcome != SUCCESS:
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end(end_time=end)

    # ---- the rest ----------------------------------------------------------------------------

    def _span(self, message: _Message) -> Span:
        if message.span is None:
            record = message.record
            message.span = self._tracer.start_span(
                f"process {record.topic}",
                context=self._propagator.extract(record.headers, getter=_HEADERS),
                kind=SpanKind.CONSUMER,
                start_time=message.started,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": record.topic,
                    "messaging.destination.partition.id": str(record.partition),
                    "messaging.kafka.offset": record.offset,
                },
            )
        return message.span

    async def close(self) -> None:
        """Export what is left and stop (the SDK's shutdown blocks: off the event loop)."""
        await asyncio.to_thread(self._provider.shutdown)


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    """The exporters OTEL_TRACES_EXPORTER names (default otlp, over OTEL_EXPORTER_OTLP_PROTOCOL),
    found by their entry points as the SDK's own configuration finds them."""
    names = environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")
    exporters: list[SpanExporter] = []
    for name in (n.strip() for n in names):
        if name in ("", "none"):
            continue
        entry = name
        if name == "otlp":
            protocol = (
                environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf"
            ).strip()
            if protocol not in OTLP_EXPORTERS:
                log.warning(
                    "tracing: OTLP protocol %r is not supported (%s); no otlp exporter",
                    protocol,
                    ", ".join(OTLP_EXPORTERS),
                )
                continue
            entry = OTLP_EXPORTERS[protocol]
        found = list(entry_points(group=EXPORTER_GROUP, name=entry))
        if not found:
            log.warning("tracing: no span exporter %r is installed (OTEL_TRACES_EXPORTER)", entry)
            continue
        exporters.append(found[0].load()())
    return exporters
