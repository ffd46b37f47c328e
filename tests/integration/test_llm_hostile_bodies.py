"""Deployments that answer too much, or too deep: a gzip bomb, a 100 MiB body (directly and through
a proxy), JSON nested past any parser's depth. Each call fails as an ordinary failure of that
deployment (the gateway fails over), and costs bounded memory: the tracemalloc peak of the call
stays near the one size bound (MAX_BODY, after decoding), far below what the peer sent."""

from __future__ import annotations

import asyncio
import functools
import zlib
from typing import Any

import pytest

from tests.hostile_http import (
    ForwardProxy,
    MiB,
    allocation_peak,
    fail_over_once,
    loopback_server,
    on_each_loop,
    post_once,
    read_request,
    write_repeated,
)
from worker.fake_llm import FakeLLMServer
from worker.llm.body import MAX_BODY
from worker.llm.errors import AttemptsExhausted
from worker.llm.gateway import ModelGroupGateway
from worker.llm.http import UnusableAnswer
from worker.llm.model_group import ModelGroup

KEY = "sk-hostile-bodies-5e1f0a2b"
SENT = 100 * MiB  # what each hostile peer sends (or inflates to)
BOUND = MAX_BODY + 16 * MiB  # a bounded call's peak: the body bound, buffers; far below SENT


@functools.cache
def gzip_bomb() -> bytes:
    """100 MiB of zeros, gzip-compressed to about 100 KB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MiB)
    return b"".join([*(compressor.compress(zeros) for _ in range(SENT // MiB)), compressor.flush()])


async def answer_bomb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    bomb = gzip_bomb()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(bomb), bomb)
    )
    await writer.drain()
    writer.close()


async def answer_100_mib_chunked(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (MiB, b"x" * MiB)
    await write_repeated(writer, chunk, SENT // MiB * len(chunk))
    writer.close()


async def answer_100_mib_until_close(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
    await write_repeated(writer, b"x" * MiB, SENT)
    writer.close()


def url_of(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/chat/completions"


async def _a_gzip_bomb_stops_at_the_bound() -> None:
    async with loopback_server(answer_bomb) as port:
        gzip_bomb()  # compressed before measuring
        with allocation_peak() as peak, pytest.raises(UnusableAnswer, match="larger than"):
            await post_once(url_of(port))
    assert peak.bytes < BOUND


test_a_gzip_bomb_stops_at_the_bound = on_each_loop(_a_gzip_bomb_stops_at_the_bound)


async def _a_100_mib_body_stops_at_the_bound() -> None:
    for answer in (answer_100_mib_chunked, answer_100_mib_until_close):
        async with loopback_server(answer) as port:
            with allocation_peak() as peak, pytest.raises(UnusableAnswer, match="larger than"):
                await post_once(url_of(port))
        assert peak.bytes < BOUND, answer.__name__


test_a_100_mib_body_stops_at_the_bound = on_each_loop(_a_100_mib_body_stops_at_the_bound)


async def _a_declared_100_mib_body_is_refused_before_it_is_read() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SENT)
        await write_repeated(writer, b"x" * MiB, SENT)
        writer.close()

    async with loopback_server(answer) as port:
        with allocation_peak() as peak, pytest.raises(UnusableAnswer, match="larger than"):
            await post_once(url_of(port))
    assert peak.bytes < 4 * MiB  # nothing of the body was kept


test_a_declared_100_mib_body_is_refused_before_it_is_read = on_each_loop(
    _a_declared_100_mib_body_is_refused_before_it_is_read
)


async def test_the_gateway_fails_over_from_a_gzip_bomb(fake: FakeLLMServer) -> None:
    fake.script("healthy", answer="B")
    gzip_bomb()
    completion, peak = await fail_over_once(answer_bomb, fake, KEY)
    assert (completion.text, completion.deployment, completion.attempts) == ("B", "healthy", 2)
    assert peak.bytes < BOUND


def deeply_nested(depth: int) -> bytes:
    return b'{"choices":' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("status", [200, 500])
async def test_deeply_nested_json_fails_over_to_another_deployment(
    fake: FakeLLMServer, status: int
) -> None:
    # Deeper than orjson's limit (1024) and than json's recursion: both parsers refuse it, one
    # with its own error, the other with RecursionError; either is an unreadable answer.
    body = deeply_nested(200_000)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 %d Whatever\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"\r\n%s" % (status, len(body), body)
        )
        await writer.drain()
        writer.close()

    fake.script("healthy", answer="C")
    completion, peak = await fail_over_once(answer, fake, KEY)
    assert (completion.text, completion.deployment, completion.attempts) == ("C", "healthy", 2)
    assert peak.bytes < 16 * MiB


@pytest.mark.parametrize(
    "answer",
    [answer_bomb, answer_100_mib_chunked, answer_100_mib_until_close],
    ids=lambda a: a.__name__,
)
async def test_the_proxy_path_has_the_same_bound(answer: Any) -> None:
    # A deployment behind HTTP_PROXY (aiohttp) reads no more than one reached directly.
    proxy = ForwardProxy()
    gzip_bomb()
    async with loopback_server(answer) as origin, loopback_server(proxy.handle) as proxy_port:
        group = ModelGroup.model_validate(
            {
                "id": "proxied",
                "models": [
                    {
                        "provider": "openai",
                        "model": "m",
                        "api_base": f"http://127.0.0.1:{origin}/v1",
                        "api_key": KEY,
                    }
                ],
                "router": {"num_retries": 0},
            }
        )
        environ = {"HTTP_PROXY": f"http://127.0.0.1:{proxy_port}"}
        async with ModelGroupGateway(group, environ=environ) as gateway:
            with allocation_peak() as peak, pytest.raises(AttemptsExhausted) as failed:
                await gateway.complete("hi")
    assert "larger than" in str(failed.value)
    assert proxy.heads[0].startswith(
        f"POST http://127.0.0.1:{origin}/v1/chat/completions HTTP/1.1\r\n".encode()
    )
    assert b"Accept-Encoding: gzip, identity\r\n" in proxy.heads[0]
    assert peak.bytes < BOUND
