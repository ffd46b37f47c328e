"""Traces of a real `coexistence-router run` with the otel extra and the standard OTEL_* variables,
received by a loopback OTLP/HTTP receiver (aiohttp) and decoded with opentelemetry-proto: a span
per routed message, a child of the input's traceparent; a span per LLM attempt, a child of its
message's; the inbox record's traceparent naming the message's span, every other header as it
came. And without the variables, OpenTelemetry is not even imported.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiokafka import ConsumerRecord
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.kafka_support import Outgoing, TopicReader, produce, routed, user_message
from tests.worker_processes import WorkerProcess, wait_for_balanced_group, write_bundle
from worker.fake_llm import FakeLLMServer

ROOT = Path(__file__).resolve().parents[2]
TRACESTATE = b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


class OtlpReceiver:
    """OTLP/HTTP (protobuf) on a loopback port: keeps every span it is sent, and its resource."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.services: set[str] = set()
        self.changed = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    self.services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        self.changed.set()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Span]:
        async with asyncio.timeout(timeout):
            while len(self.spans) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.spans

    async def __aenter__(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self.traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def attributes(span: Span) -> dict[str, Any]:
    def plain(value: AnyValue) -> Any:
        return getattr(value, value.WhichOneof("value") or "string_value")

    return {a.key: plain(a.value) for a in span.attributes}


def traceparent(record: ConsumerRecord[bytes, bytes]) -> tuple[str, str, int]:
    """(trace id, span id, flags) of the record's traceparent header."""
    [value] = [v for k, v in record.headers if k == "traceparent"]
    version, trace_id, span_id, flags = value.decode().split("-")
    assert version == "00"
    return trace_id, span_id, int(flags, 16)


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        server.script("down", status=503)
        server.script("good", answer="A")
        yield server


async def test_spans_continue_the_inputs_trace_into_the_inbox(
    bootstrap: str, llm: FakeLLMServer, tmp_path: Path
) -> None:
    bundle = write_bundle(tmp_path, bootstrap, router="llm", llm_url=llm.url)
    endpoints = json.loads(bundle.endpoints.read_text())
    [group] = endpoints["model_groups"]
    model = group["models"][0]
    # Cheapest first: every message is tried on `down` (503), then answered by `good`.
    group["models"] = [
        {**model, "model": name, "input_cost_per_token": cost, "output_cost_per_token": cost}
        for name, cost in (("down", 1e-9), ("good", 2e-9))
    ]
    group["router"] = {"routing_strategy": "cost-based-routing", "allowed_fails": 100}
    bundle.endpoints.write_text(json.dumps(endpoints))
    traced = {
        f"traced-{i}": (uuid.uuid4().hex, uuid.uuid4().hex[:16]) for i in range(2)
    }  # sender -> (trace id, parent span id)
    sent = [
        Outgoing(
            user_message(sender, "send money").value,
            sender.encode(),
            headers=[
                ("x-connector", b"rest"),
                ("traceparent", f"00-{trace_id}-{parent}-01".encode()),
                ("tracestate", TRACESTATE),
            ],
        )
        for sender, (trace_id, parent) in traced.items()
    ]
    sent.append(user_message("untraced", "send money"))
    sticky_trace, sticky_parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    sticky = Outgoing(
        user_message("traced-0", "and again").value,
        b"traced-0",
        headers=[("traceparent", f"00-{sticky_trace}-{sticky_parent}-01".encode())],
    )
    async with OtlpReceiver() as otlp:
        bundle.env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url,
            OTEL_SERVICE_NAME="router-under-test",
            OTEL_BSP_SCHEDULE_DELAY="50",
        )
        worker = await WorkerProcess.start(bundle)
        try:
            await wait_for_balanced_group([worker], 6)
            await produce(bootstrap, bundle.topics.input, sent)
            async with TopicReader(bootstrap, bundle.topics.calm) as inbox:
                records = list(await inbox.wait_for(len(sent)))
                # The sender's session holds now: decided in the fetch loop, no LLM call.
                await produce(bootstrap, bundle.topics.input, [sticky])
                [again] = (await inbox.wait_for(len(sent) + 1))[len(sent) :]
            spans = await otlp.wait_for(3 * len(sent) + 1)  # a message's span, two attempts
        finally:
            assert await worker.stop() == 0, worker.output
    assert otlp.services == {"router-under-test"}
    messages = {s.span_id.hex(): s for s in spans if s.name.startswith("process ")}
    attempts = [s for s in spans if s.name == "llm attempt router-llm"]
    assert len(messages) == len(sent) + 1 and len(attempts) == 2 * len(sent)
    trace_id, span_id, _ = traceparent(again)
    held = messages.pop(span_id)
    assert (trace_id, held.parent_span_id.hex()) == (sticky_trace, sticky_parent)
    assert attributes(held)["coexistence_router.reason"] == "sticky_session"
    assert not [a for a in attempts if a.parent_span_id == held.span_id]
    by_sender = {routed(r)["message"]["sender_id"]: r for r in records}
    for sender, record in by_sender.items():
        trace_id, span_id, flags = traceparent(record)
        message = messages[span_id]  # the inbox names the message's own span
        assert message.trace_id.hex() == trace_id and flags & 1
        assert message.name == f"process {bundle.topics.input}"
        assert message.kind == Span.SpanKind.SPAN_KIND_CONSUMER
        assert attributes(message)["coexistence_router.route"] == "calm"
        assert attributes(message)["coexistence_router.reason"] == "llm_answer"
        if sender in traced:
            expected_trace, parent = traced[sender]
            assert (trace_id, message.parent_span_id.hex()) == (expected_trace, parent)
            # Every other header as it came, in its place.
            assert [(k, v) for k, v in record.headers if k != "traceparent"] == [
                ("x-connector", b"rest"),
                ("tracestate", TRACESTATE),
            ]
            assert [k for k, _ in record.headers] == ["x-connector", "traceparent", "tracestate"]
        else:
            assert message.parent_span_id == b""  # a trace of its own
        children = sorted(
            (a for a in attempts if a.parent_span_id == message.span_id),
            key=lambda a: a.start_time_unix_nano,
        )
        assert [attributes(a)["coexistence_router.deployment"] for a in children] == [
            "down",
            "good",
        ]
        failed, answered = children
        assert attributes(failed)["coexistence_router.outcome"] == "server_error"
        assert failed.status.code == Status.StatusCode.STATUS_CODE_ERROR
        assert attributes(answered)["coexistence_router.outcome"] == "success"
        for attempt in children:
            assert attempt.trace_id == message.trace_id
            assert attempt.kind == Span.SpanKind.SPAN_KIND_CLIENT
            assert attributes(attempt)["coexistence_router.model_group"] == "router-llm"
            assert attributes(attempt)["coexistence_router.latency_ms"] >= 0
            assert message.start_time_unix_nano <= attempt.start_time_unix_nano
            assert attempt.end_time_unix_nano <= message.end_time_unix_nano
        assert routed(record)["routing"]["llm"]["attempts"] == 2


