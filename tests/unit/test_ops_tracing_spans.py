"""Tracing (worker.ops.tracing, worker.ops.otel): when it is on, and what the spans and the inbox
headers of one message are, with the SDK's in-memory exporter (the OTLP export of a real run is
tests/integration/test_ops_tracing.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiokafka import ConsumerRecord
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from contracts.models import Reason, Route, RouterName, routing_block
from worker.ops.otel import Tracing
from worker.ops.tracing import tracing_from_environment, tracing_requested

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()
TRACESTATE = b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"  # kept byte for byte


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(spans: InMemorySpanExporter) -> Iterator[Tracing]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield Tracing(provider)
    provider.shutdown()


def record(headers: list[tuple[str, bytes]], offset: int = 7) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("user-messages", 2, offset, 0, 0, b"u", b"{}", None, 1, 2, headers)


ROUTING = routing_block(
    route=Route.CALM,
    sticky=True,
    router=RouterName.LLM,
    reason=Reason.LLM_ANSWER,
    intent=None,
    llm=None,
    decided_at=1.0,
)


def one(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in spans.get_finished_spans() if s.name == name]
    return span


def context_of(span: ReadableSpan) -> SpanContext:
    context = span.get_span_context()
    assert context is not None
    return context


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "router"}, False),  # naming a service asks for no export
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_tracing_is_on_when_the_environment_asks_for_an_export(
    environ: dict[str, str], on: bool
) -> None:
    assert tracing_requested(environ) is on


def test_no_tracer_without_an_export_and_an_unknown_exporter_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert tracing_from_environment({}, "coexistence-router") is None
    assert tracing_from_environment({"OTEL_TRACES_EXPORTER": "zipkin2000"}, "x") is None
    assert "no span exporter 'zipkin2000' is installed" in caplog.text


def test_the_inbox_record_continues_the_inputs_trace(
    tracing: Tracing, spans: InMemorySpanExporter
) -> None:
    source = record(
        [
            ("x-connector", b"rest"),
            ("traceparent", TRACEPARENT),
            ("tracestate", TRACESTATE),
            ("x-binary", b"\x00\xff"),
        ]
    )
    with tracing.message(source):
        headers = tracing.inbox_headers(source, ROUTING)
    span = one(spans, "process user-messages")
    context = context_of(span)
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert format(context.trace_id, "032x") == TRACE_ID
    assert span.kind is SpanKind.CONSUMER
    assert span.attributes is not None
    assert span.attributes["coexistence_router.route"] == "calm"
    assert span.attributes["coexistence_router.reason"] == "llm_answer"
    assert span.attributes["messaging.kafka.offset"] == 7
    # Every header as it came, in its place; only traceparent names the new span.
    assert headers == [
        ("x-connector", b"rest"),
        ("traceparent", f"00-{TRACE_ID}-{context.span_id:016x}-01".encode()),
        ("tracestate", TRACESTATE),
        ("x-binary", b"\x00\xff"),
    ]


def test_an_input_without_trace_context_starts_a_trace(
    tracing: Tracing, spans: InMemorySpanExporter
) -> None:
    source = record([("x-connector", b"rest")])
    with tracing.message(source):
        headers = tracing.inbox_headers(source, ROUTING)
    span = one(spans, "process user-messages")
    assert span.parent is None
    context = context_of(span)
    assert headers[0] == ("x-connector", b"rest")
    name, value = headers[1]
    version, trace_id, span_id, flags = value.decode().split("-")
    assert (name, version, trace_id, span_id) == (
        "traceparent",
        "00",
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    )
    assert int(flags, 16) & 1  # sampled
    assert len(headers) == 2


def test_llm_attempts_are_children_of_their_messages_span(
    tracing: Tracing, spans: InMemorySpanExporter
) -> None:
    source = record([("traceparent", TRACEPARENT)])
    with tracing.message(source):
        tracing.attempt("router-llm", "fr", "server_error", 0.02)
        tracing.attempt("router-llm", "gpt-4o-mini", "success", 0.05)
        tracing.inbox_headers(source, ROUTING)
    message = one(spans, "process user-messages")
    attempts = [s for s in spans.get_finished_spans() if s.name == "llm attempt router-llm"]
    assert len(attempts) == 2
    for attempt in attempts:
        assert attempt.parent is not None
        assert attempt.parent.span_id == context_of(message).span_id
        assert attempt.kind is SpanKind.CLIENT
        assert attempt.start_time is not None and attempt.end_time is not None
    failed, answered = attempts
    assert failed.attributes is not None and answered.attributes is not None
    assert failed.attributes["coexistence_router.deployment"] == "fr"
    assert failed.attributes["coexistence_router.outcome"] == "server_error"
    assert failed.status.status_code is StatusCode.ERROR
    assert answered.attributes["coexistence_router.latency_ms"] == 50.0
    assert answered.status.status_code is StatusCode.UNSET
    assert failed.end_time is not None and failed.start_time is not None
    assert failed.end_time - failed.start_time == pytest.approx(0.02e9, rel=0.01)


def test_a_dead_letter_is_an_error_span_and_a_lane_bound_record_none(
    tracing: Tracing, spans: InMemorySpanExporter
) -> None:
    bad = record([("traceparent", TRACEPARENT)])
    with tracing.message(bad):
        tracing.dead_lettered(bad, "ValidationError")
    span = one(spans, "process user-messages")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "dead-lettered: ValidationError"
    spans.clear()
    with tracing.message(record([], offset=8)):
        pass  # handed to its sender's lane: its span is made there
    assert spans.get_finished_spans() == ()
