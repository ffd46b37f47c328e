"""The fake LLM server speaks each provider's real wire format, proven with the real clients."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import botocore.session
import openai
import pytest
import yarl
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from worker.fake_llm import DEFAULT_SCRIPT, FakeLLMServer

BEDROCK_KEY = "AKIDFAKE0000000000"
BEDROCK_SECRET = "fake-secret-key/with+chars"
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(seed=7, bedrock_credentials={BEDROCK_KEY: BEDROCK_SECRET}) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def openai_client(server: FakeLLMServer) -> openai.AsyncOpenAI:
    # No SDK retries: every test counts the calls the server saw.
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="test", max_retries=0)


async def chat(client: openai.AsyncOpenAI, model: str, text: str = "hello there") -> str | None:
    response = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=1
    )
    return response.choices[0].message.content


async def test_url_is_loopback_with_the_bound_port(server: FakeLLMServer) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    assert int(server.url.rsplit(":", 1)[1]) == server.port > 0


async def test_openai_sdk_accepts_chat_completions(server: FakeLLMServer) -> None:
    server.script("gpt-4o-mini", answer="C")
    async with openai_client(server) as client:
        response = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": "answer with one letter"},
                {"role": "user", "content": "I want to send money"},
            ],
            max_tokens=1,
            temperature=0.0,
        )
    assert response.object == "chat.completion"
    assert response.model == "gpt-4o-mini"
    assert response.choices[0].message.content == "C"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.prompt_tokens == 9  # words of both messages: stable, not exact
    assert response.usage.completion_tokens == 1
    assert response.usage.total_tokens == 10
    [request] = server.requests
    assert request.deployment == "gpt-4o-mini"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test"
    assert request.body["max_tokens"] == 1
    assert server.count("gpt-4o-mini") == 1


async def test_openai_sdk_accepts_text_completions(server: FakeLLMServer) -> None:
    server.script("my-vllm-model", answer="B")
    async with openai_client(server) as client:
        response = await client.completions.create(
            model="my-vllm-model", prompt="Route this: hi", max_tokens=1
        )
    assert response.object == "text_completion"
    assert response.choices[0].text == "B"
    assert response.usage is not None and response.usage.prompt_tokens == 3
    assert server.requests[0].path == "/v1/completions"


async def test_paths_without_v1_prefix(server: FakeLLMServer, http: aiohttp.ClientSession) -> None:
    server.script("proxy-model", answer="B")
    async with openai.AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0) as client:
        assert await chat(client, "proxy-model") == "B"
    async with http.post(
        server.url + "/completions", json={"model": "proxy-model", "prompt": "x"}
    ) as response:
        assert response.status == 200
        assert (await response.json())["choices"][0]["text"] == "B"
    assert [r.path for r in server.requests] == ["/chat/completions", "/completions"]


async def test_openai_sdk_streaming(server: FakeLLMServer) -> None:
    server.script("gpt-4o", answer="B")
    async with openai_client(server) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        usage_seen = False
        async for chunk in stream:
            parts.extend(choice.delta.content or "" for choice in chunk.choices)
            usage_seen = usage_seen or chunk.usage is not None
    assert "".join(parts) == "B"
    assert usage_seen


async def test_azure_sdk_accepts_chat_and_text_completions(server: FakeLLMServer) -> None:
    server.script("gpt-4o-mini-fr", answer="C")
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=server.url, api_version="2024-06-01", api_key="k", max_retries=0
    ) as client:
        response = await client.chat.completions.create(
            model="gpt-4o-mini-fr", messages=[{"role": "user", "content": "bonjour"}]
        )
        assert response.choices[0].message.content == "C"
        text = await client.completions.create(model="gpt-4o-mini-fr", prompt="bonjour")
        assert text.choices[0].text == "C"
    chat_request, text_request = server.requests
    assert chat_request.deployment == "gpt-4o-mini-fr"
    assert chat_request.path == (
        "/openai/deployments/gpt-4o-mini-fr/chat/completions?api-version=2024-06-01"
    )
    assert chat_request.headers["api-key"] == "k"
    assert text_request.path.startswith("/openai/deployments/gpt-4o-mini-fr/completions?")


async def test_azure_requires_api_key_and_api_version(
    server: FakeLLMServer, http: aiohttp.ClientSession
) -> None:
    path = server.url + "/openai/deployments/dep/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    async with http.post(path, params={"api-version": "2024-06-01"}, json=body) as response:
        assert response.status == 401
        assert "message" in (await response.json())["error"]
    async with http.post(path, headers={"api-key": "k"}, json=body) as response:
        assert response.status == 400
        assert "api-version" in (await response.json())["error"]["message"]
    async with http.post(
        path, params={"api-version": "2024-06-01"}, headers={"api-key": "k"}, json=body
    ) as response:
        assert response.status == 200
        assert (await response.json())["model"] == "dep"


async def test_unscripted_answers_a_and_clear_restores_defaults(server: FakeLLMServer) -> None:
    async with openai_client(server) as client:
        assert await chat(client, "never-scripted") == "A"
        server.script("m", answer="C")
        assert await chat(client, "m") == "C"
        server.clear("m")
        assert await chat(client, "m") == "A"
        server.script(DEFAULT_SCRIPT, answer="B")
        server.script("own", answer="C")
        assert await chat(client, "never-scripted") == "B"
        assert await chat(client, "own") == "C"
        server.clear()
        assert await chat(client, "never-scripted") == "A"
        assert await chat(client, "own") == "A"


async def test_scripted_answers_cycle_in_order(server: FakeLLMServer) -> None:
    server.script("m", answers=["A", "B", "C"])
    async with openai_client(server) as client:
        got = [await chat(client, "m") for _ in range(5)]
    assert got == ["A", "B", "C", "A", "B"]


async def test_429_with_retry_after(server: FakeLLMServer, http: aiohttp.ClientSession) -> None:
    server.script("busy", status=429, retry_after=3)
    body = {"model": "busy", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(server.url + "/v1/chat/completions", json=body) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "3"
        error = (await response.json())["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert set(error) >= {"message", "type", "code"}
    async with openai_client(server) as client:
        with pytest.raises(openai.RateLimitError) as raised:
            await chat(client, "busy")
    assert raised.value.response.headers["retry-after"] == "3"


async def test_status_without_retry_after_has_no_header(
    server: FakeLLMServer, http: aiohttp.ClientSession
) -> None:
    server.script("broken", status=500)
    server.script("bad", status=400)
    async with openai_client(server) as client:
        with pytest.raises(openai.InternalServerError):
            await chat(client, "broken")
        with pytest.raises(openai.BadRequestError):
            await chat(client, "bad")
    body = {"model": "broken", "messages": []}
    async with http.post(server.url + "/v1/chat/completions", json=body) as response:
        assert response.status == 500
        assert "Retry-After" not in response.headers
        assert (await response.json())["error"]["type"] == "server_error"


async def error_pattern(server: FakeLLMServer, http: aiohttp.ClientSession, n: int) -> list[int]:
    body = {"model": "flaky", "messages": [{"role": "user", "content": "hi"}]}
    statuses = []
    for _ in range(n):
        async with http.post(server.url + "/v1/chat/completions", json=body) as response:
            statuses.append(response.status)
    return statuses


async def test_error_rate_is_respected_and_seeded(http: aiohttp.ClientSession) -> None:
    patterns = []
    for seed in (1, 1, 2):
        async with FakeLLMServer(seed=seed) as fake:
            fake.script("flaky", error_rate=0.25, error_status=503)
            patterns.append(await error_pattern(fake, http, 200))
    first, again, other_seed = patterns
    assert set(first) == {200, 503}
    assert 30 <= first.count(503) <= 70  # 50 expected
    assert first == again
    assert first != other_seed


async def test_error_rate_zero_and_one(server: FakeLLMServer, http: aiohttp.ClientSession) -> None:
    server.script("flaky", error_rate=1.0, error_status=502)
    assert set(await error_pattern(server, http, 10)) == {502}
    server.script("flaky", error_rate=0.0)
    assert set(await error_pattern(server, http, 10)) == {200}


async def test_hang_is_a_client_timeout(server: FakeLLMServer, http: aiohttp.ClientSession) -> None:
    server.script("stuck", hang=True)
    body = {"model": "stuck", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            server.url + "/v1/chat/completions",
            json=body,
            timeout=aiohttp.ClientTimeout(total=0.3),
        ):
            pass
    assert server.count("stuck") == 1
    assert server.max_in_flight["stuck"] == 1
    # The client gave up: the server notices the disconnect and the call is no longer in flight.
    await server.wait_until(lambda: server.in_flight["stuck"] == 0)


async def test_openai_sdk_times_out_on_hang(server: FakeLLMServer) -> None:
    server.script("stuck", hang=True)
    async with openai.AsyncOpenAI(
        base_url=server.url + "/v1", api_key="t", max_retries=0, timeout=0.3
    ) as client:
        with pytest.raises(openai.APITimeoutError):
            await chat(client, "stuck")


async def test_stop_releases_hanging_requests(http: aiohttp.ClientSession) -> None:
    fake = FakeLLMServer()
    await fake.start()
    fake.script("stuck", hang=True)
    body = {"model": "stuck", "messages": []}

    async def call() -> int:
        async with http.post(fake.url + "/v1/chat/completions", json=body) as response:
            return response.status

    pending = asyncio.create_task(call())
    await fake.wait_until(lambda: fake.in_flight["stuck"] == 1)
    async with asyncio.timeout(5):
        await fake.stop()
    try:
        status = await asyncio.wait_for(pending, 5)
    except aiohttp.ClientError:
        status = 0  # connection closed by the stopping server: also a release
    assert status in (0, 503)


async def test_latency_holds_calls_in_flight_together(server: FakeLLMServer) -> None:
    server.script("slow", latency=0.5, answer="B")
    server.script("fast", answer="B")
    async with openai_client(server) as client:
        slow = await asyncio.gather(*(chat(client, "slow") for _ in range(5)))
        fast = await asyncio.gather(*(chat(client, "fast") for _ in range(5)))
    assert slow == fast == ["B"] * 5
    assert server.max_in_flight["slow"] == 5
    # Without latency a call never yields while in flight, so calls cannot overlap.
    assert server.max_in_flight["fast"] == 1
    assert server.in_flight["slow"] == server.in_flight["fast"] == 0


async def test_every_request_takes_its_connections_arrival_stamp(
    server: FakeLLMServer, http: aiohttp.ClientSession
) -> None:
    # Latency counts from a request's arrival. Requests that end early (errors, health) take
    # their stamp too, so the next request on the same keep-alive connection gets its own.
    server.script("slow", latency=0.05, answer="B")
    url = server.url + "/v1/chat/completions"
    bodies: tuple[dict[str, Any] | bytes, ...] = (
        {"messages": []},
        b"not json",
        {"model": "slow", "messages": []},
    )
    for body in bodies:
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        async with http.post(url, **kwargs) as response:
            await response.read()
    async with http.get(server.url + "/health") as response:
        assert response.status == 200
    async with http.post(url, json={"model": "slow", "messages": []}) as response:
        assert (await response.json())["choices"][0]["message"]["content"] == "B"
    assert server._arrivals == {} and server._arrived == {}


async def test_wait_for_requests(server: FakeLLMServer) -> None:
    server.script("slow", latency=30)
    async with openai_client(server) as client:
        calls = [asyncio.create_task(chat(client, "slow")) for _ in range(3)]
        await server.wait_for_requests(3, deployment="slow")
        await server.wait_until(lambda: server.in_flight["slow"] == 3)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
    await server.wait_until(lambda: server.in_flight["slow"] == 0)
    with pytest.raises(TimeoutError):
        await server.wait_for_requests(4, deployment="slow", timeout=0.05)


async def test_ollama_chat_and_generate(server: FakeLLMServer, http: aiohttp.ClientSession) -> None:
    server.script("llama3.1:8b", answers=["C", "B"])
    chat_body = {
        "model": "llama3.1:8b",
        "messages": [{"role": "user", "content": "hi there"}],
        "stream": False,
        "options": {"temperature": 0.0, "num_predict": 1},
    }
    async with http.post(server.url + "/api/chat", json=chat_body) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["model"] == "llama3.1:8b"
    assert answer["message"] == {"role": "assistant", "content": "C"}
    assert answer["done"] is True
    assert answer["created_at"].endswith("Z")
    assert answer["prompt_eval_count"] == 2
    generate_body = {"model": "llama3.1:8b", "prompt": "hi", "stream": False}
    async with http.post(server.url + "/api/generate", json=generate_body) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["response"] == "B"
    assert answer["done"] is True
    assert [r.path for r in server.requests] == ["/api/chat", "/api/generate"]


async def test_ollama_streams_unless_told_not_to(
    server: FakeLLMServer, http: aiohttp.ClientSession
) -> None:
    server.script("llama3", answer="B")
    body = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(server.url + "/api/chat", json=body) as response:
        assert response.content_type == "application/x-ndjson"
        lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert "".join(line["message"]["content"] for line in lines) == "B"
    assert [line["done"] for line in lines] == [False, True]


async def test_ollama_error_format(server: FakeLLMServer, http: aiohttp.ClientSession) -> None:
    server.script("llama3", status=500)
    body = {"model": "llama3", "prompt": "hi", "stream": False}
    async with http.post(server.url + "/api/generate", json=body) as response:
        assert response.status == 500
        assert isinstance((await response.json())["error"], str)


def bedrock_client(server: FakeLLMServer, secret: str = BEDROCK_SECRET) -> Any:
    return botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name="eu-central-1",
        endpoint_url=server.url,
        aws_access_key_id=BEDROCK_KEY,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}),
    )


def converse(client: Any) -> dict[str, Any]:
    result: dict[str, Any] = client.converse(
        modelId=BEDROCK_MODEL,
        messages=[{"role": "user", "content": [{"text": "send money"}]}],
        system=[{"text": "answer A B or C"}],
        inferenceConfig={"maxTokens": 1, "temperature": 0.0},
    )
    return result


async def test_bedrock_converse_with_botocore_client(server: FakeLLMServer) -> None:
    server.script(BEDROCK_MODEL, answer="C")
    result = await asyncio.to_thread(converse, bedrock_client(server))
    assert result["output"]["message"] == {"role": "assistant", "content": [{"text": "C"}]}
    assert result["stopReason"] == "end_turn"
    assert result["usage"] == {"inputTokens": 7, "outputTokens": 1, "totalTokens": 8}
    assert "latencyMs" in result["metrics"]
    [request] = server.requests
    assert request.deployment == BEDROCK_MODEL
    assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFAKE")
    assert "/eu-central-1/bedrock/aws4_request" in request.headers["authorization"]


async def test_bedrock_wrong_secret_is_403(server: FakeLLMServer) -> None:
    with pytest.raises(ClientError) as raised:
        await asyncio.to_thread(converse, bedrock_client(server, secret="not-the-secret"))
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "InvalidSignatureException"
    assert "signature" in error["Error"]["Message"]


async def test_bedrock_throttling_is_parsed_by_botocore(server: FakeLLMServer) -> None:
    server.script(BEDROCK_MODEL, status=429, retry_after=2)
    with pytest.raises(ClientError) as raised:
        await asyncio.to_thread(converse, bedrock_client(server))
    error = raised.value.response
    assert error["Error"]["Code"] == "ThrottlingException"
    assert error["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "2"


def signed(
    server: FakeLLMServer, body: bytes, *, key: str = BEDROCK_KEY, secret: str = BEDROCK_SECRET
) -> tuple[str, dict[str, str]]:
    url = f"{server.url}/model/{quote(BEDROCK_MODEL, safe='')}/converse"
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(Credentials(key, secret), "bedrock", "us-east-1").add_auth(request)
    prepared = request.prepare()
    return prepared.url, dict(prepared.headers.items())


async def post_raw(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes
) -> tuple[int, str, dict[str, Any]]:
    # encoded=True: the URL goes out byte for byte as it was signed.
    async with http.post(yarl.URL(url, encoded=True), headers=headers, data=body) as response:
        return response.status, response.headers.get("x-amzn-ErrorType", ""), await response.json()


async def test_bedrock_sigv4_signed_request_is_accepted_and_tampering_is_not(
    server: FakeLLMServer, http: aiohttp.ClientSession
) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode()
    url, headers = signed(server, body)
    status, _, answer = await post_raw(http, url, headers, body)
    assert status == 200
    assert answer["output"]["message"]["content"] == [{"text": "A"}]
    assert server.requests[-1].deployment == BEDROCK_MODEL

    tampered = body.replace(b"hi", b"ho")
    status, error_type, answer = await post_raw(http, url, headers, tampered)
    assert (status, error_type) == (403, "InvalidSignatureException")
    assert "message" in answer

    url, headers = signed(server, body, secret="wrong")
    status, error_type, _ = await post_raw(http, url, headers, body)
    assert (status, error_type) == (403, "InvalidSignatureException")

    url, headers = signed(server, body, key="AKIDUNKNOWN")
    status, error_type, _ = await post_raw(http, url, headers, body)
    assert (status, error_type) == (403, "UnrecognizedClientException")

    status, error_type, _ = await post_raw(http, url, {"Content-Type": "application/json"}, body)
    assert (status, error_type) == (403, "MissingAuthenticationTokenException")


async def test_bedrock_without_credentials_skips_signature_checks(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeLLMServer() as fake:
        body = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
        async with http.post(fake.url + "/model/any-model/converse", json=body) as response:
            assert response.status == 200
        assert fake.count("any-model") == 1


async def test_standalone_main(http: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.fake_llm",
        "--port",
        "0",
        "--answer",
        "C",
        "--latency",
        "0.01",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert "listening on 127.0.0.1:" in line
        port = int(line.rsplit(":", 1)[1])
        body = {"model": "whatever", "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as response:
            assert (await response.json())["choices"][0]["message"]["content"] == "C"
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_responder_answers_unscripted_deployments_from_the_prompt(
    http: aiohttp.ClientSession,
) -> None:
    prompts: list[str] = []

    def responder(prompt: str) -> str:
        prompts.append(prompt)
        return "C" if "card" in prompt else "B"

    async with FakeLLMServer(responder=responder) as fake:
        fake.script("scripted", answer="A")
        async with openai_client(fake) as client:
            response = await client.chat.completions.create(
                model="any",
                messages=[
                    {"role": "system", "content": "route it"},
                    {"role": "user", "content": "I lost my card"},
                ],
            )
            assert response.choices[0].message.content == "C"
            assert await chat(client, "any", "hello") == "B"
            assert await chat(client, "scripted", "my card") == "A"  # a script wins
        body = {"model": "llama3", "prompt": "card?", "stream": False}
        async with http.post(fake.url + "/api/generate", json=body) as answer:
            assert (await answer.json())["response"] == "C"
        fake.script(DEFAULT_SCRIPT, answer="A")
        async with openai_client(fake) as client:
            assert await chat(client, "any", "my card") == "A"
    assert prompts == ["route it\nI lost my card", "hello", "card?"]


async def test_anthropic_messages_api(server: FakeLLMServer, http: aiohttp.ClientSession) -> None:
    # https://docs.anthropic.com/en/api/messages: what litellm's anthropic provider calls
    # (tests/integration/test_llm_litellm.py runs litellm's own client against it).
    server.script("claude-3-5-haiku", answer="B")
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = {
        "model": "claude-3-5-haiku",
        "max_tokens": 1,
        "system": [{"type": "text", "text": "route"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    }
    async with http.post(f"{server.url}/v1/messages", json=body, headers=headers) as response:
        assert response.status == 200
        message = await response.json()
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": "B"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"] == {"input_tokens": 3, "output_tokens": 1}
    async with http.post(
        f"{server.url}/v1/messages", json={**body, "stream": True}, headers=headers
    ) as response:
        events = [
            line for line in (await response.text()).splitlines() if line.startswith("event:")
        ]
    assert events == [
        "event: message_start",
        "event: content_block_start",
        "event: content_block_delta",
        "event: content_block_stop",
        "event: message_delta",
        "event: message_stop",
    ]
    for missing, status in (("x-api-key", 401), ("anthropic-version", 400)):
        short = {k: v for k, v in headers.items() if k != missing}
        async with http.post(f"{server.url}/v1/messages", json=body, headers=short) as response:
            assert response.status == status
            error = await response.json()
        assert error["type"] == "error" and error["error"]["message"]
    server.script("claude-3-5-haiku", status=529)
    async with http.post(f"{server.url}/v1/messages", json=body, headers=headers) as response:
        assert response.status == 529
        assert (await response.json())["error"]["type"] == "overloaded_error"
