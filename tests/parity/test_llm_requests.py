"""The LLMBasedRouter's request as each Rasa release sends it, per provider, recorded by the
fake LLM over loopback HTTP: the worker's own service (config files -> gateways -> router).

Read from dialogue_understanding/coexistence/llm_based_router.py (DEFAULT_LLM_CONFIG,
render_template, _generate_answer_using_llm), shared/utils/llm.py (llm_factory,
_combine_single_model_configs, _apply_default_reasoning_effort), shared/providers/llm/
_base_litellm_client.py (one user message; the timeout goes to litellm, not into the body) and
core/channels/channel.py (UserMessage strips the text), of 3.11.0, 3.11.20 and 3.21.0.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.parity.assistant import load_assistant, message
from tests.parity.test_release_table import TEMPLATE_3_11, TEMPLATE_3_16
from worker.config.app_config import AppConfig
from worker.fake_llm import FakeLLMServer
from worker.service import RouterService

KEY = "sk-parity-llm-requests"
ENVIRON = {"LLM_KEY": KEY, "OPENAI_API_KEY": KEY}
CALM = "handles money transfers"
LLM_CONFIG = """
pipeline:
  - name: LLMBasedRouter
    calm_entry:
      sticky: handles money transfers
    llm:
      model_group: router-llm
