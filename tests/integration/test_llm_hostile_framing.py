"""Deployments whose answers are framed badly or unusually: a reset mid-body, LF-only line endings,
Transfer-Encoding: identity, content codings nobody asked for, redirects (same origin, another
origin, a loop). Each is parsed or fails at once (never waits for the deadline, never returns a
shorter answer as a success), the gateway fails over where it fails, and the call's memory stays
small (tracemalloc peak)."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from tests.hostile_http import (
    MiB,
    StreamHandler,
    allocation_peak,
    fail_over_once,
    loopback_server,
    on_each_loop,
    post_once,
    read_request,
    reset,
)
from worker.fake_llm import FakeLLMServer
from worker.llm.errors import HttpError, HttpTimeout
from worker.llm.http import HttpResponse, UnusableAnswer

KEY = "sk-hostile-framing-77aa01"
SMALL = 2 * MiB  # the peak of a call whose answer is small, however it is framed
WAIT = 30.0  # the deadline of calls that must fail at once: a hang would end as HttpTimeout


def url_of(port: int, path: str = "/v1/chat/completions") -> str:
    return f"http://127.0.0.1:{port}{path}"


async def post_to(port: int) -> HttpResponse:
    return await post_once(url_of(port), {"Authorization": f"Bearer {KEY}"}, timeout=WAIT)


def answering(*answers: bytes, then_reset: bool = False, linger: bool = False) -> StreamHandler:
    """A handler writing `answers` (one per request on the connection), then closing it; with
    `then_reset`, the last one is cut by a reset instead of a clean close; with `linger`, the
    connection stays open until the client closes it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()
        if then_reset:
            reset(writer)
            return
        if linger:
            await reader.read()
        writer.close()

    return handle


# ---- a reset mid-body ----------------------------------------------------------------------------

HALF_A_BODY = b'{"choices":[{"message":{"content":"A"' + b" " * 4000


async def _a_reset_mid_body_is_an_error_whatever_the_framing() -> None:
    heads = {
        "close-delimited": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n",
        "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 9000\r\n\r\n",
        "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % 9000,
    }
    for framing, head in heads.items():
        async with loopback_server(answering(head + HALF_A_BODY, then_reset=True)) as port:
            with allocation_peak() as peak, pytest.raises(HttpError, match="lost") as raised:
                await post_to(port)
        assert not isinstance(raised.value, TimeoutError), framing
        assert raised.value.elapsed > 0
        assert peak.bytes < SMALL, framing


test_a_reset_mid_body_is_an_error_whatever_the_framing = on_each_loop(
    _a_reset_mid_body_is_an_error_whatever_the_framing
)


async def _a_close_delimited_gzip_body_cut_short_is_an_error() -> None:
    # A clean close ends a close-delimited body (HTTP/1.0's framing): only the coding can tell
    # that it ended early, and it does.
    coded = gzip.compress(b'{"choices":[{"message":{"content":"A"}}]}' + b" " * 5000)
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n"
    async with loopback_server(answering(head + coded[: len(coded) // 2])) as port:
        with allocation_peak() as peak, pytest.raises(UnusableAnswer, match="truncated gzip"):
            await post_to(port)
    assert peak.bytes < SMALL


test_a_close_delimited_gzip_body_cut_short_is_an_error = on_each_loop(
    _a_close_delimited_gzip_body_cut_short_is_an_error
)


async def test_the_gateway_never_takes_a_body_cut_by_a_reset_for_an_answer(
    fake: FakeLLMServer,
) -> None:
    # The cut body is valid JSON up to the cut: read to the end of the connection, it would be
    # a successful "A".
    cut = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"A"}}]}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
    fake.script("healthy", answer="C")
    completion, peak = await fail_over_once(answering(head + cut, then_reset=True), fake, KEY)
    assert (completion.text, completion.deployment, completion.attempts) == ("C", "healthy", 2)
    assert peak.bytes < SMALL


# ---- LF-only line endings, Transfer-Encoding: identity -------------------------------------------


async def _lf_only_heads_are_read_and_lf_only_chunks_fail_at_once() -> None:
    # The openai SDK's parser (h11) reads an LF-only head, and waits forever on LF-only chunk
    # lines; llhttp with optional CRs reads the head too, and refuses the chunks at once.
    head_only = b'HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: 7\n\n{"a":1}'
    async with loopback_server(answering(head_only)) as port:
        with allocation_peak() as peak:
            response = await post_to(port)
    assert (response.status, response.body) == (200, b'{"a":1}')
    assert response.headers["content-type"] == "application/json"
    assert peak.bytes < SMALL

    chunks = b'HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n7\n{"a":1}\n0\n\n'
    async with loopback_server(answering(chunks)) as port:
        with allocation_peak() as peak, pytest.raises(UnusableAnswer, match="malformed"):
            await post_to(port)
    assert peak.bytes < SMALL


test_lf_only_heads_are_read_and_lf_only_chunks_fail_at_once = on_each_loop(
    _lf_only_heads_are_read_and_lf_only_chunks_fail_at_once
)


async def _transfer_encoding_identity_is_read_to_the_end_of_the_connection() -> None:
    identity = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n{"a":1}'
    async with loopback_server(answering(identity)) as port:
        with allocation_peak() as peak:
            response = await post_to(port)
    assert (response.status, response.body) == (200, b'{"a":1}')
    assert peak.bytes < SMALL
    # With a Content-Length beside it (a smuggling shape), or a coding that is not framing:
    # refused at once.
    for answer in (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 7\r\n\r\n{"a":1}',
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n{"a":1}',
    ):
        async with loopback_server(answering(answer)) as port:
            with pytest.raises(UnusableAnswer):
                await post_to(port)


