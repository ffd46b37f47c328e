"""A loopback TCP proxy that can go down and come back on the same port: a broker outage without
losing the broker's state.

Up, every accepted connection is joined to a fresh connection to the upstream port and bytes are
copied both ways until either side closes. `down()` resets every open connection (both sides)
and refuses new ones; `up()` forwards again.

Refusing: while down the proxy keeps its port bound (so nothing else takes it meanwhile) but
resets each connection the moment it is accepted (SO_LINGER 0: an RST, not a FIN), so the
client's first read or write fails. Each such attempt is counted in `refused`, which is how a
test learns, without sleeping, that a client noticed the outage and is trying to reconnect.

Holding: `hold()` stalls the connections open at that moment, both ways — bytes sent on them
are kept by the proxy, as by a network that stopped delivering — while connections opened
afterwards flow normally. When a held connection ends, what it held is dropped: a request sent
on it is lost, never delivered late. `wait_held()` returns once a held connection got bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from worker.kafka.broker import free_loopback_port
from worker.lifecycle import Started

LOOPBACK = "127.0.0.1"
CHUNK = 64 * 1024


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close abruptly: the peer gets an RST, as from a host that went away."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()


class _Link:
    """One proxied connection; `held` stops its bytes (they are counted, never delivered)."""

    def __init__(self, on_held_bytes: asyncio.Event) -> None:
        self.held = False
        self.held_bytes = 0
        self._on_held_bytes = on_held_bytes

    def hold(self, data: bytes) -> bool:
        """Whether `data` is held back instead of delivered."""
        if self.held:
            self.held_bytes += len(data)
            self._on_held_bytes.set()
        return self.held


async def pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link | None = None
) -> None:
    """Copy until end of stream or a connection error; ends when either side closes."""
    try:
        while data := await reader.read(CHUNK):
            if link is not None and link.hold(data):
                continue
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass


class TcpProxy(Started):
    def __init__(self, upstream_port: int, *, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_loopback_port()
        self.accepted = 0  # connections forwarded
        self.refused = 0  # connection attempts reset while down
        self.down_at: float | None = None  # loop time of the last down()
        self.refused_at: float | None = None  # loop time of the last refused attempt
        self._up = False
        self._server: asyncio.Server | None = None
        self._links: dict[asyncio.Task[None], _Link] = {}
        self._refusal = asyncio.Event()
        self._held_bytes = asyncio.Event()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._up

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connect, LOOPBACK, self.port, reuse_address=True
        )
        self._up = True

    async def down(self) -> None:
        """Reset every open connection; new ones are refused until `up()`."""
        self._up = False
        self.down_at = asyncio.get_running_loop().time()
        links = list(self._links)
        for link in links:
            link.cancel()
        await asyncio.gather(*links, return_exceptions=True)

    def up(self) -> None:
        self._up = True

    def hold(self) -> None:
        """Stall every connection open now; new ones flow."""
        self._held_bytes.clear()
        for link in self._links.values():
            link.held = True

    async def wait_held(self, timeout: float) -> None:
        """Until a held connection was sent bytes (that it keeps)."""
        async with asyncio.timeout(timeout):
            await self._held_bytes.wait()

    async def stop(self) -> None:
        await self.down()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def wait_for_refusal(
        self, timeout: float | None = None, *, at_or_after: float | None = None
    ) -> None:
        """Wait until a connection attempt is refused at loop time `at_or_after` or later (by
        default: since the last `down()`, including attempts refused before this call)."""
        since = self.down_at if at_or_after is None else at_or_after
        assert since is not None, "the proxy never went down"
        async with asyncio.timeout(timeout):
            while self.refused_at is None or self.refused_at < since:
                self._refusal.clear()
                await self._refusal.wait()

    async def _on_connect(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        if not self._up:
            self.refused += 1
            self.refused_at = asyncio.get_running_loop().time()
            self._refusal.set()
            _reset(client_writer)
            return
        task = asyncio.current_task()
        assert task is not None
        link = _Link(self._held_bytes)
        self._links[task] = link
        upstream_writer: asyncio.StreamWriter | None = None
        close = _reset  # unless one side ends its stream: then the other is closed in turn
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                LOOPBACK, self.upstream_port
            )
            self.accepted += 1
            pumps = [
                asyncio.create_task(pump(client_reader, upstream_writer, link)),
                asyncio.create_task(pump(upstream_reader, client_writer, link)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                close = _close
            finally:
                for task in pumps:
                    task.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass  # upstream not there: the client sees its connection reset
        except asyncio.CancelledError:
            pass  # down(): the end of the task is the reset below
        finally:
            del self._links[task]
            close(client_writer)
            if upstream_writer is not None:
                close(upstream_writer)
