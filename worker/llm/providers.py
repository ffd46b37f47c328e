"""The wire formats of the providers of SPEC §5: building a deployment's HTTP request from a prompt
and reading the answer text and token usage from its response. No I/O happens here.

The prompt always travels as ONE user message (Rasa's `llm.acompletion(prompt)`), or as the
`prompt` of a text completion. The request parameters are the caller's (the router's: the
deployment's own keys over the Rasa release's defaults, worker.llm.router_defaults), else the
deployment's own unknown keys (`Deployment.extra_body()`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from worker.llm.model_group import Deployment

OPENAI_BASE = "https://api.openai.com/v1"
OLLAMA_BASE = "http://localhost:11434"
AZURE_DEFAULT_API_VERSION = "2024-06-01"

# A `model` may carry litellm's provider prefix (`openai/gpt-4o`). Only a prefix naming the
# deployment's own provider is removed: `meta-llama/Llama-3` on a self-hosted server, or a proxy's
# `openai/gpt-4o` alias on litellm_proxy, are real model names and are sent as written.
_OWN_PREFIXES: dict[str, tuple[str, ...]] = {
    "openai": ("openai/",),
    "azure": ("azure/",),
    "self-hosted": ("hosted_vllm/", "self-hosted/"),
    "ollama": ("ollama_chat/", "ollama/"),
    "litellm_proxy": ("litellm_proxy/",),
    "rasa": ("rasa/",),
    "bedrock": ("bedrock/converse/", "bedrock/", "converse/"),
}

# Converse's own top-level request fields; other unknown keys of a bedrock deployment are model
# specific and travel in `additionalModelRequestFields` (Converse rejects unknown top-level keys).
_CONVERSE_FIELDS = frozenset(
    {
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "promptVariables",
        "requestMetadata",
        "performanceConfig",
    }
)
_CONVERSE_INFERENCE = {
    "max_tokens": "maxTokens",
    "temperature": "temperature",
    "top_p": "topP",
    "stop": "stopSequences",
}
# OpenAI-style sampling names that Ollama expects under `options`.
_OLLAMA_OPTIONS = {
    "temperature": "temperature",
    "max_tokens": "num_predict",
    "num_predict": "num_predict",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "stop": "stop",
    "num_ctx": "num_ctx",
    "repeat_penalty": "repeat_penalty",
}


# One encoder for every request body: json.dumps with non-default arguments builds a new encoder
# on every call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))
# Stands in for the prompt while the rest of a request body is encoded once.
_PROMPT_MARKER = "\x00coexistence-router:prompt\x00"


class WireFormat(Enum):
    OPENAI_CHAT = "openai-chat"
    OPENAI_TEXT = "openai-text"
    OLLAMA_CHAT = "ollama-chat"
    OLLAMA_GENERATE = "ollama-generate"
    BEDROCK_CONVERSE = "bedrock-converse"


@dataclass(frozen=True)
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ProviderAnswer:
    text: str
    usage: TokenUsage


@dataclass(frozen=True, repr=False)
class HttpRequest:
    """A ready-to-send POST. Its headers may hold credentials, so its repr names them only."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __repr__(self) -> str:
        return (
            f"HttpRequest(POST {self.url.split('?', 1)[0]}, "
            f"headers={sorted(self.headers)}, {len(self.body)} bytes)"
        )


def model_name(deployment: Deployment) -> str | None:
    """The deployment's model as the provider knows it (own provider prefix removed)."""
    model = deployment.model
    if model is None:
        return None
    for prefix in _OWN_PREFIXES[deployment.provider]:
        if model.startswith(prefix) and len(model) > len(prefix):
            return model[len(prefix) :]
    return model