"""
CL100K_BIAS = {"362": 100, "426": 100, "356": 100}


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


def endpoints(model: dict[str, Any]) -> str:
    return json.dumps({"model_groups": [{"id": "router-llm", "models": [model]}]})


def prompt(template: str, said: str) -> str:
    return (
        template.replace("{{ calm_entry_sticky }}", CALM)
        .replace("{{ nlu_entry_non_sticky }}", "handles chitchat")
        .replace("{{ nlu_entry_sticky }}", "handles everything else")
        .replace("{{ user_message }}", said)
    )


async def request_of(
    app: AppConfig, llm: FakeLLMServer, text: str, environ: dict[str, str] | None = None
) -> dict[str, Any]:
    service = RouterService(app, environ or {})
    try:
        decision = await service.router.decide(None, message(text))
    finally:
        await service.router.close()
        assert service.gateways is not None
        await service.gateways.close()
    assert decision.llm is not None and decision.llm.attempts == 1
    return llm.requests[-1].body


def openai(llm: FakeLLMServer, model: str, **keys: Any) -> dict[str, Any]:
    llm.script(model, answer="A")
    return {
        "provider": "openai",
        "model": model,
        "api_base": f"{llm.url}/v1",
        "api_key": "${LLM_KEY}",
        **keys,
    }


def chat(content: str, **params: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **params}


@pytest.mark.parametrize(
    ("version", "model", "params"),
    [
        ("3.11.0", "gpt-3.5-turbo",
         {"temperature": 0.0, "max_tokens": 1, "logit_bias": CL100K_BIAS}),
        ("3.11.20", "gpt-3.5-turbo",
         {"temperature": 0.0, "max_completion_tokens": 1, "logit_bias": CL100K_BIAS}),
        # Rasa sends gpt-3.5's ids to a gpt-4o model too (validate warns how to override them).
        ("3.11.20", "gpt-4o-mini",
         {"temperature": 0.0, "max_completion_tokens": 1, "logit_bias": CL100K_BIAS}),
        ("3.21.0", "gpt-5-mini-2025-08-07", {"temperature": 1.0, "reasoning_effort": "minimal"}),
        ("3.21.0", "gpt-4o-mini", {"temperature": 1.0}),
    ],
)  # fmt: skip
async def test_openai_deployments_get_the_release_defaults(
    llm: FakeLLMServer, tmp_path: Path, version: str, model: str, params: dict[str, Any]
) -> None:
    app = load_assistant(
        tmp_path, version, config=LLM_CONFIG, flows=None, domain=None, environ=ENVIRON,
        endpoints=endpoints(openai(llm, model)),
    )  # fmt: skip
    template = TEMPLATE_3_16 if version == "3.21.0" else TEMPLATE_3_11
    body = await request_of(app, llm, "  I want to send money \n")
    # Rasa strips the text (UserMessage) before it renders the template.
    assert body == {"model": model, **chat(prompt(template, "I want to send money"), **params)}


@pytest.mark.parametrize("version", ["3.11.0", "3.11.20", "3.21.0"])
async def test_other_providers_send_only_what_the_user_wrote(
    llm: FakeLLMServer, tmp_path: Path, version: str
) -> None:
    template = TEMPLATE_3_16 if version == "3.21.0" else TEMPLATE_3_11
    said = prompt(template, "hello")
    llm.script("router-eu", answer="B")
    azure = {
        "provider": "azure",
        "deployment": "router-eu",
        "api_base": llm.url,
        "api_version": "2024-06-01",
        "api_key": "${LLM_KEY}",
        "temperature": 0.1,
    }
    app = load_assistant(
        tmp_path / "azure", version, config=LLM_CONFIG, flows=None, domain=None, environ=ENVIRON,
        endpoints=endpoints(azure),
    )  # fmt: skip
    assert await request_of(app, llm, "hello") == chat(said, temperature=0.1)
    llm.script("served", answer="C")
    hosted = {"provider": "self-hosted", "model": "served", "api_base": f"{llm.url}/v1"}
    app = load_assistant(
        tmp_path / "hosted", version, config=LLM_CONFIG, flows=None, domain=None, environ=ENVIRON,
        endpoints=endpoints(hosted),
    )  # fmt: skip
    assert await request_of(app, llm, "hello") == {"model": "served", **chat(said)}


@pytest.mark.parametrize(
    ("version", "model"),
    [
        ("3.11.0", "gpt-3.5-turbo"),
        ("3.11.20", "gpt-3.5-turbo"),
        ("3.21.0", "gpt-5-mini-2025-08-07"),
    ],
)
async def test_an_inline_llm_without_a_model_uses_the_release_default_model(
    llm: FakeLLMServer, tmp_path: Path, version: str, model: str
) -> None:
    llm.script(model, answer="A")
    # No api_key: Rasa refuses a secret in config.yml (engine/validation.py
    # validate_model_client_configuration_setup_during_training_time); it is OPENAI_API_KEY.
    config = LLM_CONFIG.replace(
        "      model_group: router-llm", f"      provider: openai\n      api_base: {llm.url}/v1"
    )
    with pytest.warns(DeprecationWarning):
        app = load_assistant(
            tmp_path, version, config=config, flows=None, domain=None, environ=ENVIRON,
        )  # fmt: skip
    body = await request_of(app, llm, "hi")
    assert body["model"] == model


async def test_slash_text_reaches_the_llm_without_its_slash(
    llm: FakeLLMServer, tmp_path: Path
) -> None:
    # core/processor.py _sanitize_message: `/help_me` names no intent of the domain, so the
    # router renders the text `help_me`.
    from tests.parity.assistant import DOMAIN, FLOWS

    app = load_assistant(
        tmp_path, "3.11.20", config=LLM_CONFIG, flows=FLOWS, domain=DOMAIN, environ=ENVIRON,
        endpoints=endpoints(openai(llm, "gpt-3.5-turbo")),
    )  # fmt: skip
    body = await request_of(app, llm, "/help_me")
    assert body["messages"][0]["content"] == prompt(TEMPLATE_3_11, "help_me")


async def test_the_prompt_template_key_each_release_reads(
    llm: FakeLLMServer, tmp_path: Path
) -> None:
    (tmp_path / "router.jinja2").write_text("\nRoute: {{ user_message }}\n\n")
    config = LLM_CONFIG + f"    prompt_template: {tmp_path / 'router.jinja2'}\n"
    model = openai(llm, "gpt-4o-2024-11-20")
    for version, content in (
        ("3.11.20", prompt(TEMPLATE_3_11, "hi")),  # 3.11 and 3.12 do not read prompt_template
        ("3.13.0", "Route: hi"),
    ):
        app = load_assistant(
            tmp_path / version, version, config=config, flows=None, domain=None,
            environ=ENVIRON, endpoints=endpoints(model),
        )  # fmt: skip
        body = await request_of(app, llm, "hi")
        assert body["messages"][0]["content"] == content
