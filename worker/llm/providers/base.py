"""What every provider's wire format shares: the registry of providers by name, the request and
answer types, and the pieces of a JSON request body built once around the prompt.

A provider is one class registered by the name `provider:` takes in endpoints.yml. It is built
once per deployment, from the deployment and this process's environment (configuration errors
surface then, as ValueError, never as a failure of every call), and holds everything a call needs:
the URL, authentication, the body around the prompt and how to read the answer. No I/O happens
in a provider, except in those not reached over this project's HTTP client (`http = False`),
which complete a prompt themselves (worker.llm.providers.litellm_served).

The prompt always travels as ONE user message (Rasa's `llm.acompletion(prompt)`), or as the
`prompt` of a text completion.
"""

from __future__ import annotations

import email.utils
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import orjson

from worker.llm.model_group import Deployment
from worker.llm.redaction import Redactor, cut

if TYPE_CHECKING:
    from worker.llm.providers.azure_oauth import EntraToken

MAX_RETRY_AFTER = 3600.0
ERROR_BODY_WINDOW = 1024  # bytes of a body that is not JSON quoted in an error (then redacted)
# One encoder for every request body: json.dumps with non-default arguments builds a new encoder
# on every call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))
# Stands in for the prompt while the rest of a request body is encoded once.
_PROMPT_MARKER = "\x00coexistence-router:prompt\x00"


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

    @classmethod
    def read(cls, text: Any, prompt_tokens: Any, completion_tokens: Any) -> ProviderAnswer:
        """From a payload's fields: a text that is not one is empty, counts not numbers are 0."""
        return cls(
            text if isinstance(text, str) else "",
            TokenUsage(usage_int(prompt_tokens), usage_int(completion_tokens)),
        )


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


@dataclass(frozen=True)
class BuildContext:
    """What a provider is built from besides its deployment."""

    environ: Mapping[str, str]
    # In a group with a `router:` block (litellm's Router in Rasa), else a standalone client:
    # a few environment variables are read in another order (worker.llm.providers.openai).
    routed: bool = True
    # Built to check a configuration only: nothing that holds resources (an Entra ID
    # credential's session) is made.
    check_only: bool = False
    # Told every secret the provider resolves, when it resolves it (a refreshed token too):
    # the gateway's, which redacts whatever it says about the group.
    redactor: Redactor = field(default_factory=Redactor)


class RequestSigner(Protocol):
    """Authenticates each request where the headers cannot hold it ready (AWS SigV4 signs the
    body and the time): `sign` returns the request to send, or raises AttemptError."""

    async def sign(self, request: HttpRequest, timeout: float) -> HttpRequest: ...


class Provider:
    """How one deployment is called. Subclasses register under the names they serve."""

    names: ClassVar[tuple[str, ...]] = ()
    # Served over the gateway's own HTTP client (`request`/`answer`), else by `complete`.
    http: ClassVar[bool] = True
    # litellm's provider prefixes that a `model` may carry and that name this provider.
    prefixes: ClassVar[tuple[str, ...]] = ()
    # litellm parameters (model_group.LITELLM_PARAMS) this provider implements itself.
    own_params: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self, deployment: Deployment, params: Mapping[str, Any], context: BuildContext
    ) -> None:
        self.deployment = deployment
        self.name = deployment.name
        self.model = model_name(deployment, self.prefixes)
        self.params = dict(params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.deployment.provider}, {self.name!r})"

    @property
    def secrets(self) -> list[str]:
        """Values to redact from anything said about this deployment."""
        return self.deployment.secrets()

    async def close(self) -> None:
        return None


