"""The LLMBasedRouter's request parameters per Rasa release: defaults merged into openai
deployments only (shared/utils/llm.py _combine_single_model_configs), user keys over them, the
token-limit alias renamed where the model is read (shared/providers/_configs/
openai_client_config.py, worker.config.model_config), and from 3.16 the
reasoning effort by model family (_apply_default_reasoning_effort)."""

from __future__ import annotations

from typing import Any

import pytest

from worker.config.endpoints_rules import rules_for
from worker.config.model_config import ModelReading, read_model
from worker.llm.model_group import Deployment
from worker.llm.router_defaults import bias_mismatch, router_params, token_ids_for
from worker.rasa.releases import CL100K_ABC, O200K_ABC, RouterLlmDefaults, rasa_version

V3_11_0 = rasa_version("3.11.0").behaviour.llm
V3_11_20 = rasa_version("3.11.20").behaviour.llm
V3_13 = rasa_version("3.13").behaviour.llm
V3_21 = rasa_version("3.21.0").behaviour.llm
CL100K_BIAS = {"362": 100, "426": 100, "356": 100}
O200K_BIAS = {"355": 100, "418": 100, "363": 100}


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


def deployment(**keys: Any) -> Deployment:
    return Deployment.model_validate(keys)


def params(llm: RouterLlmDefaults, **keys: Any) -> dict[str, Any]:
    return router_params(deployment(**keys), llm)


def test_3_11_0_sends_max_tokens() -> None:
    assert params(V3_11_0, provider="openai", model="gpt-3.5-turbo") == {
        "temperature": 0.0,
        "max_tokens": 1,
        "logit_bias": CL100K_BIAS,
    }


def test_3_11_20_sends_max_completion_tokens_and_the_same_bias_to_every_openai_model() -> None:
    for model in ("gpt-3.5-turbo", "gpt-4o-mini", "gpt-4o"):
        assert params(V3_11_20, provider="openai", model=model) == {
            "temperature": 0.0,
            "max_completion_tokens": 1,
            "logit_bias": CL100K_BIAS,
        }


def test_3_13_biases_the_gpt_4o_tokens() -> None:
    assert params(V3_13, provider="openai", model="gpt-4o-mini")["logit_bias"] == O200K_BIAS


@pytest.mark.parametrize(
    "keys",
    [
        {"provider": "azure", "deployment": "gpt-4o-mini-fr", "api_base": "http://a"},
        {"provider": "self-hosted", "model": "gpt-4o", "api_base": "http://x"},
        {"provider": "litellm_proxy", "model": "gpt-4o", "api_base": "http://x"},
        {"provider": "rasa", "model": "gpt-4o", "api_base": "http://x"},
        {"provider": "ollama", "model": "llama3.1"},
        {"provider": "bedrock", "model": "anthropic.claude-3-haiku"},
    ],
)
@pytest.mark.parametrize("llm", [V3_11_0, V3_11_20, V3_13, V3_21])
def test_other_providers_send_only_what_the_user_wrote(
    keys: dict[str, Any], llm: RouterLlmDefaults
) -> None:
    assert params(llm, **keys) == {}
    assert params(llm, **keys, temperature=0.2, top_p=0.5) == {"temperature": 0.2, "top_p": 0.5}


def test_user_keys_override_the_defaults() -> None:
    got = params(V3_11_20, provider="openai", model="gpt-4o-mini", temperature=0.3, logit_bias={})
    assert got == {"temperature": 0.3, "max_completion_tokens": 1, "logit_bias": {}}


def read_params(version: str, **keys: Any) -> dict[str, Any]:
    """The parameters of a model of endpoints.yml as release `version` reads it (its deprecated
    keys renamed by the release's endpoints rules, worker.config.model_config)."""
    rasa = rasa_version(version)
    problems: list[str] = []
    reading = ModelReading(
        "endpoints.yml", "models[0]", "g", True, rules_for(rasa.release), {}, problems, []
    )
    model = read_model(keys, reading)
    assert model is not None, problems
    return router_params(Deployment.model_validate(model), rasa.behaviour.llm)


