"""The gateway's keep-alive HTTP/1.1 client (worker.llm.http) against real sockets: a small server
in the test answers with exactly the bytes each case needs. Every case runs on asyncio's loop and
on uvloop (what `coexistence-router run` uses)."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from yarl import URL

from tests.hostile_http import LOOPS, on_each_loop
from worker.llm.http import HttpClient, HttpError, Target

Reply = Callable[[int, bytes], Awaitable[bytes | None]]
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@dataclass
class RawServer:
    """Reads each request (head + Content-Length body) and writes what `reply(n, request)` gives
    (n counts requests over all connections); None closes the connection without answering."""

    reply: Reply
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    split: bool = False  # write the answer a byte at a time

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = await self.reply(len(self.requests), request)
                if answer is None:
                    break
                if self.split:
                    for i in range(len(answer)):
                        writer.write(answer[i : i + 1])
                        await writer.drain()
                else:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def client_of(
    handle: StreamHandler, path: str = "/"
) -> AsyncIterator[tuple[Target, HttpClient]]:
    """A loopback server running `handle` per connection, the target `path` on it, and a
    client; both closed at the end."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpClient()
    try:
        yield Target(URL(f"http://127.0.0.1:{port}{path}")), client
    finally:
        await client.close()
        server.close()


@asynccontextmanager
async def serve(reply: Reply, **kw: object) -> AsyncIterator[tuple[RawServer, Target, HttpClient]]:
    raw = RawServer(reply, **kw)  # type: ignore[arg-type]
    async with client_of(raw.handle, "/v1/chat/completions?x=1") as (target, client):
        yield raw, target, client


async def _keep_alive_reuses_one_connection() -> None:
    async def reply(n: int, request: bytes) -> bytes:
        return ok(b'{"n":%d}' % n, b"Content-Type: application/json\r\n")

    async with serve(reply) as (raw, target, client):
        for n in (1, 2, 3):
            response = await client.post(
                target, {"Authorization": "Bearer k"}, b'{"a":1}', timeout=5
            )
            assert (response.status, response.body) == (200, b'{"n":%d}' % n)
            assert response.headers["content-type"] == "application/json"
        assert raw.connections == 1
        head = raw.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
        assert head[0] == b"POST /v1/chat/completions?x=1 HTTP/1.1"
        assert f"Host: 127.0.0.1:{target.port}".encode() in head
        assert b"Authorization: Bearer k" in head and b"Content-Length: 7" in head
        assert raw.requests[0].endswith(b'\r\n\r\n{"a":1}')


test_keep_alive_reuses_one_connection = on_each_loop(_keep_alive_reuses_one_connection)


async def _chunked_and_interim_answers_split_into_single_bytes() -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;ext=1\r\n{"a"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )

    async def reply(n: int, request: bytes) -> bytes:
        return chunked

    async with serve(reply, split=True) as (raw, target, client):
        for _ in range(2):
            response = await client.post(target, {}, b"{}", timeout=5)
            assert (response.status, response.body) == (200, b'{"a":1}')
        assert raw.connections == 1


test_chunked_and_interim_answers_split_into_single_bytes = on_each_loop(
    _chunked_and_interim_answers_split_into_single_bytes
)


async def _close_delimited_and_connection_close_answers_are_not_reused() -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        if connections == 1:
            writer.write(ok(b"first", b"Connection: close\r\n"))
        else:  # no length: the body ends with the connection
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\r\nbusy, ")
            await writer.drain()
            writer.write(b"come back later")
        await writer.drain()
        writer.close()

    async with client_of(handle) as (target, client):
        first = await client.post(target, {}, b"{}", timeout=5)
        second = await client.post(target, {}, b"{}", timeout=5)
        assert (first.status, first.body) == (200, b"first")
        assert (second.status, second.body) == (503, b"busy, come back later")
        assert second.headers["retry-after"] == "1"
        assert connections == 2


test_close_delimited_and_connection_close_answers_are_not_reused = on_each_loop(
    _close_delimited_and_connection_close_answers_are_not_reused
)


async def _a_reused_connection_closed_by_the_server_is_retried_once_on_a_new_one() -> None:
    # The server answers the first request, then drops the connection on the second without
    # answering (its idle timeout racing ours): the client sends it again on a new connection.
    async def reply(n: int, request: bytes) -> bytes | None:
        return None if n == 2 else ok(b"n%d" % n)

    async with serve(reply) as (raw, target, client):
        assert (await client.post(target, {}, b"{}", timeout=5)).body == b"n1"
        assert (await client.post(target, {}, b"{}", timeout=5)).body == b"n3"
        assert raw.connections == 2 and len(raw.requests) == 3


