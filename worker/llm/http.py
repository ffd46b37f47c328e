"""Keep-alive HTTP/1.1 POSTs: the gateway's transport to deployments it reaches directly.

The gateway sends one small POST and reads one small JSON answer per call, thousands of times a
second, and that was half of its CPU in aiohttp's general-purpose client (request and response
objects, header multidicts, payload and timer machinery, trace hooks: about 0.12 ms per call of
0.25). This client does only what those calls need, on asyncio protocols:

- one pool of keep-alive connections per origin (scheme, host, port), most recently used first;
  an idle connection is dropped after IDLE_TIMEOUT seconds, or as soon as the server closes it;
- `http` and `https` (the system's default certificate checks, as aiohttp's), TCP_NODELAY (the
  loop's default for TCP);
- responses framed by Content-Length, chunked transfer coding, or the end of the connection;
  1xx interim responses skipped; gzip/deflate bodies decoded (none is asked for);
- one deadline per request, connect included: TimeoutError when it passes;
- a request on a reused connection that the server closed before answering anything (its idle
  timeout racing our request) is sent once more on a new connection, as browsers and urllib3 do;
- anything else going wrong below HTTP is an HttpError naming what happened (never a secret: the
  request is not part of the message).

Proxies are not handled here: a deployment behind HTTP(S)_PROXY goes through aiohttp (gateway).
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import Mapping
from typing import cast

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

IDLE_TIMEOUT = 15.0  # seconds an idle connection is kept for reuse (aiohttp's default too)
MAX_IDLE_PER_ORIGIN = 1024
MAX_HEAD = 64 * 1024  # bytes of status line and headers
MAX_BODY = 32 * 1024 * 1024
USER_AGENT = "coexistence-router"

_HEAD = 0
_LENGTH = 1
_CHUNK_SIZE = 2
_CHUNK_DATA = 3
_TRAILERS = 4
_UNTIL_EOF = 5
_DONE = 6


class HttpError(Exception):
    """The exchange failed below HTTP status codes: connect, TLS, a lost connection, or a
    response that is not well-formed HTTP/1.x."""


class HttpResponse:
    """Status, body and headers (a case-insensitive multidict, built when first read: a
    successful call never reads them)."""

    __slots__ = ("status", "body", "_fields", "_headers")

    def __init__(self, status: int, fields: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.body = body
        self._fields = fields
        self._headers: CIMultiDictProxy[str] | None = None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            self._headers = CIMultiDictProxy(CIMultiDict(self._fields))
        return self._headers

    def __repr__(self) -> str:
        return f"HttpResponse({self.status}, {len(self.body)} bytes)"


class _Connection(asyncio.Protocol):
    """One connection: at most one request at a time; its response parsed as bytes arrive."""

    def __init__(self, registry: set[_Connection]) -> None:
        self._registry = registry  # the client's open connections; this one leaves it when lost
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.received = False  # any byte of the current response
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._buffer = bytearray()
        self._state = _DONE
        self._status = 0
        self._fields: list[tuple[str, str]] = []
        self._encoding = ""
        self._keep_alive = False
        self._remaining = 0
        self._body = bytearray()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self._registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._registry.discard(self)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._state == _UNTIL_EOF:
            self._finish()
            return
        reason = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        if not self.received:
            self._fail(HttpError(f"the server closed the connection before answering{reason}"))
        else:
            self._fail(HttpError(f"the connection was lost mid-response{reason}"))

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for (or after a timeout): this connection's framing is lost.
            self.abort()
            return
        self.received = True
        self._buffer += data
        try:
            self._parse()
        except HttpError as error:
            self._fail(error)
        except (ValueError, UnicodeDecodeError) as error:
            self._fail(HttpError(f"malformed HTTP response ({error})"))

    # -- the exchange --------------------------------------------------------------------------

    def send(self, data: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[HttpResponse]:
        assert self.transport is not None
        waiter: asyncio.Future[HttpResponse] = loop.create_future()
        self._waiter = waiter
        self._state = _HEAD
        self.received = False
        self.transport.write(data)
        return waiter

    def time_out(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def reusable(self) -> bool:
        return self._keep_alive and not self.closed and not self._buffer

    def _fail(self, error: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.abort()

    def _finish(self) -> None:
        body = bytes(self._body)
        self._body = bytearray()
        self._state = _DONE
        encoding = self._encoding
        if encoding and encoding != "identity":
            body = _decode(body, encoding)
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(HttpResponse(self._status, self._fields, body))
        if not self._keep_alive or self._buffer:
            # Asked to close, or bytes beyond the response (nothing was pipelined): not reusable.
            self._keep_alive = False
            self.abort()

    def _parse(self) -> None:
        buffer = self._buffer
        while True:
            state = self._state
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise HttpError("response headers too large")
                    return
                head = bytes(buffer[:end])
                del buffer[: end + 4]
                self._start(head)
            elif state == _LENGTH:
                if len(buffer) < self._remaining:
                    return
                self._body += buffer[: self._remaining]
                del buffer[: self._remaining]
                self._finish()
                return
            elif state == _CHUNK_SIZE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > 4096:
                        raise HttpError("malformed chunk size")
                    return
                line = bytes(buffer[:end]).split(b";", 1)[0].strip()
                del buffer[: end + 2]
                if not line or any(c not in b"0123456789abcdefABCDEF" for c in line):
                    raise HttpError("malformed chunk size")
                size = int(line, 16)
                if size == 0:
                    self._state = _TRAILERS
                else:
                    if len(self._body) + size > MAX_BODY:
                        raise HttpError("response body too large")
                    self._remaining = size
                    self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if len(buffer) < self._remaining + 2:
                    return
                if buffer[self._remaining : self._remaining + 2] != b"\r\n":
                    raise HttpError("malformed chunk")
                self._body += buffer[: self._remaining]
                del buffer[: self._remaining + 2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise HttpError("response trailers too large")
                    return
                del buffer[: end + 2]
                if end == 0:
                    self._finish()
                    return
            elif state == _UNTIL_EOF:
                if len(self._body) + len(buffer) > MAX_BODY:
                    raise HttpError("response body too large")
                self._body += buffer
                buffer.clear()
                return
            else:
                return

    def _start(self, head: bytes) -> None:
        text = head.decode("latin-1")
        status_line, _, rest = text.partition("\r\n")
        version = status_line[:9]
        code = status_line[9:12]
        if (
            version not in ("HTTP/1.1 ", "HTTP/1.0 ")
            or len(code) != 3
            or not code.isdigit()
            or status_line[12:13] not in ("", " ")
        ):
            raise HttpError(f"not an HTTP/1.x response: {status_line[:40]!r}")
        status = int(code)
        fields: list[tuple[str, str]] = []
        lengths: set[str] = set()
        codings: list[str] = []
        tokens: set[str] = set()
        encoding = ""
        for line in rest.split("\r\n") if rest else ():
            name, colon, value = line.partition(":")
            if not colon or not name or name.strip() != name:
                # Also a line starting with a space or tab: obsolete line folding.
                raise HttpError("malformed header line")
            value = value.strip()
            fields.append((name, value))
            lowered = name.lower()
            if lowered == "content-length":
                lengths.add(value)
            elif lowered == "transfer-encoding":
                codings.extend(t.strip().lower() for t in value.split(",") if t.strip())
            elif lowered == "connection":
                tokens.update(t.strip().lower() for t in value.split(","))
            elif lowered == "content-encoding":
                encoding = value.lower()
        if 100 <= status < 200:
            if status == 101:
                raise HttpError("unexpected protocol switch (101)")
            return  # an interim response: the real one follows (state stays _HEAD)
        self._status = status
        self._fields = fields
        self._encoding = encoding
        if version == "HTTP/1.1 ":
            self._keep_alive = "close" not in tokens
        else:
            self._keep_alive = "keep-alive" in tokens
        self._body = bytearray()
        if status in (204, 304):
            self._finish()
            return
        if codings:
            if codings[-1] == "chunked":
                if any(c != "chunked" for c in codings):
                    raise HttpError(f"unsupported transfer coding {', '.join(codings)}")
                self._state = _CHUNK_SIZE
            else:
                self._state = _UNTIL_EOF
                self._keep_alive = False
            return
        if not lengths:
            self._state = _UNTIL_EOF
            self._keep_alive = False
            return
        if len(lengths) != 1:
            raise HttpError("conflicting Content-Length headers")
        given = lengths.pop()
        if not given.isdigit():
            raise HttpError(f"malformed Content-Length {given[:20]!r}")
        length = int(given)
        if length > MAX_BODY:
            raise HttpError("response body too large")
        self._remaining = length
        self._state = _LENGTH


def _decode(body: bytes, encoding: str) -> bytes:
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate, as some servers send
    except zlib.error as exc:
        raise HttpError(f"undecodable {encoding} body ({exc})") from None
    raise HttpError(f"unsupported Content-Encoding {encoding!r}")


class Target:
    """A URL prepared once: its origin and the request line with the Host header."""

    __slots__ = ("host", "port", "tls", "server_hostname", "origin", "head")

    def __init__(self, url: URL) -> None:
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) URL: {url.scheme}://{url.host or ''}")
        self.tls = url.scheme == "https"
        self.host: str = url.host
        self.port: int = url.port or (443 if self.tls else 80)
        self.server_hostname = url.host if self.tls else None
        self.origin = (url.scheme, self.host, self.port)
        path = url.raw_path_qs or "/"
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {url.host_port_subcomponent}\r\n"
            f"User-Agent: {USER_AGENT}\r\n"
        ).encode("ascii")


def encode_request(target: Target, headers: Mapping[str, str], body: bytes) -> bytes:
    """The request's bytes. Host and Content-Length are the client's own; a header name or
    value with a line break (or a non-Latin-1 character) is refused (ValueError)."""
    parts = [target.head]
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in ("host", "content-length", "transfer-encoding", "connection"):
            continue
        line = f"{name}: {value}\r\n"
        if "\r" in line[:-2] or "\n" in line[:-2] or ":" in name:
            raise ValueError(f"header {name!r} holds a line break or a colon")
        parts.append(line.encode("latin-1"))
    parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
    parts.append(body)
    return b"".join(parts)


class _Pool:
    """Idle connections of one origin, the most recently used last."""

    __slots__ = ("idle",)

    def __init__(self) -> None:
        self.idle: deque[_Connection] = deque()

    def take(self, now: float) -> _Connection | None:
        idle = self.idle
        while idle:
            connection = idle.pop()
            if connection.closed or connection.transport is None:
                continue
            if connection.transport.is_closing():
                connection.closed = True
                continue
            if now - connection.idle_since > IDLE_TIMEOUT:
                connection.abort()
                continue
            return connection
        return None

    def give_back(self, connection: _Connection, now: float) -> None:
        idle = self.idle
        # The oldest are first: drop those past their idle time (or closed) while here.
        while idle and (idle[0].closed or now - idle[0].idle_since > IDLE_TIMEOUT):
            idle.popleft().abort()
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.abort()
            return
        connection.idle_since = now
        connection.reused = True
        idle.append(connection)


class HttpClient:
    """Keep-alive POSTs to any number of origins. `close()` ends every connection."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._open: set[_Connection] = set()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self._open if not c.closed)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def post(
        self, target: Target, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> HttpResponse:
        """POST `body` and read the whole answer within `timeout` seconds (TimeoutError)."""
        if self._closed:
            raise HttpError("the HTTP client is closed")
        data = encode_request(target, headers, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pool = self._pools.get(target.origin)
        if pool is None:
            pool = self._pools[target.origin] = _Pool()
        connection = pool.take(loop.time())
        if connection is not None:
            try:
                return await self._exchange(pool, connection, data, deadline, loop)
            except HttpError:
                # The server closed this idle connection as we sent on it: it saw nothing.
                if connection.received or loop.time() >= deadline:
                    raise
        connection = await self._connect(target, deadline, loop)
        return await self._exchange(pool, connection, data, deadline, loop)

    async def _connect(
        self, target: Target, deadline: float, loop: asyncio.AbstractEventLoop
    ) -> _Connection:
        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self._open),
                    target.host,
                    target.port,
                    ssl=self._tls() if target.tls else None,
                    server_hostname=target.server_hostname,
                )
        except OSError as exc:  # refused, unreachable, name resolution, TLS (ssl.SSLError)
            raise HttpError(
                f"cannot connect to {target.host}:{target.port}: {type(exc).__name__}: {exc}"
            ) from None
        if self._closed:
            connection.abort()
            raise HttpError("the HTTP client is closed")
        return connection

    async def _exchange(
        self,
        pool: _Pool,
        connection: _Connection,
        data: bytes,
        deadline: float,
        loop: asyncio.AbstractEventLoop,
    ) -> HttpResponse:
        waiter = connection.send(data, loop)
        timer = loop.call_at(deadline, connection.time_out)
        try:
            response = await waiter
        except BaseException:
            # Failed, timed out or cancelled mid-exchange: the connection's framing is unknown.
            connection.abort()
            raise
        finally:
            timer.cancel()
        if connection.reusable and not self._closed:
            pool.give_back(connection, loop.time())
        else:
            connection.abort()
        return response

    async def close(self) -> None:
        """Close every connection, idle or busy (requests in flight fail)."""
        self._closed = True
        for connection in list(self._open):
            connection.abort()
        for pool in self._pools.values():
            pool.idle.clear()
        self._pools.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run
