"""The providers of SPEC §5, one class per wire format, registered by the `provider:` name:

    openai, azure, self-hosted, litellm_proxy, rasa   worker.llm.providers.openai
    ollama (/api/generate), ollama_chat (/api/chat)   worker.llm.providers.ollama
    bedrock (Converse, SigV4)                         worker.llm.providers.bedrock
    every other provider of litellm                   worker.llm.providers.litellm_served
                                                      (the optional extra `litellm`)

`build_provider` makes the one a deployment needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.llm.model_group import Deployment
from worker.llm.providers import bedrock, ollama, openai  # noqa: F401 - registers them
from worker.llm.providers.base import (
    BuildContext,
    HttpProvider,
    HttpRequest,
    Provider,
    ProviderAnswer,
    TokenUsage,
    error_text,
    model_name,
    native_providers,
    parse_json,
    registered,
    retry_after_seconds,
)
from worker.llm.providers.litellm_served import LitellmServed

__all__ = [
    "BuildContext",
    "HttpProvider",
    "HttpRequest",
    "LitellmServed",
    "Provider",
    "ProviderAnswer",
    "TokenUsage",
    "build_provider",
    "error_text",
    "is_native",
    "model_name",
    "native_providers",
    "parse_json",
    "registered",
    "retry_after_seconds",
]


def is_native(provider: str) -> bool:
    """Spoken by the gateway itself (else served through litellm)."""
    return registered(provider) is not None


def build_provider(
    deployment: Deployment,
    params: Mapping[str, Any] | None = None,
    context: BuildContext | None = None,
) -> Provider:
    """The provider object of one deployment; ValueError when the configuration cannot work
    (a missing key or base URL, the litellm extra not installed, …)."""
    cls = registered(deployment.provider) or LitellmServed
    return cls(
        deployment,
        deployment.extra_body() if params is None else params,
        context or BuildContext(environ={}),
    )