test_transfer_encoding_identity_is_read_to_the_end_of_the_connection = on_each_loop(
    _transfer_encoding_identity_is_read_to_the_end_of_the_connection
)


# ---- content codings -----------------------------------------------------------------------------


async def _codings_we_did_not_ask_for_are_refused_before_their_body() -> None:
    requests: list[bytes] = []

    def coded(coding: bytes) -> StreamHandler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            requests.append(await read_request(reader))
            # The body never ends: only refusing at the head can end the call before WAIT.
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\n\r\n\x28\xb5\x2f\xfd" % coding
            )
            await writer.drain()
            await reader.read()
            writer.close()

        return handle

    for coding in (b"br", b"zstd", b"gzip, br", b"compress"):
        async with loopback_server(coded(coding)) as port:
            with allocation_peak() as peak, pytest.raises(UnusableAnswer) as raised:
                await post_to(port)
        assert "unsupported Content-Encoding" in str(raised.value)
        assert repr(coding.decode().split(", ")[-1]) in str(raised.value)
        assert peak.bytes < SMALL
    assert all(b"\r\nAccept-Encoding: gzip, identity\r\n" in r for r in requests)


test_codings_we_did_not_ask_for_are_refused_before_their_body = on_each_loop(
    _codings_we_did_not_ask_for_are_refused_before_their_body
)


# ---- redirects -----------------------------------------------------------------------------------


async def _a_same_origin_redirect_is_followed_as_the_openai_sdk_follows_it() -> None:
    # httpx (the openai SDK's client, follow_redirects=True): 307/308 repeat the POST with its
    # body; 301/302/303 turn it into a GET without one; credentials stay within the origin.
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            seen.append(request)
            path = request.split(b" ", 2)[1]
            if path == b"/v1/chat/completions":
                answer = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /v2/chat?x=1\r\n"
            elif path == b"/v2/chat?x=1":
                answer = (
                    b"HTTP/1.1 303 See Other\r\nLocation: http://127.0.0.1:%d/result\r\n"
                    % (writer.get_extra_info("sockname")[1])
                )
            else:
                answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                answer += b'Content-Length: 9\r\n\r\n{"ok":1}\n'
                writer.write(answer)
                await writer.drain()
                continue
            writer.write(answer + b"Content-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    async with loopback_server(handle) as port:
        with allocation_peak() as peak:
            response = await post_to(port)
    assert (response.status, response.body) == (200, b'{"ok":1}\n')
    lines = [r.split(b"\r\n", 1)[0] for r in seen]
    assert lines == [
        b"POST /v1/chat/completions HTTP/1.1",
        b"POST /v2/chat?x=1 HTTP/1.1",
        b"GET /result HTTP/1.1",
    ]
    assert seen[1].endswith(b'\r\n\r\n{"a":1}')  # 307: the same body
    assert b"Content-Length" not in seen[2] and seen[2].endswith(b"\r\n\r\n")  # 303: none
    assert all(f"Authorization: Bearer {KEY}".encode() in r for r in seen)
    assert peak.bytes < SMALL


test_a_same_origin_redirect_is_followed_as_the_openai_sdk_follows_it = on_each_loop(
    _a_same_origin_redirect_is_followed_as_the_openai_sdk_follows_it
)


async def _a_redirect_to_another_origin_is_refused_and_a_loop_is_bounded() -> None:
    elsewhere: list[bytes] = []

    async def other_origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        elsewhere.append(await reader.read(4096))
        writer.close()

    async with loopback_server(other_origin) as other:
        away = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/steal\r\n\r\n" % other
        async with loopback_server(answering(away)) as port:
            with pytest.raises(UnusableAnswer, match="another origin"):
                await post_to(port)
    assert elsewhere == []  # the credentials never left the deployment's origin

    loops = 0

    async def forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal loops
        while True:
            try:
                await read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            loops += 1
            writer.write(
                b"HTTP/1.1 308 Permanent Redirect\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n"
            )
            await writer.drain()
        writer.close()

    async with loopback_server(forever) as port:
        with allocation_peak() as peak, pytest.raises(UnusableAnswer, match="more than 20"):
            await post_to(port)
    assert loops == 21  # the first request and 20 redirects, as httpx's max_redirects
    assert peak.bytes < SMALL


test_a_redirect_to_another_origin_is_refused_and_a_loop_is_bounded = on_each_loop(
    _a_redirect_to_another_origin_is_refused_and_a_loop_is_bounded
)


async def test_the_gateway_fails_over_from_a_redirect_to_another_origin(
    fake: FakeLLMServer,
) -> None:
    fake.script("healthy", answer="B")
    away = f"HTTP/1.1 301 Moved\r\nLocation: {fake.url}/v1/chat/completions\r\n\r\n".encode()
    completion, _ = await fail_over_once(answering(away), fake, KEY)
    assert (completion.text, completion.deployment, completion.attempts) == ("B", "healthy", 2)
    assert fake.count("hostile") == 0  # not followed: the fake saw only the healthy call


async def _interim_responses_cannot_flood_the_head_bound() -> None:
    flood = b"HTTP/1.1 100 Continue\r\n\r\n" * 40_000  # 1 MB of interim heads
    async with loopback_server(answering(flood, linger=True)) as port:
        with pytest.raises(UnusableAnswer, match="headers too large") as raised:
            await post_to(port)
    assert not isinstance(raised.value, HttpTimeout)


test_interim_responses_cannot_flood_the_head_bound = on_each_loop(
    _interim_responses_cannot_flood_the_head_bound
)
