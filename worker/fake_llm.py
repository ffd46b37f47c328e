"""A scriptable stand-in for OpenAI, Azure OpenAI, Ollama, AWS Bedrock and Anthropic LLM
deployments.

Used by the tests, by `coexistence-router demo` and by compose. Every endpoint speaks the
provider's real wire format (the official `openai` SDK and botocore's `bedrock-runtime` client
parse its answers), so a client that works against the fake has been exercised on the real
protocol, not on a convenient approximation of it.

Routes (the deployment is what `script()` keys on):

- OpenAI-compatible (openai, self-hosted vLLM, litellm_proxy, rasa, ollama's `/v1`):
  `POST /v1/chat/completions`, `/chat/completions`, `/v1/completions`, `/completions`;
  deployment = body `model`. `stream: true` is answered with server-sent events.
- Azure: `POST /openai/deployments/{deployment}/chat/completions` (and `/completions`), which need
  an `api-key` header (or an Entra `Authorization: Bearer` token) and an `api-version` query.
- Ollama: `POST /api/chat`, `POST /api/generate`; deployment = body `model`. Like the real server,
  a request without `"stream": false` is answered as a newline-delimited JSON stream.
- Bedrock: `POST /model/{modelId}/converse`; deployment = the URL-decoded model id. With
  `bedrock_credentials` (or `add_bedrock_credentials`, for temporary ones with their session
  token), the SigV4 signature is recomputed with botocore and checked; with `bedrock_api_keys`,
  an `Authorization: Bearer` Bedrock API key is checked instead.
- Anthropic Messages API: `POST /v1/messages`, which needs `x-api-key` (or a Bearer token) and
  `anthropic-version` headers and `max_tokens`; deployment = body `model`. `stream: true` is
  answered with Anthropic's server-sent events. (What litellm's `anthropic` provider calls.)

A scripted `latency` counts from the arrival of the request's first bytes, as a remote server's
would: the fake's own work, and its queue behind other requests on a busy CPU, is not added to it.

Run standalone: `python -m worker.fake_llm --host 0.0.0.0 --port 8000 --answer A --latency 0.05`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import os
import random
import signal
import ssl
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote

import orjson
from aiohttp import web

from worker import eventloop
from worker.lifecycle import Started

__all__ = ["DEFAULT_SCRIPT", "FakeLLMServer", "FakeRequest", "main"]

# `script(DEFAULT_SCRIPT, ...)` changes how every deployment without a script of its own answers;
# the standalone server uses it so any model name a config happens to use gets the same behaviour.
DEFAULT_SCRIPT = "*"

Flavor = Literal[
    "openai_chat", "openai_text", "ollama_chat", "ollama_generate", "bedrock", "anthropic"
]


@dataclass(frozen=True)
class FakeRequest:
    """One received request. Header names are lower-cased; `path` includes the query string."""

    deployment: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float  # time.time() when the request was read


@dataclass
class _Script:
    answers: list[str] | None = None
    answer: str = "A"
    latency: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    status: int | None = None
    retry_after: float | None = None
    hang: bool = False
    rng: random.Random = field(default_factory=random.Random)
    answered: int = 0

    def next_answer(self) -> str:
        # Cycling advances on answered calls only, so a retried call gets the answer the script
        # author expected for "the next successful call".
        text = self.answers[self.answered % len(self.answers)] if self.answers else self.answer
        self.answered += 1
        return text

    def error_for_this_call(self) -> int | None:
        if self.status is not None:
            return self.status
        if self.error_rate > 0 and self.rng.random() < self.error_rate:
            return self.error_status
        return None


_OPENAI_ERROR_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", None),
    429: ("requests", "rate_limit_exceeded"),
    503: ("server_error", "service_unavailable"),
}

# https://docs.anthropic.com/en/api/errors
_ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

_BEDROCK_ERROR_TYPES: dict[int, str] = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


def _word_count(*texts: str) -> int:
    return sum(_words(text) for text in texts)


@functools.lru_cache(maxsize=256)
def _words(text: str) -> int:
    # Cached: a load test sends the same prompt around different messages over and over.
    return len(text.split())


class _ArrivalStamp(asyncio.Protocol):
    """aiohttp's handler of one connection, and the loop time at which the bytes of the request
    it is reading began to arrive. aiohttp starts a handler only after the handlers of the other
    requests that arrived with it have run up to their first wait: under load, a request can wait
    there for milliseconds before the fake even sees it."""

    def __init__(
        self,
        handler: asyncio.Protocol,
        arrivals: dict[asyncio.BaseProtocol, float],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._handler = handler
        self._arrivals = arrivals
        self._loop = loop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        # The first bytes since the handler took the last stamp start the next request.
        if self._handler not in self._arrivals:
            self._arrivals[self._handler] = self._loop.time()
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._arrivals.pop(self._handler, None)
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


def _wake(sleeper: asyncio.Future[None]) -> None:
    if not sleeper.done():
        sleeper.set_result(None)


def _request_id() -> str:
    """32 random hex digits, as uuid4().hex gives, without building a UUID."""
    return os.urandom(16).hex()


def _openai_prompt_texts(body: dict[str, Any]) -> list[str]:
    """The prompt's texts in an OpenAI (chat or text completion) or Ollama request body."""
    texts: list[str] = []
    if isinstance(body.get("system"), str):
        texts.append(body["system"])
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(str(part.get("text", "")) for part in content if isinstance(part, dict))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        texts.append(prompt)
    elif isinstance(prompt, list):
        texts.extend(p for p in prompt if isinstance(p, str))
    return texts


