"""The LLMBasedRouter's request parameters (SPEC §4): the deployment's own keys over the
selected Rasa release's DEFAULT_LLM_CONFIG, merged only where that release merges it.

Rasa (shared/utils/llm.py _combine_single_model_configs) merges the router's defaults into a
model only when the model's provider is the default's (`openai`); every other deployment sends
only what the user wrote. From 3.16 every model gets the default reasoning effort of its model
family, or none. The user's deprecated keys (`max_tokens` -> `max_completion_tokens` where the
release renames it) are renamed once, where the model is read (worker.config.model_config).

The timeout is not a body parameter: the gateway waits the deployment's `timeout`, the router's,
else the release's default (7 s) for every provider. (Under Rasa a non-openai deployment without
its own timeout waits litellm's default request_timeout, 6000 s; the worker does not copy that.)

Token ids are facts of OpenAI's tokenizers: Rasa sends the ids of its release whatever the
model, also where they encode other tokens; `bias_mismatch` says so, for a warning.
"""

from __future__ import annotations

from typing import Any

from worker.llm.model_group import Deployment
from worker.llm.providers import model_name
from worker.rasa.releases import CL100K_ABC, DEFAULT_BEHAVIOUR, O200K_ABC, RouterLlmDefaults

LOGIT_BIAS_VALUE = 100
ROUTER_TIMEOUT = DEFAULT_BEHAVIOUR.llm.timeout

_TOKENIZERS: dict[tuple[int, ...], str] = {CL100K_ABC: "cl100k", O200K_ABC: "o200k"}
# Reasoning models (o1, o3, o4-mini, gpt-5…) share o200k but reject logit_bias.
_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5")
_CL100K_PREFIXES = ("gpt-3.5", "gpt-35", "gpt-4")  # gpt-35-turbo is Azure's spelling
_EFFORT_PROVIDERS = frozenset({"openai", "azure"})


def token_ids_for(model: str | None) -> tuple[int, int, int] | None:
    """The ids of " A"/" B"/" C" for a known OpenAI model name, else None."""
    if not model:
        return None
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(_O200K_PREFIXES):
        return O200K_ABC
    if name.startswith(_CL100K_PREFIXES):
        return CL100K_ABC
    return None


def tokenizer_model(deployment: Deployment) -> str | None:
    """The model whose tokenizer decides the bias: openai's model; azure's `model` key if given,
    else the deployment name (Azure deployments are usually named after their model)."""
    if deployment.provider == "openai":
        return model_name(deployment)
    if deployment.provider == "azure":
        return model_name(deployment) or deployment.deployment
    return None


def default_reasoning_effort(deployment: Deployment, llm: RouterLlmDefaults) -> str | None:
    """The effort Rasa 3.16+ gives a model it knows the family of (openai, and azure with a
    `model`), the first prefix of the release's table that matches; None for the rest."""
    if deployment.provider not in _EFFORT_PROVIDERS:
        return None
    model = model_name(deployment)
    if not model:
        return None  # a deployment-only azure model
    name = model.lower()
    for prefix, effort in llm.effort_by_model:
        if name.startswith(prefix):
            return effort
    return None


def router_params(
    deployment: Deployment, llm: RouterLlmDefaults = DEFAULT_BEHAVIOUR.llm
) -> dict[str, Any]:
    """Every body parameter of the router's request to `deployment` (beside model and
    prompt): the release's defaults where it merges them, under the deployment's own keys."""
    own = deployment.extra_body()  # its deprecated keys already renamed, as the release reads it
    params: dict[str, Any] = {}
    if deployment.provider in llm.merged_into:
        params["temperature"] = llm.temperature
        if llm.token_limit_key is not None:
            params[llm.token_limit_key] = llm.token_limit
        if llm.logit_bias_ids:
            params["logit_bias"] = {str(token): LOGIT_BIAS_VALUE for token in llm.logit_bias_ids}
        if llm.reasoning_effort is not None:
            params["reasoning_effort"] = llm.reasoning_effort
    params.update(own)
    if llm.effort_by_model and "reasoning_effort" not in own:
        effort = default_reasoning_effort(deployment, llm)
        if effort is None:
            params.pop("reasoning_effort", None)
        else:
            params["reasoning_effort"] = effort
    return params


def bias_mismatch(deployment: Deployment, llm: RouterLlmDefaults) -> str | None:
    """A warning when Rasa's default logit_bias goes to a model whose tokenizer has other ids
    for " A"/" B"/" C" (it boosts unrelated tokens), saying how to override it."""
    if deployment.provider not in llm.merged_into or not llm.logit_bias_ids:
        return None
    if "logit_bias" in deployment.extra_body():
        return None
    model = tokenizer_model(deployment)
    right = token_ids_for(model)
    if right is None or right == llm.logit_bias_ids:
        return None
    sent = _TOKENIZERS.get(llm.logit_bias_ids, "another tokenizer's")
    ids = ", ".join(f'"{token}": {LOGIT_BIAS_VALUE}' for token in right)
    return (
        f"Rasa sends its default logit_bias ids {'/'.join(map(str, llm.logit_bias_ids))} "
        f"({sent} ' A'/' B'/' C') to {model}, whose tokenizer ({_TOKENIZERS[right]}) has other "
        f"ids for them; the worker sends the same. Override it on the model: "
        f"logit_bias: {{{ids}}}"
    )