def test_without_the_otel_variables_opentelemetry_is_not_imported() -> None:
    """A service built as `run` builds it, with HTTP on: neither worker.ops.otel nor
    OpenTelemetry's tracing SDK, propagators or exporters are loaded, and the worker has no
    tracer (so nothing of tracing runs per message). (redis-py imports OpenTelemetry's metrics
    SDK by itself whenever it is installed, for its own instrumentation, which stays off.)"""
    program = """
import os, sys
from worker.config.app_config import load_app_config
from worker.config.examples import bundled_example
from worker.ops.server import HttpSettings
from worker.service import RouterService
paths = bundled_example("llm")
app = load_app_config(paths.config, paths.endpoints, paths.flows, os.environ, domain=paths.domain)
service = RouterService(app, os.environ, http=HttpSettings("127.0.0.1", 0))
assert service.tracing is None and service.worker._tracing is None
ours = ("worker.ops.otel", "opentelemetry.sdk.trace", "opentelemetry.propagate")
loaded = sorted(m for m in sys.modules if m.startswith(ours + ("opentelemetry.exporter",)))
print(loaded)
"""
    env = {
        "PATH": "/usr/bin:/bin",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "FAKE_LLM_BASE": "http://127.0.0.1:9/v1",
        "FAKE_LLM_KEY": "not-a-key",
    }
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
