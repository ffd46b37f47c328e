"""`/metrics` of a real `coexistence-router run`: the counters agree with the traffic the run
saw, the scrape passes `promtool check metrics`, and no label carries a sender id or a secret.

The LLMBasedRouter calls a group of three fake deployments, cheapest first
(cost-based-routing): `down` always answers 503 and cools down at its first failure, `flaky`
fails half of its calls, `good` answers. So messages take one to three attempts, and the sum of
`routing.llm.attempts` over the inbox records is what the attempt counter must say.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kafka_support import Outgoing, TopicReader, produce, routed, user_message
from tests.worker_processes import LLM_KEY, WorkerProcess, wait_for_balanced_group, write_bundle
from worker.fake_llm import FakeLLMServer
from worker.kafka.broker import free_loopback_port

DEPLOYMENTS = {"down": 1e-9, "flaky": 2e-9, "good": 3e-9}  # deployment -> cost per token
SENDERS = [f"metrics-sender-{i}" for i in range(12)]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(seed=11) as server:
        server.script("down", status=503)
        server.script("flaky", error_rate=0.5, error_status=500, answers=["A", "C", "B"])
        server.script("good", answers=["A", "C", "B"])
        yield server


def model_groups() -> list[dict[str, object]]:
    return [
        {
            "id": "router-llm",
            "models": [
                {
                    "provider": "openai",
                    "model": name,
                    "api_base": "${FAKE_LLM_BASE}",
                    "api_key": "${FAKE_LLM_KEY}",
                    "input_cost_per_token": cost,
                    "output_cost_per_token": cost,
                }
                for name, cost in DEPLOYMENTS.items()
            ],
            "router": {
                "routing_strategy": "cost-based-routing",
                "num_retries": 2,
                "allowed_fails": 0,
                "cooldown_time": 600,
            },
        }
    ]


def parse(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def by(samples: Samples, name: str, label: str) -> dict[str, float]:
    counted: Counter[str] = Counter()
    for (n, labels), v in samples.items():
        if n == name:
            counted[dict(labels)[label]] += int(v)
    return dict(counted)


async def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def test_the_counters_of_a_run_agree_with_its_traffic(
    bootstrap: str, llm: FakeLLMServer, tmp_path: Path
) -> None:
    bundle = write_bundle(tmp_path, bootstrap, router="llm", llm_url=llm.url)
    endpoints = json.loads(bundle.endpoints.read_text())
    endpoints["model_groups"] = model_groups()
    bundle.endpoints.write_text(json.dumps(endpoints))
    port = free_loopback_port()
    base = f"http://127.0.0.1:{port}"
    worker = await WorkerProcess.start(
        bundle, args=["--http-port", str(port), "--http-host", "127.0.0.1"]
    )
    try:
        await wait_for_balanced_group([worker], 6)
        messages = [
            user_message(sender, f"{text} {uuid.uuid4().hex[:6]}")
            for text in ("hello", "and then")
            for sender in SENDERS
        ]
        bad = [
            Outgoing(b"{not json", b"metrics-sender-0"),
            Outgoing(b'{"message_id": "m", "sender_id": "metrics-sender-1"}', b"metrics-sender-1"),
            Outgoing(user_message("metrics-sender-2", "hi").value, b"someone-else"),
        ]
        await produce(bootstrap, bundle.topics.input, [*messages, *bad])
        async with (
            TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inboxes,
            TopicReader(bootstrap, bundle.topics.dlq) as dlq,
        ):
            await inboxes.wait_for(len(messages))
            await dlq.wait_for(len(bad))
        status, content_type, text = await get(f"{base}/metrics")
        ready = await get(f"{base}/readyz")
        alive = await get(f"{base}/healthz")
        openmetrics = await get(f"{base}/metrics", "application/openmetrics-text; version=1.0.0")
    finally:
        assert await worker.stop() == 0, worker.output
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert openmetrics[0] == 200 and openmetrics[1].startswith("application/openmetrics-text")
    assert openmetrics[2].rstrip().endswith("# EOF")
    assert ready[0] == 200 and json.loads(ready[2])["ok"] is True, ready
    assert alive[0] == 200, alive
    samples = parse(text)

    # Decisions summed by route: the inbox records of each inbox.
    records = inboxes.records
    inbox_counts = Counter("calm" if r.topic == bundle.topics.calm else "nlu" for r in records)
    assert by(samples, "coexistence_router_decisions_total", "route") == dict(inbox_counts)
    reasons = Counter(routed(r)["routing"]["reason"] for r in records)
    assert by(samples, "coexistence_router_decisions_total", "reason") == dict(reasons)
    assert set(by(samples, "coexistence_router_decisions_total", "router")) == {"LLMBasedRouter"}

    # Dead letters by error type: the DLQ's records.
    letters = Counter(dict(r.headers)["x-error-type"].decode() for r in dlq.records)
    assert sum(letters.values()) == len(bad)
    assert by(samples, "coexistence_router_dead_letters_total", "error_type") == dict(letters)

    # LLM attempts: the sum of routing.llm.attempts, which is every request the fake received.
    attempts = sum((routed(r)["routing"].get("llm") or {}).get("attempts", 0) for r in records)
    assert attempts == len(llm.requests) > len(SENDERS)  # some needed a retry
    requests = "coexistence_router_llm_requests_total"
    assert total(samples, requests) == attempts
    sent = Counter(request.deployment for request in llm.requests)
    assert by(samples, requests, "deployment") == dict(sent)
    assert total(samples, requests, deployment="down", outcome="server_error") == sent["down"]
    assert total(samples, requests, deployment="good", outcome="success") == sent["good"]
    assert total(samples, requests, outcome="success") == sum(
        1 for r in records if (routed(r)["routing"].get("llm") or {}).get("answer") is not None
    )
    duration = "coexistence_router_llm_request_duration_seconds_count"
    for name, count in sent.items():
        assert total(samples, duration, model_group="router-llm", deployment=name) == count

    # Cooldowns as the gateway holds them: `down` cooled at its first failure, `good` never.
    cooling = "coexistence_router_deployment_cooling_down"
    assert total(samples, cooling, model_group="router-llm", deployment="down") == 1
    assert total(samples, cooling, model_group="router-llm", deployment="good") == 0
    flaky_failed = total(samples, requests, deployment="flaky") > total(
        samples, requests, deployment="flaky", outcome="success"
    )
    assert total(samples, cooling, deployment="flaky") == int(flaky_failed)

    # What the worker holds: every session in memory, nothing in flight, nothing left to commit.
    sticky = {routed(r)["message"]["sender_id"] for r in records if routed(r)["routing"]["sticky"]}
    assert total(samples, "coexistence_router_sessions") == len(sticky)
    assert total(samples, "coexistence_router_messages_in_flight") == 0
    assert total(samples, "coexistence_router_restore_duration_seconds_count") == 6

    # Prometheus's own lint, and nothing a label must not carry.
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for secret in (*SENDERS, LLM_KEY, llm.url, "someone-else"):
        assert secret not in text