def _bedrock_prompt_texts(body: dict[str, Any]) -> list[str]:
    """The prompt's texts in a Bedrock Converse request body."""
    texts: list[str] = []
    for block in body.get("system") or []:
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            texts.append(block["text"])
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        for block in message.get("content") or []:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                texts.append(block["text"])
    return texts


def _anthropic_prompt_texts(body: dict[str, Any]) -> list[str]:
    """The prompt's texts in an Anthropic Messages request (system may be blocks too)."""
    system = body.get("system")
    texts = [
        str(block.get("text", ""))
        for block in (system if isinstance(system, list) else [])
        if isinstance(block, dict)
    ]
    return texts + _openai_prompt_texts(body)


def _prompt_texts(flavor: Flavor, body: dict[str, Any]) -> list[str]:
    if flavor == "bedrock":
        return _bedrock_prompt_texts(body)
    if flavor == "anthropic":
        return _anthropic_prompt_texts(body)
    return _openai_prompt_texts(body)


def _format_seconds(value: float) -> str:
    return f"{value:g}"


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload),
        status=status,
        content_type="application/json",
        headers=headers,
    )


class FakeLLMServer(Started):
    """The fake LLM provider. Use `async with FakeLLMServer() as server:` or start()/stop()."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int = 0,
        bedrock_credentials: dict[str, str] | None = None,
        bedrock_api_keys: set[str] | None = None,
        responder: Callable[[str], str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`responder`, when given, answers every call of a deployment without a script (its own
        or the DEFAULT_SCRIPT one) from the prompt text (the request's texts joined by newlines),
        instead of "A"; scripts, latency and errors still apply as usual. With `ssl_context`
        (a server context) it speaks HTTPS."""
        self._host = host
        self._port = port
        self._ssl_context = ssl_context
        self._seed = seed
        self._bedrock_credentials = dict(bedrock_credentials) if bedrock_credentials else None
        self._bedrock_session_tokens: dict[str, str] = {}
        self._bedrock_api_keys = set(bedrock_api_keys) if bedrock_api_keys is not None else None
        self._responder = responder
        self._scripts: dict[str, _Script] = {}
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        # When the first bytes of the request a connection is reading arrived (loop time).
        self._arrivals: dict[asyncio.BaseProtocol, float] = {}
        self._arrived: dict[int, float] = {}  # by id() of the requests being handled
        self._stopping = asyncio.Event()
        self._sleepers: set[asyncio.Future[None]] = set()
        self._changed = asyncio.Event()
        self._watchers = 0  # wait_until calls waiting on _changed
        self.requests: list[FakeRequest] = []
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)

    def add_bedrock_credentials(
        self, access_key: str, secret_key: str, session_token: str | None = None
    ) -> None:
        """Accept SigV4 signatures made with these credentials from now on (temporary ones
        only with their session token, as AWS checks it); signatures are checked from then."""
        if self._bedrock_credentials is None:
            self._bedrock_credentials = {}
        self._bedrock_credentials[access_key] = secret_key
        if session_token is not None:
            self._bedrock_session_tokens[access_key] = session_token

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeLLMServer already started")
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._take_arrival])
        app.router.add_post("/v1/chat/completions", self._openai_chat)
        app.router.add_post("/chat/completions", self._openai_chat)
        app.router.add_post("/v1/completions", self._openai_text)
        app.router.add_post("/completions", self._openai_text)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure_chat)
        app.router.add_post("/openai/deployments/{deployment}/completions", self._azure_text)
        app.router.add_post("/api/chat", self._ollama_chat)
        app.router.add_post("/api/generate", self._ollama_generate)
        app.router.add_post("/model/{model_id}/converse", self._bedrock_converse)
        app.router.add_post("/v1/messages", self._anthropic_messages)
        app.router.add_get("/health", self._health)
        # handler_cancellation: a client that gives up (timeout, disconnect) cancels its handler,
        # so `in_flight` drops as soon as the client is gone, as a real server's would.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=5.0
        )
        await runner.setup()
        handlers = runner.server
        assert handlers is not None
        arrivals = self._arrivals
        loop = asyncio.get_running_loop()
        try:
            # aiohttp's own connection handlers, each behind a stamp of when its request's
            # first bytes arrived (see _ArrivalStamp).
            self._listener = await loop.create_server(
                lambda: _ArrivalStamp(handlers(), arrivals, loop),
                self._host,
                self._port,
                ssl=self._ssl_context,
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(self._listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()  # no new connections; aiohttp shuts the open ones down below
        # Wakes hanging and sleeping handlers first, so shutdown does not wait on them.
        self._stopping.set()
        for sleeper in self._sleepers:
            if not sleeper.done():
                sleeper.set_result(None)
        await runner.cleanup()

    @property
    def url(self) -> str:
        host = self._host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    # -- scripting -----------------------------------------------------------------------------

    def script(
        self,
        deployment: str,
        *,
        answers: list[str] | None = None,
        answer: str = "A",
        latency: float = 0.0,
        error_rate: float = 0.0,
        error_status: int = 500,
        status: int | None = None,
        retry_after: float | None = None,
        hang: bool = False,
    ) -> None:
        """Set how `deployment` answers (replacing any earlier script of it)."""
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("error_rate must be within [0, 1]")
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self._scripts[deployment] = _Script(
            answers=list(answers) if answers else None,
            answer=answer,
            latency=latency,
            error_rate=error_rate,
            error_status=error_status,
            status=status,
            retry_after=retry_after,
            hang=hang,
            # Seeded per deployment, so concurrent traffic to other deployments does not shift
            # which calls of this one fail.
            rng=random.Random(f"{self._seed}:{deployment}"),
        )

    def clear(self, deployment: str | None = None) -> None:
        """Back to defaults: one deployment's script, or every script (including the default)."""
        if deployment is None:
            self._scripts.clear()
        else:
            self._scripts.pop(deployment, None)

    def clear_requests(self) -> None:
        """Forget received requests and the concurrency high-water marks."""
        self.requests.clear()
        self.max_in_flight.clear()
        for name, value in self.in_flight.items():
            self.max_in_flight[name] = value

    def _script_for(self, deployment: str) -> _Script | None:
        """The deployment's script, else the default one; None when neither is set."""
        return self._scripts.get(deployment) or self._scripts.get(DEFAULT_SCRIPT)

    # -- observation ---------------------------------------------------------------------------

    def count(self, deployment: str) -> int:
        return sum(1 for request in self.requests if request.deployment == deployment)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds, re-checked on every request start and end.

        Tests await this instead of sleeping; raises TimeoutError after `timeout` seconds.
        """
        async with asyncio.timeout(timeout):
            while not predicate():
                self._watchers += 1
                try:
                    await self._changed.wait()
                finally:
                    self._watchers -= 1

    async def wait_for_requests(
        self, count: int, deployment: str | None = None, timeout: float = 5.0
    ) -> None:
        """Wait until at least `count` requests (to `deployment`, or to any) were received."""

        def enough() -> bool:
            if deployment is None:
                return len(self.requests) >= count
            return self.count(deployment) >= count

        await self.wait_until(enough, timeout)

    def _notify(self) -> None:
        if self._watchers:  # nobody waiting is the common case under load
            event, self._changed = self._changed, asyncio.Event()
            event.set()

    def _record(self, request: web.Request, deployment: str, body: dict[str, Any]) -> None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(
            FakeRequest(
                deployment=deployment,
                path=request.path_qs,
                headers=headers,
                body=body,
                received_at=time.time(),
            )
        )
        self._notify()

    # -- request handling ----------------------------------------------------------------------

    @web.middleware
    async def _take_arrival(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # Every request takes its connection's stamp, so the next one on it gets a fresh one.
        arrived = self._arrivals.pop(request.protocol, None)
        key = id(request)
        self._arrived[key] = arrived if arrived is not None else asyncio.get_running_loop().time()
        try:
            return await handler(request)
        finally:
            del self._arrived[key]

    @staticmethod
    async def _read_body(request: web.Request) -> dict[str, Any] | None:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    async def _received(
        self, request: web.Request, deployment: str | None = None
    ) -> tuple[dict[str, Any] | None, str]:
        """The request's JSON body (None when unreadable) and its deployment (`deployment`, else
        the body's `model`, else ""), recorded."""
        body = await self._read_body(request)
        if deployment is None:
            model = (body or {}).get("model")
            deployment = model if isinstance(model, str) else ""
        self._record(request, deployment, body or {})
        return body, deployment

    async def _health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._openai_like(request, "openai_chat", None)

    async def _openai_text(self, request: web.Request) -> web.StreamResponse:
        return await self._openai_like(request, "openai_text", None)

    async def _azure_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._openai_like(request, "openai_chat", request.match_info["deployment"])

    async def _azure_text(self, request: web.Request) -> web.StreamResponse:
        return await self._openai_like(request, "openai_text", request.match_info["deployment"])

    async def _openai_like(
        self, request: web.Request, flavor: Flavor, azure_deployment: str | None
    ) -> web.StreamResponse:
        body, deployment = await self._received(request, azure_deployment)
        if azure_deployment is not None:
            authorization = request.headers.get("Authorization", "")
            if not request.headers.get("api-key") and not authorization.startswith("Bearer "):
                return self._error(
                    flavor,
                    401,
                    "Access denied due to missing subscription key. Make sure to include "
                    "subscription key when making requests to an API.",
                )
            if not request.query.get("api-version"):
                return self._error(flavor, 400, "Missing required query parameter: api-version")
        if body is None:
            return self._error(flavor, 400, "We could not parse the JSON body of your request.")
        if not deployment:
            return self._error(flavor, 400, "you must provide a model parameter")
        return await self._serve(request, flavor, deployment, body)

    async def _ollama_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._ollama(request, "ollama_chat")

    async def _ollama_generate(self, request: web.Request) -> web.StreamResponse:
        return await self._ollama(request, "ollama_generate")

    async def _ollama(self, request: web.Request, flavor: Flavor) -> web.StreamResponse:
        body, deployment = await self._received(request)
        if body is None:
            return self._error(flavor, 400, "invalid JSON body")
        if not deployment:
            return self._error(flavor, 400, "model is required")
        return await self._serve(request, flavor, deployment, body)

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        body, deployment = await self._received(request)
        flavor: Flavor = "anthropic"
        authorization = request.headers.get("Authorization", "")
        if not request.headers.get("x-api-key") and not authorization.startswith("Bearer "):
            return self._error(flavor, 401, "x-api-key header is required")
        if not request.headers.get("anthropic-version"):
            return self._error(flavor, 400, "anthropic-version: header is required")
        if body is None:
            return self._error(flavor, 400, "There was an error parsing the body of your request")
        if not deployment:
            return self._error(flavor, 400, "model: Field required")
        if not isinstance(body.get("max_tokens"), int):
            return self._error(flavor, 400, "max_tokens: Field required")
        if not isinstance(body.get("messages"), list):
            return self._error(flavor, 400, "messages: Field required")
        return await self._serve(request, flavor, deployment, body)

    async def _bedrock_converse(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        # The model id arrives percent-encoded (`...-v1%3A0`); decode it from the raw path so an
        # encoded `/` in an ARN stays part of the id.
        raw_id = request.rel_url.raw_path.split("/")[2]
        deployment = unquote(raw_id)
        try:
            parsed = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else None
        self._record(request, deployment, body or {})
        authorization = request.headers.get("Authorization", "")
        problem: tuple[str, str] | None = None
        if self._bedrock_api_keys is not None and authorization.startswith("Bearer "):
            if authorization.removeprefix("Bearer ") not in self._bedrock_api_keys:
                problem = ("UnrecognizedClientException", "Invalid API Key format or value.")
        elif self._bedrock_credentials is not None:
            problem = self._check_sigv4(request, raw)
        if problem is not None:
            error_type, message = problem
            return self._bedrock_error(403, message, error_type)
        if body is None:
            return self._bedrock_error(400, "Malformed input request, please reformat.")
        return await self._serve(request, "bedrock", deployment, body)

    def _check_sigv4(self, request: web.Request, raw_body: bytes) -> tuple[str, str] | None:
        """Recompute the request's SigV4 signature; an (error type, message) when it is wrong."""
        # Imported here: only Bedrock signature checks need botocore.
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        assert self._bedrock_credentials is not None
        authorization = request.headers.get("Authorization", "")
        amz_date = request.headers.get("X-Amz-Date", "")
        if not authorization.startswith("AWS4-HMAC-SHA256 ") or not amz_date:
            return (
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            )
        fields: dict[str, str] = {}
        for part in authorization.removeprefix("AWS4-HMAC-SHA256 ").split(","):
            name, _, value = part.strip().partition("=")
            fields[name] = value
        scope = fields.get("Credential", "").split("/")
        signed_headers = [h for h in fields.get("SignedHeaders", "").split(";") if h]
        if len(scope) != 5 or not signed_headers or "Signature" not in fields:
            return ("IncompleteSignatureException", "Authorization header is malformed.")
        access_key, date, region, service, terminator = scope
        secret = self._bedrock_credentials.get(access_key)
        if secret is None:
            return (
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        if request.headers.get("X-Amz-Security-Token") != self._bedrock_session_tokens.get(
            access_key
        ):
            return (
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        if service != "bedrock" or terminator != "aws4_request" or not amz_date.startswith(date):
            return ("InvalidSignatureException", "Credential should be scoped to correct service.")
        declared_hash = request.headers.get("X-Amz-Content-SHA256")
        if declared_hash is not None and declared_hash != hashlib.sha256(raw_body).hexdigest():
            return (
                "InvalidSignatureException",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        # Only the headers the client signed take part: HTTP clients add their own headers
        # (Accept-Encoding, Connection, ...) after signing.
        headers = {name: ",".join(request.headers.getall(name, [])) for name in signed_headers}
        aws_request = AWSRequest(
            method=request.method,
            url=f"http://{request.host}{request.rel_url.raw_path_qs}",
            headers=headers,
            data=raw_body,
        )
        aws_request.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(access_key, secret), "bedrock", region)
        canonical_request = signer.canonical_request(aws_request)
        string_to_sign = signer.string_to_sign(aws_request, canonical_request)
        expected = signer.signature(string_to_sign, aws_request)
        if expected != fields["Signature"]:
            return (
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method.",
            )
        return None

    async def _serve(
        self, request: web.Request, flavor: Flavor, deployment: str, body: dict[str, Any]
    ) -> web.StreamResponse:
        scripted = self._script_for(deployment)
        # Not stored: a default script set later must still apply to this deployment.
        script = scripted if scripted is not None else _Script(answer="A")
        loop = asyncio.get_running_loop()
        # The scripted latency counts from the request's arrival, as a remote server's would:
        # this process's own work (and its queue behind other requests on this CPU) is not
        # added on top of it.
        started = self._arrived[id(request)]
        self.in_flight[deployment] += 1
        self.max_in_flight[deployment] = max(
            self.max_in_flight[deployment], self.in_flight[deployment]
        )
        self._notify()
        try:
            if script.hang:
                await self._stopping.wait()
                return self._error(flavor, 503, "server stopping")
            if script.latency > 0:
                await self._sleep(started + script.latency - loop.time())
            error_status = script.error_for_this_call()
            if error_status is not None:
                return self._error(
                    flavor,
                    error_status,
                    f"scripted error {error_status} for {deployment}",
                    retry_after=script.retry_after,
                )
            if scripted is None and self._responder is not None:
                answer = self._responder("\n".join(_prompt_texts(flavor, body)))
            else:
                answer = script.next_answer()
            latency_ms = int((loop.time() - started) * 1000)
            return await self._answer(request, flavor, deployment, body, answer, latency_ms)
        finally:
            self.in_flight[deployment] -= 1
            self._notify()

    async def _sleep(self, seconds: float) -> None:
        """asyncio.sleep that stop() cuts short (a timer and a future: the cheapest wait)."""
        if seconds <= 0 or self._stopping.is_set():
            return
        loop = asyncio.get_running_loop()
        sleeper: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, _wake, sleeper)
        self._sleepers.add(sleeper)
        try:
            await sleeper
        finally:
            timer.cancel()
            self._sleepers.discard(sleeper)

    # -- responses -----------------------------------------------------------------------------

    async def _answer(
        self,
        request: web.Request,
        flavor: Flavor,
        deployment: str,
        body: dict[str, Any],
        answer: str,
        latency_ms: int,
    ) -> web.StreamResponse:
        completion_tokens = _word_count(answer)
        if flavor == "bedrock":
            prompt_tokens = _word_count(*_bedrock_prompt_texts(body))
            return _json(
                {
                    "output": {"message": {"role": "assistant", "content": [{"text": answer}]}},
                    "stopReason": "end_turn",
                    "usage": {
                        "inputTokens": prompt_tokens,
                        "outputTokens": completion_tokens,
                        "totalTokens": prompt_tokens + completion_tokens,
                    },
                    "metrics": {"latencyMs": latency_ms},
                },
                headers={"x-amzn-RequestId": str(uuid.uuid4())},
            )
        if flavor == "anthropic":
            return await self._anthropic_answer(request, deployment, body, answer)
        prompt_tokens = _word_count(*_openai_prompt_texts(body))
        if flavor in ("ollama_chat", "ollama_generate"):
            return await self._ollama_answer(
                request, flavor, deployment, body, answer, prompt_tokens, latency_ms
            )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        created = int(time.time())
        if flavor == "openai_chat":
            completion_id = f"chatcmpl-{_request_id()}"
            if body.get("stream") is True:
                delta = {"role": "assistant", "content": answer}
                chunks = [
                    {"index": 0, "delta": delta, "finish_reason": None, "logprobs": None},
                    {"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None},
                ]
                return await self._openai_stream(
                    request,
                    completion_id,
                    "chat.completion.chunk",
                    created,
                    deployment,
                    body,
                    chunks,
                    usage,
                )
            return _json(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": deployment,
                    "system_fingerprint": "fp_fake",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer, "refusal": None},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                }
            )
        completion_id = f"cmpl-{_request_id()}"
        if body.get("stream") is True:
            chunks = [
                {"index": 0, "text": answer, "finish_reason": None, "logprobs": None},
                {"index": 0, "text": "", "finish_reason": "stop", "logprobs": None},
            ]
            return await self._openai_stream(
                request,
                completion_id,
                "text_completion",
                created,
                deployment,
                body,
                chunks,
                usage,
            )
        return _json(
            {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": deployment,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"text": answer, "index": 0, "finish_reason": "stop", "logprobs": None}
                ],
                "usage": usage,
            }
        )

    async def _openai_stream(
        self,
        request: web.Request,
        completion_id: str,
        obj: str,
        created: int,
        deployment: str,
        body: dict[str, Any],
        choices: list[dict[str, Any]],
        usage: dict[str, int],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": completion_id, "object": obj, "created": created, "model": deployment}
        for choice in choices:
            await response.write(b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n")
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            chunk = {**base, "choices": [], "usage": usage}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _anthropic_answer(
        self, request: web.Request, deployment: str, body: dict[str, Any], answer: str
    ) -> web.StreamResponse:
        usage = {
            "input_tokens": _word_count(*_anthropic_prompt_texts(body)),
            "output_tokens": _word_count(answer),
        }
        message: dict[str, Any] = {
            "id": f"msg_{_request_id()[:24]}",
            "type": "message",
            "role": "assistant",
            "model": deployment,
            "content": [{"type": "text", "text": answer}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        if body.get("stream") is not True:
            return _json(message)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 0},
        }
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": answer},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        for name, data in events:
            await response.write(
                f"event: {name}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"
            )
        await response.write_eof()
        return response

    async def _ollama_answer(
        self,
        request: web.Request,
        flavor: Flavor,
        deployment: str,
        body: dict[str, Any],
        answer: str,
        prompt_tokens: int,
        latency_ms: int,
    ) -> web.StreamResponse:
        created_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        duration_ns = latency_ms * 1_000_000
        final: dict[str, Any] = {
            "model": deployment,
            "created_at": created_at,
            "done": True,
            "done_reason": "stop",
            "total_duration": duration_ns,
            "load_duration": 0,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": 0,
            "eval_count": _word_count(answer),
            "eval_duration": duration_ns,
        }
        if flavor == "ollama_chat":
            content_part: dict[str, Any] = {"message": {"role": "assistant", "content": answer}}
            empty_part: dict[str, Any] = {"message": {"role": "assistant", "content": ""}}
        else:
            content_part = {"response": answer}
            empty_part = {"response": ""}
        # Ollama streams unless told `"stream": false`; a client that forgets it must see that.
        if body.get("stream", True) is False:
            return _json({"model": deployment, "created_at": created_at, **content_part, **final})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        first = {"model": deployment, "created_at": created_at, **content_part, "done": False}
        await response.write(orjson.dumps(first) + b"\n")
        await response.write(orjson.dumps({**final, **empty_part}) + b"\n")
        await response.write_eof()
        return response

    def _error(
        self, flavor: Flavor, status: int, message: str, retry_after: float | None = None
    ) -> web.Response:
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = _format_seconds(retry_after)
            # Azure sends the millisecond form too, and the openai SDK prefers it.
            headers["retry-after-ms"] = str(int(retry_after * 1000))
        if flavor == "bedrock":
            return self._bedrock_error(status, message, headers=headers)
        if flavor == "anthropic":
            kind = _ANTHROPIC_ERROR_TYPES.get(
                status, "api_error" if status >= 500 else "invalid_request_error"
            )
            error = {"type": "error", "error": {"type": kind, "message": message}}
            return _json(error, status, headers)
        if flavor in ("ollama_chat", "ollama_generate"):
            return _json({"error": message}, status, headers)
        error_type, code = _OPENAI_ERROR_TYPES.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        payload = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
        return _json(payload, status, headers)

    @staticmethod
    def _bedrock_error(
        status: int,
        message: str,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        if error_type is None:
            fallback = "InternalServerException" if status >= 500 else "ValidationException"
            error_type = _BEDROCK_ERROR_TYPES.get(status, fallback)
        all_headers = {
            **(headers or {}),
            "x-amzn-ErrorType": error_type,
            "x-amzn-RequestId": str(uuid.uuid4()),
        }
        return _json({"message": message}, status, all_headers)


def _parse_credentials(values: list[str]) -> dict[str, str] | None:
    credentials: dict[str, str] = {}
    for value in values:
        access_key, sep, secret = value.partition(":")
        if not sep or not access_key or not secret:
            raise SystemExit(f"--bedrock-credential expects ACCESS_KEY_ID:SECRET, got {value!r}")
        credentials[access_key] = secret
    return credentials or None


async def _serve_forever(args: argparse.Namespace) -> None:
    server = FakeLLMServer(
        args.host,
        args.port,
        seed=args.seed,
        bedrock_credentials=_parse_credentials(args.bedrock_credential),
    )
    server.script(
        DEFAULT_SCRIPT,
        answers=args.answers.split(",") if args.answers else None,
        answer=args.answer,
        latency=args.latency,
        error_rate=args.error_rate,
        error_status=args.error_status,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(f"fake LLM server listening on {args.host}:{server.port}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m worker.fake_llm",
        description="Fake OpenAI / Azure / Ollama / Bedrock / Anthropic LLM server with scripted "
        "answers.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--answer", default="A", help="answer of every deployment")
    parser.add_argument("--answers", default="", help="comma-separated answers, cycled")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds from a request's arrival to its answer"
    )
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--error-status", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--bedrock-credential",
        action="append",
        default=[],
        metavar="ACCESS_KEY_ID:SECRET",
        help="check Bedrock SigV4 signatures against these credentials (repeatable)",
    )
    eventloop.run(_serve_forever(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
