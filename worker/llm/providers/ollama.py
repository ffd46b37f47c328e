"""Ollama: `provider: ollama` as litellm calls it for Rasa — `/api/generate` with the chat turned
into litellm's Ollama prompt (litellm/llms/ollama/completion/transformation.py, ollama_pt of
litellm_core_utils/prompt_templates/factory.py: `### User:\\n{prompt}\\n\\n` for one user
message; the prompt as it is for a text completion) — and `provider: ollama_chat`, `/api/chat`.

Base URL: `api_base`, else OLLAMA_API_BASE; without either Rasa refuses to start
(litellm.validate_environment: "Environment variables: OLLAMA_API_BASE not set"). OpenAI-style
sampling keys go under `options`, as litellm maps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.llm.model_group import Deployment
from worker.llm.providers.base import (
    BuildContext,
    HttpProvider,
    ProviderAnswer,
    register,
)

# OpenAI-style sampling names that Ollama expects under `options`
# (OllamaConfig.map_openai_params).
_OPTIONS = {
    "temperature": "temperature",
    "max_tokens": "num_predict",
    "max_completion_tokens": "num_predict",
    "num_predict": "num_predict",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "stop": "stop",
    "num_ctx": "num_ctx",
    "repeat_penalty": "repeat_penalty",
    "frequency_penalty": "repeat_penalty",
}


class _Ollama(HttpProvider):
    path = "/api/generate"

    def __init__(
        self, deployment: Deployment, params: Mapping[str, Any], context: BuildContext
    ) -> None:
        super().__init__(deployment, params, context)
        base = deployment.api_base or context.environ.get("OLLAMA_API_BASE")
        if not base:
            raise ValueError(
                f"{deployment.provider} deployment {self.name!r} needs `api_base` or the "
                "environment variable OLLAMA_API_BASE (not set)"
            )
        self.url = f"{base.rstrip('/')}{self.path}"

    def _layout(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(options, other body keys) from the parameters."""
        params = dict(self.params)
        params.pop("logit_bias", None)  # Ollama has no logit bias
        options: dict[str, Any] = {}
        for name, option in _OPTIONS.items():
            if name in params:
                options[option] = params.pop(name)
        given = params.pop("options", None)
        if isinstance(given, Mapping):
            options.update(given)
        return options, params

    def body(self, prompt: str) -> dict[str, Any]:
        options, rest = self._layout()
        body = {"model": self.model, **self.prompt_fields(prompt), "options": options, **rest}
        body["stream"] = False  # the gateway reads one JSON answer, never a stream
        return body

    def prompt_fields(self, prompt: str) -> dict[str, Any]:
        text = (
            f"### User:\n{prompt}\n\n" if self.deployment.use_chat_completions_endpoint else prompt
        )
        return {"prompt": text}

    def read_answer(self, payload: Any) -> ProviderAnswer:
        return self._answer(payload["response"], payload)

    @staticmethod
    def _answer(text: Any, payload: Any) -> ProviderAnswer:
        return ProviderAnswer.read(
            text, payload.get("prompt_eval_count"), payload.get("eval_count")
        )


@register
class Ollama(_Ollama):
    names = ("ollama",)
    prefixes = ("ollama/",)
    format_name = "ollama-generate"


@register
class OllamaChat(_Ollama):
    names = ("ollama_chat",)
    prefixes = ("ollama_chat/",)
    format_name = "ollama-chat"
    path = "/api/chat"

    def prompt_fields(self, prompt: str) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": prompt}]}

    def read_answer(self, payload: Any) -> ProviderAnswer:
        return self._answer(payload["message"]["content"], payload)
