"""Every provider Rasa reaches through litellm that the gateway does not speak itself
(`anthropic`, `gemini`, `vertex_ai`, `mistral`, `groq`, `huggingface`, …), served by litellm —
the optional extra `litellm` — for those deployments only.

litellm is one attempt on one deployment here: `acompletion` with the deployment's own keys
(model `<provider>/<model>` as Rasa prefixes it, shared/providers/_configs/
litellm_router_client_config.py), the attempt's timeout, and no retries of its own
(`num_retries: 0`, `max_retries: 0`); balancing, cooldowns, retries, fallbacks and accounting
stay the gateway's. litellm reads the provider's own environment variables (ANTHROPIC_API_KEY,
GEMINI_API_KEY, …) for what a deployment does not name: the gateway's redactor knows the value
of every credential variable of the environment (worker.llm.redaction.environment_secrets).
Its failures become the gateway's (AttemptError by HTTP status, as litellm classifies them); its
own logging is kept at WARNING, so that no request detail reaches the logs.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from worker.llm.errors import AttemptError, ErrorKind, kind_of_status
from worker.llm.model_group import LITELLM_PARAMS, Deployment
from worker.llm.providers.base import (
    BuildContext,
    Provider,
    ProviderAnswer,
    retry_after_seconds,
)
from worker.llm.redaction import environment_secrets

EXTRA = "litellm"
_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm")
# Deployment keys litellm takes as call arguments (credentials and endpoints of its providers).
_PASSED = ("api_base", "api_version", "aws_region_name")
_SECRETS = ("api_key", "aws_access_key_id", "aws_secret_access_key", "aws_session_token")
# What the gateway does itself, never handed to litellm.
_GATEWAY_KEYS = frozenset(
    {
        "rpm", "tpm", "weight", "input_cost_per_token", "output_cost_per_token",
        "cooldown_time", "num_retries", "max_retries", "timeout", "request_timeout",
    }
)  # fmt: skip

_module: ModuleType | None = None


def litellm_missing() -> str:
    return (
        "is served through litellm, which is not installed: "
        f"pip install 'coexistence-router[{EXTRA}]'"
    )


def load_litellm() -> ModuleType | None:
    """litellm, imported once and quietened; None when the extra is not installed."""
    global _module
    if _module is None:
        # litellm downloads its price map at import unless told to read its own copy: no
        # network traffic but the deployments'.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_TELEMETRY", "False")
        try:
            module = importlib.import_module("litellm")
        except ImportError:
            return None
        for setting, value in (
            ("telemetry", False),
            ("suppress_debug_info", True),  # no "Give Feedback" banner on stdout per error
            ("turn_off_message_logging", True),
        ):
            setattr(module, setting, value)
        for name in _LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        _module = module
    return _module


def litellm_model(provider: str, model: str) -> str:
    """Rasa's prefixing: `<provider>/<model>` unless `<provider>/` is already in the name."""
    return model if f"{provider}/" in model else f"{provider}/{model}"