test_a_reused_connection_closed_by_the_server_is_retried_once_on_a_new_one = on_each_loop(
    _a_reused_connection_closed_by_the_server_is_retried_once_on_a_new_one
)


async def _a_new_connection_closed_before_answering_is_an_error() -> None:
    async def reply(n: int, request: bytes) -> bytes | None:
        return None

    async with serve(reply) as (raw, target, client):
        with pytest.raises(HttpError, match="closed the connection before answering"):
            await client.post(target, {}, b"{}", timeout=5)
        assert raw.connections == 1  # not retried: a fresh connection's failure is real


test_a_new_connection_closed_before_answering_is_an_error = on_each_loop(
    _a_new_connection_closed_before_answering_is_an_error
)


async def _a_silent_server_times_out_and_its_connection_is_dropped() -> None:
    answered = asyncio.Event()

    async def reply(n: int, request: bytes) -> bytes:
        if n == 1:
            await answered.wait()  # never set: this request is never answered
        return ok(b"late" if n == 1 else b"second")

    async with serve(reply) as (raw, target, client):
        with pytest.raises(TimeoutError):
            await client.post(target, {}, b"{}", timeout=0.1)
        assert (await client.post(target, {}, b"{}", timeout=5)).body == b"second"
        assert raw.connections == 2


test_a_silent_server_times_out_and_its_connection_is_dropped = on_each_loop(
    _a_silent_server_times_out_and_its_connection_is_dropped
)


async def _malformed_answers_are_http_errors() -> None:
    answers = [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then the server closes
    ]

    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answers[connections - 1])
        await writer.drain()
        writer.close()

    async with client_of(handle) as (target, client):
        for _ in answers:
            with pytest.raises(HttpError):
                await client.post(target, {}, b"", timeout=5)


test_malformed_answers_are_http_errors = on_each_loop(_malformed_answers_are_http_errors)


async def _gzip_bodies_are_decoded() -> None:
    body = gzip.compress(b'{"choices":[]}')

    async def reply(n: int, request: bytes) -> bytes:
        return ok(body, b"Content-Encoding: gzip\r\n")

    async with serve(reply) as (raw, target, client):
        assert (await client.post(target, {}, b"{}", timeout=5)).body == b'{"choices":[]}'


test_gzip_bodies_are_decoded = on_each_loop(_gzip_bodies_are_decoded)


async def _refused_connections_and_header_injection() -> None:
    client = HttpClient()
    try:
        with pytest.raises(HttpError, match="cannot connect to 127.0.0.1:9"):
            await client.post(Target(URL("http://127.0.0.1:9/")), {}, b"", timeout=5)
        with pytest.raises(ValueError, match="line break"):
            await client.post(
                Target(URL("http://127.0.0.1:9/")), {"X-Key": "a\r\nX-Evil: 1"}, b"", timeout=5
            )
    finally:
        await client.close()


test_refused_connections_and_header_injection = on_each_loop(
    _refused_connections_and_header_injection
)


def test_targets_are_http_urls_only() -> None:
    for url in ("ftp://host/x", "unix:///tmp/socket", "/relative/path"):
        with pytest.raises(ValueError):
            Target(URL(url))
    assert Target(URL("https://api.openai.com/v1/chat/completions")).port == 443
    assert Target(URL("https://api.openai.com/v1/x")).head.startswith(
        b"POST /v1/x HTTP/1.1\r\nHost: api.openai.com\r\n"
    )


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("loop", list(LOOPS))
def test_https_checks_the_certificate(loop: str, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate

    async def scenario() -> None:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert, key)

        async def reply(n: int, request: bytes) -> bytes:
            return ok(b"secure")

        raw = RawServer(reply)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=server_context)
        target = Target(URL(f"https://localhost:{server.sockets[0].getsockname()[1]}/v1"))
        trusting = HttpClient(ssl.create_default_context(cafile=str(cert)))
        default = HttpClient()  # the system's CAs do not know the test certificate
        try:
            for _ in range(2):
                assert (await trusting.post(target, {}, b"{}", timeout=5)).body == b"secure"
            assert raw.connections == 1
            with pytest.raises(HttpError, match="SSL|certificate"):
                await default.post(target, {}, b"{}", timeout=5)
        finally:
            await trusting.close()
            await default.close()
            server.close()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(scenario())