class Endpoint:
    """How one deployment is called: URL, authentication, body layout and answer format.

    Built once per deployment (configuration errors surface at build time, as ValueError) and
    used for every request. Secrets stay inside the deployment's SecretStr fields until a
    request's headers are built.
    """

    def __init__(
        self,
        deployment: Deployment,
        params: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.deployment = deployment
        self.name = deployment.name
        self._params = dict(params) if params is not None else deployment.extra_body()
        self._model = model_name(deployment)
        self._api_key = deployment.api_key.get_secret_value() if deployment.api_key else None
        self._credentials: Credentials | None = None
        self._region: str | None = None
        self._body_parts: tuple[bytes, bytes] | tuple[()] | None = None
        provider = deployment.provider
        chat = deployment.use_chat_completions_endpoint

        if provider == "azure":
            base = deployment.api_base or env.get("AZURE_API_BASE")
            if not base:
                raise ValueError(f"azure deployment {self.name!r} needs `api_base`")
            version = deployment.api_version or env.get("AZURE_API_VERSION")
            path = "chat/completions" if chat else "completions"
            name = quote(deployment.deployment or "", safe="")
            query = urlencode({"api-version": version or AZURE_DEFAULT_API_VERSION})
            self.url = f"{base.rstrip('/')}/openai/deployments/{name}/{path}?{query}"
            self._api_key = self._api_key or env.get("AZURE_API_KEY")
            self.format = WireFormat.OPENAI_CHAT if chat else WireFormat.OPENAI_TEXT
        elif provider == "ollama":
            base = (deployment.api_base or OLLAMA_BASE).rstrip("/")
            self.url = f"{base}/api/chat" if chat else f"{base}/api/generate"
            self.format = WireFormat.OLLAMA_CHAT if chat else WireFormat.OLLAMA_GENERATE
        elif provider == "bedrock":
            self._region = (
                deployment.aws_region_name or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
            )
            if not self._region:
                raise ValueError(
                    f"bedrock deployment {self.name!r} needs `aws_region_name` "
                    "(or AWS_REGION / AWS_DEFAULT_REGION)"
                )
            base = deployment.api_base or f"https://bedrock-runtime.{self._region}.amazonaws.com"
            # The model id (ARNs, `…-v1:0`) is one path segment; botocore signs the encoded path.
            self.url = f"{base.rstrip('/')}/model/{quote(self._model or '', safe='')}/converse"
            self._credentials = _aws_credentials(deployment, env, self.name)
            self.format = WireFormat.BEDROCK_CONVERSE
        else:
            if provider == "openai":
                base = deployment.api_base or OPENAI_BASE
                self._api_key = self._api_key or env.get("OPENAI_API_KEY")
            else:  # self-hosted, litellm_proxy, rasa: OpenAI-compatible servers
                if not deployment.api_base:
                    raise ValueError(f"{provider} deployment {self.name!r} needs `api_base`")
                base = deployment.api_base
            path = "chat/completions" if chat else "completions"
            self.url = f"{base.rstrip('/')}/{path}"
            self.format = WireFormat.OPENAI_CHAT if chat else WireFormat.OPENAI_TEXT

    def __repr__(self) -> str:
        return f"Endpoint({self.deployment.provider}, {self.name!r}, {self.format.value})"

    def body(self, prompt: str) -> dict[str, Any]:
        params = dict(self._params)
        if self.format is WireFormat.OPENAI_CHAT:
            body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
            if self.deployment.provider != "azure":  # azure names the model in the path
                body["model"] = self._model
            return {**body, **params}
        if self.format is WireFormat.OPENAI_TEXT:
            body = {"prompt": prompt}
            if self.deployment.provider != "azure":
                body["model"] = self._model
            return {**body, **params}
        if self.format in (WireFormat.OLLAMA_CHAT, WireFormat.OLLAMA_GENERATE):
            params.pop("logit_bias", None)  # Ollama has no logit bias
            options: dict[str, Any] = {}
            for name, option in _OLLAMA_OPTIONS.items():
                if name in params:
                    options[option] = params.pop(name)
            extra_options = params.pop("options", None)
            if isinstance(extra_options, Mapping):
                options.update(extra_options)
            if self.format is WireFormat.OLLAMA_CHAT:
                body = {"model": self._model, "messages": [{"role": "user", "content": prompt}]}
            else:
                body = {"model": self._model, "prompt": prompt}
            body.update({"stream": False, "options": options})
            body.update(params)
            body["stream"] = False  # the gateway reads one JSON answer, never a stream
            return body
        # Bedrock Converse
        params.pop("logit_bias", None)
        inference: dict[str, Any] = {}
        for name, wire in _CONVERSE_INFERENCE.items():
            if name in params:
                inference[wire] = params.pop(name)
        body = {"messages": [{"role": "user", "content": [{"text": prompt}]}]}
        additional: dict[str, Any] = {}
        for key, value in params.items():
            if key in _CONVERSE_FIELDS:
                body[key] = value
            else:
                additional[key] = value
        if isinstance(body.get("inferenceConfig"), Mapping):
            inference.update(body["inferenceConfig"])
        if inference:
            body["inferenceConfig"] = inference
        if additional:
            given = body.get("additionalModelRequestFields")
            body["additionalModelRequestFields"] = {
                **additional,
                **(given if isinstance(given, Mapping) else {}),
            }
        return body

    def encoded_body(self, prompt: str) -> bytes:
        """`body(prompt)` as compact JSON. The body around the prompt never changes, so it is
        encoded once, around a marker, and each call only encodes the prompt: the same bytes."""
        parts = self._body_parts
        if parts is None:
            parts = self._body_parts = self._split_body()
        if parts:
            prefix, suffix = parts
            return prefix + _COMPACT_JSON.encode(prompt).encode() + suffix
        return _COMPACT_JSON.encode(self.body(prompt)).encode()

    def _split_body(self) -> tuple[bytes, bytes] | tuple[()]:
        encoded = _COMPACT_JSON.encode(self.body(_PROMPT_MARKER))
        marker = _COMPACT_JSON.encode(_PROMPT_MARKER)
        if encoded.count(marker) != 1:
            return ()  # the marker is also elsewhere (a deployment key?): encode every time
        prefix, suffix = encoded.split(marker)
        return prefix.encode(), suffix.encode()

    def request(self, prompt: str) -> HttpRequest:
        data = self.encoded_body(prompt)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.format is WireFormat.BEDROCK_CONVERSE:
            assert self._credentials is not None and self._region is not None
            signed = AWSRequest(method="POST", url=self.url, data=data, headers=headers)
            SigV4Auth(self._credentials, "bedrock", self._region).add_auth(signed)
            return HttpRequest(self.url, dict(signed.headers.items()), data)
        if self._api_key:
            if self.deployment.provider == "azure":
                headers["api-key"] = self._api_key
            else:
                headers["Authorization"] = f"Bearer {self._api_key}"
        return HttpRequest(self.url, headers, data)

    def answer(self, payload: Any) -> ProviderAnswer:
        """Read the answer text and usage; ValueError when the payload is not this format's."""
        try:
            return _read_answer(self.format, payload)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"unreadable {self.format.value} answer ({type(exc).__name__})"
            ) from None