class LitellmServed(Provider):
    """A deployment of a provider litellm serves (not registered by name: the fallback)."""

    http = False

    def __init__(
        self, deployment: Deployment, params: Mapping[str, Any], context: BuildContext
    ) -> None:
        super().__init__(deployment, params, context)
        provider = deployment.provider
        litellm = load_litellm()
        if litellm is None:
            raise ValueError(f"provider {provider} (deployment {self.name!r}) {litellm_missing()}")
        known = {str(getattr(p, "value", p)) for p in litellm.provider_list}
        if provider not in known:
            raise ValueError(
                f"provider {provider} (deployment {self.name!r}) is not a provider of litellm "
                "(the call would fail with 'LLM Provider NOT provided')"
            )
        self._litellm = litellm
        self._model = litellm_model(provider, self.model or "")
        self.chat = deployment.use_chat_completions_endpoint
        kwargs: dict[str, Any] = {
            key: value for key, value in params.items() if key not in _GATEWAY_KEYS
        }
        for key in _PASSED:
            value = getattr(deployment, key)
            if value is not None:
                kwargs[key] = value
        for key in _SECRETS:
            secret = getattr(deployment, key)
            if secret is not None:
                kwargs[key] = secret.get_secret_value()
        extra = deployment.model_extra or {}
        for key, value in extra.items():  # litellm's own parameters of this provider
            if key in LITELLM_PARAMS and key not in _GATEWAY_KEYS and key not in kwargs:
                kwargs[key] = value
        headers = deployment.http_headers()
        if headers:
            kwargs["extra_headers"] = headers
        kwargs["num_retries"] = 0
        kwargs["max_retries"] = 0
        self._kwargs = kwargs
        # litellm reads the process environment (os.environ), whatever the gateway was given.
        self._environment_secrets = [
            *environment_secrets(os.environ),
            *environment_secrets(context.environ),
        ]

    def __repr__(self) -> str:
        return f"LitellmServed({self._model!r})"

    @property
    def secrets(self) -> list[str]:
        return [*super().secrets, *self._environment_secrets]

    async def complete(self, prompt: str, timeout: float) -> ProviderAnswer:
        """One attempt; AttemptError when it fails (never litellm's own exceptions)."""
        litellm = self._litellm
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                if self.chat:
                    response = await litellm.acompletion(
                        model=self._model,
                        messages=[{"role": "user", "content": prompt}],
                        timeout=timeout,
                        **self._kwargs,
                    )
                else:
                    response = await litellm.atext_completion(
                        model=self._model, prompt=prompt, timeout=timeout, **self._kwargs
                    )
        except TimeoutError:
            raise AttemptError(
                f"timeout after {timeout:g} s",
                kind=ErrorKind.TIMEOUT,
                elapsed=time.monotonic() - started,
                timed_out=True,
            ) from None
        except Exception as exc:  # noqa: BLE001 - litellm's exceptions, whatever their class
            raise self._attempt_error(exc, time.monotonic() - started) from None
        return self._answer(response)

    def _attempt_error(self, exc: Exception, elapsed: float) -> AttemptError:
        status = getattr(exc, "status_code", None)
        kind_name = type(exc).__name__
        if kind_name in ("Timeout", "APITimeoutError"):
            kind, status = ErrorKind.TIMEOUT, None
        elif kind_name == "APIConnectionError":
            kind, status = ErrorKind.CONNECTION, None
        elif isinstance(status, int):
            kind = kind_of_status(status)
        else:
            kind, status = ErrorKind.API_ERROR, None
        # The first line, whole: the gateway redacts it, then bounds it.
        message = str(getattr(exc, "message", "") or exc).splitlines()[0] if str(exc) else ""
        description = f"HTTP {status}: {message}" if status else f"{kind_name}: {message}"
        return AttemptError(
            description,
            kind=kind,
            status=status,
            retry_after=_retry_after(exc) if kind is ErrorKind.RATE_LIMIT else None,
            elapsed=elapsed,
            timed_out=kind is ErrorKind.TIMEOUT,
        )

    def _answer(self, response: Any) -> ProviderAnswer:
        try:
            choice = response.choices[0]
            text = choice.message.content if self.chat else choice.text
            usage = getattr(response, "usage", None)
        except (AttributeError, IndexError, TypeError) as exc:
            raise AttemptError(
                f"unreadable litellm answer ({type(exc).__name__})", kind=ErrorKind.API_ERROR
            ) from None
        return ProviderAnswer.read(
            text, getattr(usage, "prompt_tokens", 0), getattr(usage, "completion_tokens", 0)
        )


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    named = {
        "Retry-After": headers.get("retry-after"),
        "retry-after-ms": headers.get("retry-after-ms"),
    }
    return retry_after_seconds({k: v for k, v in named.items() if v is not None})
