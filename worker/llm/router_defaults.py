"""The LLMBasedRouter's request defaults (SPEC §4, Rasa parity): one greedy token, biased to A/B/C.

Rasa boosts the tokens " A", " B", " C" with `logit_bias` `{str(token_id): 100}`. Token ids depend
on the tokenizer, so the bias is only sent to models whose tokenizer is known: biasing the same ids
on another model would boost unrelated tokens (Rasa's own docs warn about exactly that).
"""

from __future__ import annotations

from typing import Any

from worker.llm.model_group import Deployment
from worker.llm.providers import model_name

ROUTER_TEMPERATURE = 0.0
ROUTER_MAX_TOKENS = 1
ROUTER_TIMEOUT = 7.0
LOGIT_BIAS_VALUE = 100

# " A", " B", " C"
CL100K_ABC = (362, 426, 356)  # gpt-3.5-turbo, gpt-4, gpt-4-turbo
O200K_ABC = (355, 418, 363)  # gpt-4o, gpt-4o-mini, gpt-4.1, gpt-4.5

# Reasoning models (o1, o3, o4-mini, gpt-5…) share o200k but reject logit_bias/temperature,
# so they are deliberately absent.
_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5")
_CL100K_PREFIXES = ("gpt-3.5", "gpt-35", "gpt-4")  # gpt-35-turbo is Azure's spelling


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


def router_params(deployment: Deployment) -> dict[str, Any]:
    """Every body parameter of the router's request to `deployment`: these defaults under the
    deployment's own keys."""
    params: dict[str, Any] = {"temperature": ROUTER_TEMPERATURE}
    if "max_completion_tokens" not in deployment.extra_body():  # Rasa's alias of max_tokens
        params["max_tokens"] = ROUTER_MAX_TOKENS
    ids = token_ids_for(tokenizer_model(deployment))
    if ids is not None:
        params["logit_bias"] = {str(token): LOGIT_BIAS_VALUE for token in ids}
    params.update(deployment.extra_body())
    return params
