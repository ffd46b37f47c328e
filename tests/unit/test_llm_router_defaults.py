"""The LLMBasedRouter's request defaults: logit_bias only where the tokenizer is known."""

from __future__ import annotations

from typing import Any

import pytest

from worker.llm.model_group import Deployment
from worker.llm.router_defaults import CL100K_ABC, O200K_ABC, router_params, token_ids_for


@pytest.mark.parametrize(
    ("model", "ids"),
    [
        ("gpt-3.5-turbo", CL100K_ABC),
        ("gpt-3.5-turbo-0125", CL100K_ABC),
        ("gpt-35-turbo", CL100K_ABC),
        ("gpt-4", CL100K_ABC),
        ("gpt-4-0613", CL100K_ABC),
        ("gpt-4-turbo-2024-04-09", CL100K_ABC),
        ("gpt-4-32k", CL100K_ABC),
        ("gpt-4o", O200K_ABC),
        ("gpt-4o-mini", O200K_ABC),
        ("gpt-4o-2024-08-06", O200K_ABC),
        ("chatgpt-4o-latest", O200K_ABC),
        ("gpt-4.1-mini", O200K_ABC),
        ("GPT-4O-MINI", O200K_ABC),
        ("o1-mini", None),
        ("o3", None),
        ("gpt-5", None),
        ("claude-3-haiku", None),
        ("llama3", None),
        (None, None),
    ],
)
def test_token_ids_for(model: str | None, ids: tuple[int, ...] | None) -> None:
    assert token_ids_for(model) == ids


def params(**keys: Any) -> dict[str, Any]:
    return router_params(Deployment.model_validate(keys))


def test_defaults_are_rasas() -> None:
    got = params(provider="openai", model="gpt-3.5-turbo")
    assert got == {
        "temperature": 0.0,
        "max_tokens": 1,
        "logit_bias": {"362": 100, "426": 100, "356": 100},
    }


def test_azure_uses_model_key_then_deployment_name() -> None:
    assert params(provider="azure", deployment="router-prod", model="gpt-4o")["logit_bias"] == {
        "355": 100,
        "418": 100,
        "363": 100,
    }
    assert params(provider="azure", deployment="gpt-35-turbo-fr")["logit_bias"] == {
        "362": 100,
        "426": 100,
        "356": 100,
    }
    assert "logit_bias" not in params(provider="azure", deployment="router-prod")


def test_no_bias_for_providers_with_unknown_tokenizers() -> None:
    # Even a gpt-4o name behind a proxy or a self-hosted server may be any model.
    for provider in ("self-hosted", "litellm_proxy", "rasa", "ollama", "bedrock"):
        got = params(provider=provider, model="gpt-4o", api_base="http://x")
        assert "logit_bias" not in got
        assert got["max_tokens"] == 1 and got["temperature"] == 0.0
