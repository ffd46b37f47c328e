"""Loopback HTTP peers that misbehave on purpose, and what the tests of hostile deployments measure.

- `loopback_server(handle)`: a TCP (or TLS) server on 127.0.0.1 running `handle` per connection;
- `read_request(reader)`: one request's head and Content-Length body, as the server receives it;
- `reset(writer)`: an abrupt close (RST), as from a host that went away mid-answer;
- `ForwardProxy`: an HTTP forward proxy (absolute-form requests and CONNECT tunnels) that
  records the request heads it was sent;
- `allocation_peak()`: the peak of Python allocations (tracemalloc) while a block runs, which
  is how a test shows that a hostile answer cost bounded memory;
- `post_once(url)`: one POST by a fresh HttpClient; `hostile_first(url, fake)`: a group whose
  cheapest deployment is the hostile one, then a healthy one on the fake LLM;
  `fail_over_once(handle, fake)`: one call of such a group's gateway, `handle` serving the
  hostile deployment;
- `on_each_loop(scenario)`: one test per event loop, asyncio's and uvloop (what `run` uses).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import struct
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop
from yarl import URL

from worker.fake_llm import FakeLLMServer
from worker.llm.gateway import Completion, ModelGroupGateway
from worker.llm.http import HttpClient, HttpResponse, Target
from worker.llm.model_group import ModelGroup

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
MiB = 1024 * 1024

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def on_each_loop(scenario: Callable[[], Awaitable[None]]) -> Callable[[str], None]:
    @pytest.mark.parametrize("loop", list(LOOPS))
    def test(loop: str) -> None:
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(scenario())  # type: ignore[arg-type]

    test.__name__ = scenario.__name__
    test.__doc__ = scenario.__doc__
    return test


@contextlib.asynccontextmanager
async def loopback_server(
    handle: StreamHandler, tls: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """The port of a server running `handle` for each connection; closed at the end."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close abruptly: the peer gets an RST, not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def write_repeated(writer: asyncio.StreamWriter, chunk: bytes, total: int) -> None:
    """`total` bytes of `chunk` repeated, written as the peer reads them (flow control), until
    done or the peer goes away."""
    with contextlib.suppress(ConnectionError):
        sent = 0
        while sent < total:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(64 * 1024):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@dataclass
class ForwardProxy:
    """An HTTP forward proxy on loopback: `CONNECT host:port` opens a tunnel; an absolute-form
    request is sent on, as it came, to the host and port its URL names. `heads` are the request
    heads it received (the CONNECT's, or the forwarded request's)."""

    heads: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        self.heads.append(head)
        method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
        if method == b"CONNECT":
            host, _, port = target.decode().rpartition(":")
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        else:
            authority = target.split(b"://", 1)[1].split(b"/", 1)[0].decode()
            host, _, port = authority.rpartition(":")
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            upstream_writer.write(head)
        await asyncio.gather(_pump(reader, upstream_writer), _pump(upstream_reader, writer))


@dataclass
class AllocationPeak:
    bytes: int = 0


@contextlib.contextmanager
def allocation_peak() -> Iterator[AllocationPeak]:
    """The peak of traced Python allocations above what was allocated when the block began."""
    peak = AllocationPeak()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    try:
        yield peak
    finally:
        _, top = tracemalloc.get_traced_memory()
        peak.bytes = top - base
        if started:
            tracemalloc.stop()


async def post_once(
    url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b'{"a":1}',
    timeout: float = 30.0,
) -> HttpResponse:
    """One POST by a client of its own, closed afterwards."""
    client = HttpClient()
    try:
        return await client.post(Target(URL(url)), headers or {}, body, timeout=timeout)
    finally:
        await client.close()


def hostile_first(url: str, fake: FakeLLMServer, key: str, **hostile: Any) -> ModelGroup:
    """Deployment `hostile` at `url` (OpenAI-compatible, the cheapest: tried first), then
    `healthy` on the fake LLM; cost-based routing, one retry."""
    return ModelGroup.model_validate(
        {
            "id": "hostile",
            "models": [
                {
                    "provider": "openai",
                    "model": "hostile",
                    "api_base": url,
                    "api_key": key,
                    "input_cost_per_token": 1e-9,
                    **hostile,
                },
                {
                    "provider": "openai",
                    "model": "healthy",
                    "api_base": f"{fake.url}/v1",
                    "api_key": key,
                    "input_cost_per_token": 1e-6,
                },
            ],
            "router": {"routing_strategy": "cost-based-routing", "num_retries": 1},
        }
    )


async def fail_over_once(
    handle: StreamHandler, fake: FakeLLMServer, key: str
) -> tuple[Completion, AllocationPeak]:
    """One call of a gateway over `hostile_first`, `handle` serving the hostile deployment over
    plain HTTP: its completion, and the call's allocation peak."""
    async with loopback_server(handle) as port:
        group = hostile_first(f"http://127.0.0.1:{port}/v1", fake, key)
        async with ModelGroupGateway(group, rng=random.Random(1), environ={}) as gateway:
            with allocation_peak() as peak:
                completion = await gateway.complete("hi")
    return completion, peak