def _aws_credentials(deployment: Deployment, env: Mapping[str, str], name: str) -> Credentials:
    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    access = secret(deployment.aws_access_key_id)
    key = secret(deployment.aws_secret_access_key)
    token = secret(deployment.aws_session_token)
    if access is None and key is None:
        access = env.get("AWS_ACCESS_KEY_ID")
        key = env.get("AWS_SECRET_ACCESS_KEY")
        token = token or env.get("AWS_SESSION_TOKEN")
    if not access or not key:
        raise ValueError(
            f"bedrock deployment {name!r} needs aws_access_key_id and aws_secret_access_key "
            "(or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        )
    return Credentials(access, key, token)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _read_answer(wire: WireFormat, payload: Any) -> ProviderAnswer:
    if wire is WireFormat.OPENAI_CHAT or wire is WireFormat.OPENAI_TEXT:
        choice = payload["choices"][0]
        if wire is WireFormat.OPENAI_CHAT:
            text = choice["message"].get("content")
        else:
            text = choice["text"]
        usage = payload.get("usage") or {}
        return ProviderAnswer(
            text if isinstance(text, str) else "",
            TokenUsage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))),
        )
    if wire is WireFormat.OLLAMA_CHAT or wire is WireFormat.OLLAMA_GENERATE:
        text = (
            payload["message"]["content"] if wire is WireFormat.OLLAMA_CHAT else payload["response"]
        )
        return ProviderAnswer(
            text if isinstance(text, str) else "",
            TokenUsage(_int(payload.get("prompt_eval_count")), _int(payload.get("eval_count"))),
        )
    blocks = payload["output"]["message"]["content"]
    text = "".join(b["text"] for b in blocks if isinstance(b, dict) and "text" in b)
    usage = payload.get("usage") or {}
    return ProviderAnswer(
        text, TokenUsage(_int(usage.get("inputTokens")), _int(usage.get("outputTokens")))
    )


def parse_json(raw: bytes) -> Any:
    """json.loads, through orjson where it can (the same values for any JSON orjson accepts;
    the rest, such as NaN or integers beyond 64 bits, goes to json.loads). ValueError for
    anything that is not JSON, nesting too deep for either parser included (json.loads raises
    RecursionError there, which would otherwise escape every handler of a bad answer)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def error_text(status: int, raw: bytes) -> str:
    """A short description of an error response: the provider's message when it has one.

    The caller redacts it (providers echo parts of keys in authentication errors).
    """
    message: str | None = None
    try:
        payload = parse_json(raw)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("code") or "")
        elif isinstance(error, str):
            message = error
        elif isinstance(payload.get("message"), str):  # Bedrock / AWS
            message = payload["message"]
        elif isinstance(payload.get("Message"), str):
            message = payload["Message"]
    if message is None:
        message = raw[:200].decode("utf-8", "replace")
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"