class HttpProvider(Provider, ABC):
    """A provider reached with one JSON POST per call."""

    url: str
    format_name: str = "http"  # names the wire format in messages
    # A bearer token fetched per call (Azure Entra ID); None: the headers carry the key.
    token: EntraToken | None = None
    # Or a signature made per call (AWS SigV4).
    signer: RequestSigner | None = None

    def __init__(
        self, deployment: Deployment, params: Mapping[str, Any], context: BuildContext
    ) -> None:
        super().__init__(deployment, params, context)
        # Every request's headers; a provider adds its authentication here when it is built.
        self.headers: dict[str, str] = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            **deployment.http_headers(),
        }
        self._body_parts: tuple[bytes, bytes] | tuple[()] | None = None

    @abstractmethod
    def body(self, prompt: str) -> dict[str, Any]: ...

    @abstractmethod
    def read_answer(self, payload: Any) -> ProviderAnswer: ...

    def encoded_body(self, prompt: str) -> bytes:
        """`body(prompt)` as compact JSON. The body around the prompt never changes, so it is
        encoded once, around a marker, and each call only encodes the prompt: the same JSON
        value (the prompt's non-ASCII characters as UTF-8 rather than escaped)."""
        parts = self._body_parts
        if parts is None:
            parts = self._body_parts = self._split_body()
        if parts:
            prefix, suffix = parts
            return prefix + _json_string(prompt) + suffix
        return _COMPACT_JSON.encode(self.body(prompt)).encode()

    def _split_body(self) -> tuple[bytes, bytes] | tuple[()]:
        encoded = _COMPACT_JSON.encode(self.body(_PROMPT_MARKER))
        marker = _COMPACT_JSON.encode(_PROMPT_MARKER)
        if encoded.count(marker) != 1:
            return ()  # the marker is also elsewhere (a deployment key?): encode every time
        prefix, suffix = encoded.split(marker)
        return prefix.encode(), suffix.encode()

    def request(self, prompt: str) -> HttpRequest:
        return HttpRequest(self.url, self.headers, self.encoded_body(prompt))

    def answer(self, payload: Any) -> ProviderAnswer:
        """Read the answer text and usage; ValueError when the payload is not this format's."""
        try:
            return self.read_answer(payload)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"unreadable {self.format_name} answer ({type(exc).__name__})"
            ) from None


_REGISTRY: dict[str, type[Provider]] = {}


def register(cls: type[Provider]) -> type[Provider]:
    """Class decorator: serve `provider:` values `cls.names` with `cls`."""
    for name in cls.names:
        _REGISTRY[name] = cls
    return cls


def registered(name: str) -> type[Provider] | None:
    return _REGISTRY.get(name)


def native_providers() -> tuple[str, ...]:
    return tuple(name for name, cls in _REGISTRY.items() if cls.http)


def model_name(deployment: Deployment, prefixes: tuple[str, ...] | None = None) -> str | None:
    """The deployment's model as the provider knows it: a litellm prefix naming this provider
    is removed (`openai/gpt-4o`), anything else is a real model name (`meta-llama/Llama-3`)."""
    model = deployment.model
    if model is None:
        return None
    if prefixes is None:
        cls = registered(deployment.provider)
        prefixes = cls.prefixes if cls is not None else (f"{deployment.provider}/",)
    for prefix in prefixes:
        if model.startswith(prefix) and len(model) > len(prefix):
            return model[len(prefix) :]
    return model


def _json_string(text: str) -> bytes:
    """`text` as a JSON string: by orjson, several times faster than the json module at a
    prompt's length; a string orjson refuses (one holding a lone surrogate, which UTF-8 cannot
    carry) by the json module, which escapes it."""
    try:
        return orjson.dumps(text)
    except orjson.JSONEncodeError:
        return _COMPACT_JSON.encode(text).encode()


def usage_int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


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
        message = cut(raw[:ERROR_BODY_WINDOW].decode("utf-8", "replace"), ERROR_BODY_WINDOW)
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


ProviderFactory = Callable[[Deployment, Mapping[str, Any], BuildContext], Provider]


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` (OpenAI/Azure) or `Retry-After` (seconds or an HTTP date), bounded."""
    value: float | None = None
    raw_ms = headers.get("retry-after-ms")
    raw = headers.get("Retry-After")
    try:
        if raw_ms is not None:
            value = float(raw_ms) / 1000.0
        elif raw is not None:
            value = float(raw)
    except ValueError:
        value = None
    if value is None and raw is not None:
        try:
            when = email.utils.parsedate_to_datetime(raw)
            value = when.timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            value = None
    if value is None or value != value:  # NaN
        return None
    return min(max(value, 0.0), MAX_RETRY_AFTER)
