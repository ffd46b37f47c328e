"""Every provider's request, as the fake LLM server receives it, and its answer parsed back.

The router's defaults are those of the default Rasa release (3.11.20): merged into openai
deployments only (the parity suite covers other releases)."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from worker.config.endpoints import load_endpoints
from worker.fake_llm import FakeLLMServer
from worker.llm.errors import RequestRejected
from worker.llm.gateway import ModelGroupGateway
from worker.llm.model_group import ModelGroup

KEY = "sk-providers-test-31c0ffee"
AWS_ACCESS = "AKIDPROVIDERTEST"
AWS_SECRET = "bedrock-secret-provider-test-0001"


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(seed=2, bedrock_credentials={AWS_ACCESS: AWS_SECRET}) as server:
        yield server


async def complete_once(deployment: dict[str, Any], prompt: str = "route this") -> Any:
    g = ModelGroup.model_validate({"id": "g", "models": [deployment]})
    async with ModelGroupGateway(g, rng=random.Random(0)) as gw:
        return await gw.complete(prompt)


async def test_openai_request_and_logit_bias_on_the_wire(fake: FakeLLMServer) -> None:
    fake.script("gpt-4o-mini", answer="C")
    completion = await complete_once(
        {
            "provider": "openai",
            "model": "openai/gpt-4o-mini",
            "api_base": f"{fake.url}/v1",
            "api_key": KEY,
        }
    )
    assert (completion.text, completion.deployment) == ("C", "openai/gpt-4o-mini")
    assert completion.usage.prompt_tokens == 2 and completion.usage.completion_tokens == 1
    request = fake.requests[-1]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "gpt-4o-mini"
    assert request.body["messages"] == [{"role": "user", "content": "route this"}]
    # Rasa 3.11.20 sends gpt-3.5's ids to every openai model (a warning says how to override).
    assert request.body["logit_bias"] == {"362": 100, "426": 100, "356": 100}
    assert (request.body["temperature"], request.body["max_completion_tokens"]) == (0.0, 1)


async def test_azure_path_api_version_and_api_key(fake: FakeLLMServer) -> None:
    fake.script("gpt-35-turbo-fr", answer="A")
    completion = await complete_once(
        {
            "provider": "azure",
            "deployment": "gpt-35-turbo-fr",
            "api_base": fake.url,
            "api_version": "2024-06-01",
            "api_key": KEY,
        }
    )
    assert (completion.text, completion.deployment) == ("A", "gpt-35-turbo-fr")
    request = fake.requests[-1]
    assert request.path == (
        "/openai/deployments/gpt-35-turbo-fr/chat/completions?api-version=2024-06-01"
    )
    assert request.headers["api-key"] == KEY
    assert "authorization" not in request.headers
    # Not an openai deployment: Rasa merges none of its defaults.
    assert request.body == {"messages": [{"role": "user", "content": "route this"}]}


async def test_self_hosted_text_completions(fake: FakeLLMServer) -> None:
    fake.script("mistral-7b", answer=" B")
    completion = await complete_once(
        {
            "provider": "self-hosted",
            "model": "mistral-7b",
            "api_base": f"{fake.url}/v1",
            "use_chat_completions_endpoint": False,
        }
    )
    assert completion.text == " B"
    request = fake.requests[-1]
    assert request.path == "/v1/completions"
    assert request.body["prompt"] == "route this"
    assert "messages" not in request.body and "logit_bias" not in request.body


@pytest.mark.parametrize("provider", ["self-hosted", "litellm_proxy", "rasa"])
async def test_openai_compatible_chat(fake: FakeLLMServer, provider: str) -> None:
    fake.script("served-model", answer="A")
    completion = await complete_once(
        {
            "provider": provider,
            "model": "served-model",
            "api_base": f"{fake.url}/v1",
            "api_key": KEY,  # for rasa: the license, put there by worker.config.model_config
        }
    )
    assert completion.text == "A"
    assert fake.requests[-1].path == "/v1/chat/completions"
    assert fake.requests[-1].headers["authorization"] == f"Bearer {KEY}"


async def test_ollama_chat_non_streaming(fake: FakeLLMServer) -> None:
    fake.script("llama3.1", answer="C")
    completion = await complete_once(
        {
            "provider": "ollama_chat",
            "model": "ollama_chat/llama3.1",
            "api_base": fake.url,
            "num_ctx": 2048,
        }
    )
    assert completion.text == "C"
    assert completion.usage.total_tokens == 3
    request = fake.requests[-1]
    assert request.path == "/api/chat"
    assert request.body["stream"] is False
    assert request.body["options"] == {"num_ctx": 2048}


async def test_ollama_generate(fake: FakeLLMServer) -> None:
    # `provider: ollama` as litellm calls it for Rasa: /api/generate with its prompt template
    fake.script("llama3", answer="B")
    completion = await complete_once(
        {"provider": "ollama", "model": "llama3", "api_base": fake.url}
    )
    assert completion.text == "B"
    assert fake.requests[-1].path == "/api/generate"
    assert fake.requests[-1].body["prompt"] == "### User:\nroute this\n\n"


async def test_bedrock_signature_is_accepted(fake: FakeLLMServer) -> None:
    model_id = "anthropic.claude-3-haiku-20240307-v1:0"  # ':' must be encoded and signed right
    fake.script(model_id, answer="A")
    completion = await complete_once(
        {
            "provider": "bedrock",
            "model": f"bedrock/{model_id}",
            "api_base": fake.url,
            "aws_access_key_id": AWS_ACCESS,
            "aws_secret_access_key": AWS_SECRET,
            "aws_region_name": "eu-west-1",
            "top_k": 3,
        }
    )
    assert (completion.text, completion.usage.prompt_tokens) == ("A", 2)
    request = fake.requests[-1]
    assert request.deployment == model_id
    assert "inferenceConfig" not in request.body
    assert request.body["additionalModelRequestFields"] == {"top_k": 3}


async def test_bedrock_credentials_from_the_environment(
    fake: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    fake.script("amazon.nova-lite-v1:0", answer="B")
    completion = await complete_once(
        {"provider": "bedrock", "model": "amazon.nova-lite-v1:0", "api_base": fake.url}
    )
    assert completion.text == "B"


async def test_bedrock_wrong_secret_is_refused_not_retried(fake: FakeLLMServer) -> None:
    with pytest.raises(RequestRejected) as raised:
        await complete_once(
            {
                "provider": "bedrock",
                "model": "amazon.nova-lite-v1:0",
                "api_base": fake.url,
                "aws_access_key_id": AWS_ACCESS,
                "aws_secret_access_key": "not-the-secret",
                "aws_region_name": "us-east-1",
            }
        )
    assert raised.value.attempts == 1
    assert "HTTP 403" in str(raised.value)
    assert "not-the-secret" not in str(raised.value)


async def test_unknown_keys_reach_the_body(fake: FakeLLMServer) -> None:
    await complete_once(
        {
            "provider": "openai",
            "model": "gpt-4",
            "api_base": f"{fake.url}/v1",
            "api_key": KEY,
            "seed": 7,
            "temperature": 0.2,
            "logit_bias": {"1": 5},
            "response_format": {"type": "text"},
        }
    )
    body = fake.requests[-1].body
    assert body["seed"] == 7
    assert body["response_format"] == {"type": "text"}
    assert body["temperature"] == 0.2  # the deployment's own keys override the router's
    assert body["logit_bias"] == {"1": 5}
    assert body["max_completion_tokens"] == 1


async def test_rasa_sends_its_bias_to_any_openai_model(fake: FakeLLMServer) -> None:
    await complete_once(
        {"provider": "openai", "model": "o3-mini", "api_base": f"{fake.url}/v1", "api_key": KEY}
    )
    assert fake.requests[-1].body["logit_bias"] == {"362": 100, "426": 100, "356": 100}


async def test_openai_api_base_and_key_from_the_environment_are_honoured(
    fake: FakeLLMServer, tmp_path: Path
) -> None:
    # rasa/shared/providers/llm/openai_llm_client.py (standalone: OPENAI_API_BASE) and litellm
    # 1.69.3 litellm/main.py (routed: OPENAI_BASE_URL, then OPENAI_API_BASE): the prompt and
    # the key go to the user's gateway, never to api.openai.com.
    path = tmp_path / "endpoints.yml"
    path.write_text(
        "model_groups:\n"
        "  - id: standalone\n    models:\n      - {provider: openai, model: env-standalone}\n"
        "  - id: routed\n    models:\n      - {provider: openai, model: env-routed}\n"
        "    router: {routing_strategy: simple-shuffle}\n"
    )
    environ = {"OPENAI_API_BASE": f"{fake.url}/v1", "OPENAI_API_KEY": KEY}
    groups = load_endpoints(path, environ).model_groups
    for group_id in ("standalone", "routed"):
        async with ModelGroupGateway(groups[group_id], environ=environ) as gateway:
            assert (await gateway.complete("hi")).text == "A"
    assert [(r.deployment, r.headers["authorization"]) for r in fake.requests] == [
        ("env-standalone", f"Bearer {KEY}"),
        ("env-routed", f"Bearer {KEY}"),
    ]


async def test_a_key_from_the_environment_never_reaches_logs_or_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A deployment that echoes the key it got (some providers quote part of it back).
    caplog.set_level(logging.DEBUG)

    async def echo(request: web.Request) -> web.Response:
        said = request.headers.get("Authorization", "")
        return web.json_response({"error": {"message": f"bad key {said}"}}, status=401)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    secret = "env-secret-value-0123456789"
    group = ModelGroup.model_validate(
        {
            "id": "g",
            "models": [
                {"provider": "openai", "model": "m", "api_base": f"http://127.0.0.1:{port}/v1"}
            ],
        }
    )
    try:
        async with ModelGroupGateway(group, environ={"OPENAI_API_KEY": secret}) as gateway:
            with pytest.raises(RequestRejected) as raised:
                await gateway.complete("hi")
    finally:
        await runner.cleanup()
    assert "bad key" in str(raised.value)
    assert secret not in str(raised.value) and secret not in caplog.text
