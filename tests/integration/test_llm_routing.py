"""The LLMBasedRouter end to end: real broker, real HTTP to the fake LLM, the real gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.test_intent_routing import make_settings
from tests.kafka_support import TopicReader, produce, routed, running_worker, user_message
from worker.fake_llm import FakeLLMServer
from worker.llm.gateway import GatewayRegistry
from worker.llm.model_group import ModelGroup
from worker.routing.flows import Flow, Flows, NluTrigger
from worker.routing.router_config import LLMBasedRouterConfig
from worker.routing.rules import Assistant
from worker.runtime.coexistence_router import CoexistenceRouter

ROUTER = LLMBasedRouterConfig.model_validate(
    {"calm_entry": {"sticky": "handles money transfers"}, "llm": {"model_group": "router-llm"}}
)


def group(base: str, *models: str, **router: Any) -> ModelGroup:
    return ModelGroup.model_validate(
        {
            "id": "router-llm",
            "models": [
                {"provider": "openai", "model": m, "api_base": f"{base}/v1", "api_key": "sk-test"}
                for m in models
            ],
            "router": {"routing_strategy": "simple-shuffle", **router},
        }
    )


def answer_by_text(prompt: str) -> str:
    said = prompt.split('The user said: """', 1)[1].split('"""', 1)[0]
    return {"money": "A", "hello": "B", "card": "C"}.get(said.split()[0], "maybe D")


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(responder=answer_by_text) as server:
        yield server


async def route(
    bootstrap: str, registry: GatewayRegistry, messages: list[Any], expected: int
) -> list[dict[str, Any]]:
    settings = make_settings(bootstrap)
    router = CoexistenceRouter(
        Assistant(ROUTER, Flows([Flow("transfer", (NluTrigger("transfer", "transfer_money"),))])),
        gateways=registry,
        model_group="router-llm",
    )
    try:
        async with running_worker(settings, router):
            await produce(bootstrap, settings.topics.input, messages)
            async with TopicReader(bootstrap, settings.topics.calm, settings.topics.nlu) as reader:
                records = await reader.wait_for(expected)
    finally:
        await registry.close()
    results = [routed(r) | {"topic": r.topic.rsplit("-", 1)[0]} for r in records]
    return sorted(results, key=lambda r: r["routing"]["decided_at"])


async def test_answers_route_and_stick(bootstrap: str, llm: FakeLLMServer) -> None:
    registry = GatewayRegistry({"router-llm": group(llm.url, "gpt-4o-mini")})
    results = await route(
        bootstrap,
        registry,
        [
            user_message("a1", "hello there"),  # B: NLU, router stays engaged
            user_message("a1", "money please"),  # A: CALM sticky
            user_message("a1", "card lost"),  # held by CALM: no LLM call
            user_message("c1", "card stolen"),  # C: NLU sticky
            user_message("c1", "money now"),  # held by NLU: no LLM call
            user_message("d1", "qwerty"),  # invalid answer: NLU sticky
            user_message("d1", "money again"),  # held by NLU
            user_message("p1", "/transfer_money"),  # payload + flow trigger: CALM, no LLM call
        ],
        8,
    )
    seen = [
        (r["message"]["sender_id"], r["topic"], r["routing"]["reason"], r["routing"]["sticky"])
        for r in results
    ]
    by_sender: dict[str, list[tuple[str, str, bool]]] = {}
    for sender, topic, reason, sticky in seen:
        by_sender.setdefault(sender, []).append((topic, reason, sticky))
    assert by_sender == {
        "a1": [
            ("nlu-inbox", "llm_answer", False),
            ("calm-inbox", "llm_answer", True),
            ("calm-inbox", "sticky_session", True),
        ],
        "c1": [("nlu-inbox", "llm_answer", True), ("nlu-inbox", "sticky_session", True)],
        "d1": [("nlu-inbox", "llm_invalid_answer", True), ("nlu-inbox", "sticky_session", True)],
        "p1": [("calm-inbox", "intent_payload", True)],
    }
    # Four router decisions needed the LLM; sticky sessions and the payload needed none.
    assert llm.count("gpt-4o-mini") == 4
    first = next(r for r in results if r["message"]["sender_id"] == "a1")["routing"]["llm"]
    assert first["model_group"] == "router-llm"
    assert first["deployment"] == "gpt-4o-mini"
    assert first["answer"] == "B"
    assert first["attempts"] == 1
    # Rasa 3.11.20's request: one user message, temperature 0, one token, its logit bias.
    body = llm.requests[0].body
    assert body["messages"][0]["role"] == "user"
    assert body["messages"][0]["content"].startswith("You have to forward the user message")
    assert (body["temperature"], body["max_completion_tokens"]) == (0.0, 1)
    assert body["logit_bias"] == {"362": 100, "426": 100, "356": 100}


async def test_every_deployment_down_routes_nlu_sticky_and_loses_nothing(
    bootstrap: str, llm: FakeLLMServer
) -> None:
    for model in ("m1", "m2"):
        llm.script(model, status=500)
    registry = GatewayRegistry(
        {"router-llm": group(llm.url, "m1", "m2", num_retries=1, allowed_fails=100)}
    )
    senders = [f"down-{i}" for i in range(6)]
    results = await route(
        bootstrap, registry, [user_message(s, "money please") for s in senders], len(senders)
    )
    assert sorted(r["message"]["sender_id"] for r in results) == senders
    for result in results:
        assert result["topic"] == "nlu-inbox"
        assert result["routing"]["reason"] == "llm_failure"
        assert result["routing"]["sticky"] is True
        assert result["routing"]["llm"]["attempts"] == 2  # first try + num_retries on the other


async def test_failover_to_a_healthy_deployment(bootstrap: str, llm: FakeLLMServer) -> None:
    llm.script("broken", status=503)
    registry = GatewayRegistry({"router-llm": group(llm.url, "broken", "healthy")})
    senders = [f"fo-{i}" for i in range(8)]
    results = await route(
        bootstrap, registry, [user_message(s, "money please") for s in senders], len(senders)
    )
    for result in results:
        assert result["topic"] == "calm-inbox"
        assert result["routing"]["llm"]["deployment"] == "healthy"
