"""Providers the gateway serves through litellm (the `litellm` extra), end to end over loopback
HTTP: litellm's own `anthropic` client against the fake's Anthropic Messages API, inside the
gateway's balancing, failover, cooldowns and accounting — litellm makes exactly one request per
attempt (its own retries are off)."""

from __future__ import annotations

import importlib
import random
from pathlib import Path
from typing import Any

import pytest

from worker.config.endpoints import load_endpoints
from worker.config.errors import ConfigError
from worker.fake_llm import FakeLLMServer
from worker.llm import providers
from worker.llm.errors import AttemptsExhausted, RequestRejected
from worker.llm.gateway import ModelGroupGateway
from worker.llm.model_group import ModelGroup
from worker.llm.providers import litellm_served

ANTHROPIC_KEY = "sk-ant-litellm-test-3f9c2a"
OPENAI_KEY = "sk-openai-litellm-test-77aa"


def anthropic(fake: FakeLLMServer, model: str, **keys: Any) -> dict[str, Any]:
    return {
        "provider": "anthropic",
        "model": model,
        "api_base": fake.url,
        "api_key": ANTHROPIC_KEY,
        **keys,
    }


def group(*models: dict[str, Any], **router: Any) -> ModelGroup:
    return ModelGroup.model_validate(
        {"id": "mixed", "models": list(models), "router": router or None}
    )


async def test_endpoints_yml_anthropic_deployment_answers_through_litellm(
    fake: FakeLLMServer, tmp_path: Path
) -> None:
    fake.script("claude-3-5-haiku", answer="B")
    path = tmp_path / "endpoints.yml"
    path.write_text(
        "model_groups:\n"
        "  - id: router-llm\n"
        "    models:\n"
        "      - provider: anthropic\n"
        "        model: claude-3-5-haiku\n"
        "        api_base: ${ANTHROPIC_BASE}\n"
        "        api_key: ${ANTHROPIC_KEY}\n"
        "        request_timeout: 5\n"  # Rasa's DefaultLiteLLMClientConfig alias of timeout
        # Rasa merges the router's defaults into openai deployments only (shared/utils/llm.py
        # _combine_single_model_configs): another provider sends what the user wrote.
        "        max_tokens: 1\n"
        "        temperature: 0.0\n"
    )
    environ = {"ANTHROPIC_BASE": fake.url, "ANTHROPIC_KEY": ANTHROPIC_KEY}
    routed = load_endpoints(path, environ).model_groups["router-llm"]
    assert routed.models[0].timeout == 5
    async with ModelGroupGateway(routed, environ=environ) as gateway:
        completion = await gateway.complete("route this")
    assert (completion.text, completion.deployment, completion.attempts) == (
        "B",
        "claude-3-5-haiku",
        1,
    )
    assert completion.usage.completion_tokens == 1
    [request] = fake.requests
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == ANTHROPIC_KEY
    assert request.headers["anthropic-version"]
    assert request.body["model"] == "claude-3-5-haiku"
    assert request.body["messages"][0]["role"] == "user"
    # the deployment's parameters reach Anthropic in its own terms
    assert request.body["max_tokens"] == 1 and request.body["temperature"] == 0.0


async def test_a_failing_litellm_deployment_fails_over_counts_and_is_not_retried_by_litellm(
    fake: FakeLLMServer,
) -> None:
    fake.script("claude-broken", status=401)
    fake.script("gpt-4o-mini", answer="A")
    g = group(
        anthropic(fake, "claude-broken", input_cost_per_token=1e-9),
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "api_base": f"{fake.url}/v1",
            "api_key": OPENAI_KEY,
            "input_cost_per_token": 1e-6,
        },
        routing_strategy="cost-based-routing",
        num_retries=2,
        allowed_fails=0,
        cooldown_time=60,
    )
    async with ModelGroupGateway(g, rng=random.Random(1), environ={}) as gateway:
        completion = await gateway.complete("hi")
        assert (completion.deployment, completion.attempts) == ("gpt-4o-mini", 2)
        # counted like any deployment's failure: cooling down now, no second request
        key = gateway.deployment_keys["claude-broken"]
        assert await gateway.store.cooldown_left(key) > 0
        assert (await gateway.complete("hi")).attempts == 1
    assert fake.count("claude-broken") == 1  # litellm made one request, no retries of its own


async def test_litellm_failures_keep_the_gateways_meaning(fake: FakeLLMServer) -> None:
    fake.script("claude-overloaded", status=529)
    async with ModelGroupGateway(
        group(anthropic(fake, "claude-overloaded"), num_retries=1), environ={}
    ) as gateway:
        with pytest.raises(AttemptsExhausted) as raised:
            await gateway.complete("hi")
    assert raised.value.attempts == 2  # a 5xx of a group of one: retried, never cooled
    assert ANTHROPIC_KEY not in str(raised.value)
    fake.script("claude-bad", status=400)
    async with ModelGroupGateway(group(anthropic(fake, "claude-bad")), environ={}) as gateway:
        with pytest.raises(RequestRejected):
            await gateway.complete("hi")
    assert fake.count("claude-bad") == 1


def test_without_the_extra_the_error_names_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.import_module

    def no_litellm(name: str, package: str | None = None) -> Any:
        if name == "litellm":
            raise ImportError("No module named 'litellm'")
        return real(name, package)

    monkeypatch.setattr(litellm_served, "_module", None)
    monkeypatch.setattr(importlib, "import_module", no_litellm)
    path = tmp_path / "endpoints.yml"
    path.write_text(
        "model_groups:\n  - id: g\n    models:\n      - provider: gemini\n"
        "        model: gemini-2.0-flash\n        api_key: ${GEMINI_API_KEY}\n"
    )
    group = load_endpoints(path, {"GEMINI_API_KEY": "g-key"}).model_groups["g"]
    with pytest.raises(ValueError) as raised:
        providers.build_provider(group.models[0])
    assert str(raised.value) == (
        "provider gemini (deployment 'gemini-2.0-flash') is served through litellm, which is "
        "not installed: pip install 'coexistence-router[litellm]'"
    )


def test_a_provider_litellm_does_not_know_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.yml"
    path.write_text(
        "model_groups:\n  - id: g\n    models:\n      - provider: nosuchprovider\n"
        "        model: m\n        api_key: ${K}\n"
    )
    group = load_endpoints(path, {"K": "k"}).model_groups["g"]
    with pytest.raises(ValueError, match="not a provider of litellm"):
        providers.build_provider(group.models[0])
    with pytest.raises(ConfigError):  # a forbidden key: refused at load already
        path.write_text(
            "model_groups:\n  - id: g\n    models:\n"
            "      - {provider: anthropic, model: m, stream: true}\n"
        )
        load_endpoints(path, {})