def test_max_tokens_written_by_the_user_is_renamed_where_rasa_renames_it() -> None:
    got = read_params("3.11.20", provider="openai", model="gpt-4o", max_tokens=5)
    assert got == {"temperature": 0.0, "max_completion_tokens": 5, "logit_bias": CL100K_BIAS}
    azure = read_params(
        "3.11.20", provider="azure", deployment="d", api_base="http://a", max_tokens=5
    )
    assert azure == {"max_completion_tokens": 5}
    # 3.11.0 has no such alias: the user's key goes as written, and so does the default's.
    old = read_params("3.11.0", provider="openai", model="gpt-4o", max_tokens=5)
    assert old == {"temperature": 0.0, "max_tokens": 5, "logit_bias": CL100K_BIAS}


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"provider": "openai", "model": "gpt-5-mini-2025-08-07"},
         {"temperature": 1.0, "reasoning_effort": "minimal"}),
        ({"provider": "openai", "model": "gpt-5.1-2025-11-13"},
         {"temperature": 1.0, "reasoning_effort": "none"}),
        ({"provider": "openai", "model": "gpt-5-pro"},
         {"temperature": 1.0, "reasoning_effort": "high"}),
        # Not a reasoning model: Rasa drops its default effort, the temperature stays.
        ({"provider": "openai", "model": "gpt-4o-mini"}, {"temperature": 1.0}),
        ({"provider": "openai", "model": "gpt-5-chat-latest"}, {"temperature": 1.0}),
        # Azure gets no defaults, but the effort of a model it names.
        ({"provider": "azure", "deployment": "d", "api_base": "http://a", "model": "gpt-5-nano"},
         {"reasoning_effort": "minimal"}),
        ({"provider": "azure", "deployment": "gpt-5-mini", "api_base": "http://a"}, {}),
        ({"provider": "self-hosted", "model": "gpt-5-mini", "api_base": "http://x"}, {}),
        # The user's effort is kept, on any model.
        ({"provider": "openai", "model": "gpt-4o", "reasoning_effort": "low"},
         {"temperature": 1.0, "reasoning_effort": "low"}),
    ],
)  # fmt: skip
def test_3_16_and_later_pick_the_reasoning_effort_by_model(
    keys: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert params(V3_21, **keys) == expected


def test_bias_of_another_tokenizer_is_warned_with_the_override() -> None:
    message = bias_mismatch(deployment(provider="openai", model="gpt-4o-mini"), V3_11_20)
    assert message == (
        "Rasa sends its default logit_bias ids 362/426/356 (cl100k ' A'/' B'/' C') to "
        "gpt-4o-mini, whose tokenizer (o200k) has other ids for them; the worker sends the "
        'same. Override it on the model: logit_bias: {"355": 100, "418": 100, "363": 100}'
    )
    assert "362" in (bias_mismatch(deployment(provider="openai", model="gpt-4"), V3_13) or "")


@pytest.mark.parametrize(
    ("keys", "llm"),
    [
        ({"provider": "openai", "model": "gpt-3.5-turbo"}, V3_11_20),
        ({"provider": "openai", "model": "gpt-4o"}, V3_13),
        ({"provider": "openai", "model": "gpt-4o-mini", "logit_bias": O200K_BIAS}, V3_11_20),
        ({"provider": "openai", "model": "my-fine-tune"}, V3_11_20),  # tokenizer unknown
        ({"provider": "azure", "deployment": "gpt-4o", "api_base": "http://a"}, V3_11_20),
        ({"provider": "openai", "model": "gpt-4o"}, V3_21),  # no bias at all
    ],
)
def test_no_warning_where_the_bias_fits_or_is_not_sent(
    keys: dict[str, Any], llm: RouterLlmDefaults
) -> None:
    assert bias_mismatch(deployment(**keys), llm) is None
