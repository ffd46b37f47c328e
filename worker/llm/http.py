"""Keep-alive HTTP/1.1 requests: the gateway's transport to deployments it reaches directly.

The gateway sends one small POST and reads one small JSON answer per call, thousands of times a
second; a general-purpose client (aiohttp's: request and response objects, header multidicts,
payload and timer machinery, trace hooks) was half of its CPU per call. This client does only
what those calls need, on asyncio protocols; responses are parsed by httptools (llhttp, the
parser of Node.js and uvicorn), never by hand:

- one pool of keep-alive connections per origin (scheme, host, port), most recently used first;
  an idle connection is dropped after IDLE_TIMEOUT seconds, or as soon as the server closes it;
- `http` and `https` (the TLS trust of worker.llm.tls), TCP_NODELAY (the loop's default);
- responses framed by Content-Length, chunked transfer coding, or the end of the connection
  (Transfer-Encoding: identity included), with LF-only line endings read as the openai SDK's
  parser reads them; a connection reset or lost before the end of a body is an error, never a
  shorter answer; 1xx interim responses skipped;
- `Accept-Encoding: gzip, identity`; the body decoded as it arrives, bounded after decoding
  (worker.llm.body); a coding we did not ask for fails before its body is read;
- redirects followed as the openai SDK (httpx) follows them (301/302/303 turn a POST into a GET,
  307/308 repeat it; at most MAX_REDIRECTS), but only within the origin: the request's
  credentials never go to another host;
- one deadline per call, connect, TLS handshake and redirects included: HttpTimeout (a
  TimeoutError) naming the phase when it passes;
- a request on a reused connection that the server closed before answering anything (its idle
  timeout racing our request) is sent once more on a new connection, as browsers and urllib3 do;
- anything else going wrong below HTTP is an HttpError naming what happened (never a secret: the
  request is not part of the message); every HttpError carries the seconds the call took.

Deployments behind a proxy go through worker.llm.proxied (aiohttp), with the same bounds,
decoding, redirects and errors (BaseHttpClient).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping
from typing import cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from worker.llm.body import ACCEPT_ENCODING, MAX_BODY, BoundedBody
from worker.llm.errors import HttpError, HttpTimeout, UnusableAnswer
from worker.llm.redaction import cut

__all__ = [
    "BaseHttpClient",
    "HttpClient",
    "HttpError",
    "HttpResponse",
    "HttpTimeout",
    "Request",
    "Target",
    "UnusableAnswer",
]

IDLE_TIMEOUT = 15.0  # seconds an idle connection is kept for reuse (aiohttp's default too)
MAX_IDLE_PER_ORIGIN = 1024
MAX_HEAD = 64 * 1024  # bytes of status lines and headers (interim responses included)
CHUNK_FRAMING = 64  # bytes of framing allowed per chunk (size line, extensions, CRLFs)
MAX_REDIRECTS = 20  # httpx's default, which the openai SDK keeps
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "coexistence-router"


class HttpResponse:
    """Status, body and headers (a case-insensitive multidict, built when first read: a
    successful call never reads them)."""

    __slots__ = ("status", "body", "_fields", "_headers")

    def __init__(
        self,
        status: int,
        fields: list[tuple[bytes, bytes]],
        body: bytes,
        headers: CIMultiDictProxy[str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self._fields = fields
        self._headers = headers

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            self._headers = CIMultiDictProxy(
                CIMultiDict((n.decode("latin-1"), v.decode("latin-1")) for n, v in self._fields)
            )
        return self._headers

    def __repr__(self) -> str:
        return f"HttpResponse({self.status}, {len(self.body)} bytes)"


class Target:
    """A URL prepared once: its origin and the request line with the client's own headers."""

    __slots__ = (
        "url",
        "host",
        "port",
        "tls",
        "server_hostname",
        "origin",
        "where",
        "head",
        "_last_lines",
    )

    def __init__(self, url: URL) -> None:
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) URL: {url.scheme}://{url.host or ''}")
        self.url = url
        self.tls = url.scheme == "https"
        self.host: str = url.host
        self.port: int = url.port or (443 if self.tls else 80)
        self.server_hostname = url.host if self.tls else None
        self.origin = (url.scheme, self.host, self.port)
        self.where = f"{self.host}:{self.port}"  # in messages
        self.head = self.request_head("POST")
        # The headers last encoded, and their lines: a deployment sends the same headers (its
        # key among them) on every call, so they are encoded again only when they change.
        self._last_lines: tuple[tuple[tuple[str, str], ...], bytes] | None = None

    def header_lines(self, headers: Mapping[str, str]) -> bytes:
        """`headers` as request header lines, the client's own (Host, Content-Length, ...)
        left out; ValueError for a name or value with a line break (or a non-Latin-1
        character)."""
        items = tuple(headers.items())
        last = self._last_lines
        if last is not None and last[0] == items:
            return last[1]
        lines = _header_lines(items)
        self._last_lines = (items, lines)
        return lines

    def request_head(self, method: str) -> bytes:
        path = self.url.raw_path_qs or "/"
        return (
            f"{method} {path} HTTP/1.1\r\nHost: {self.url.host_port_subcomponent}\r\n"
            f"User-Agent: {USER_AGENT}\r\nAccept-Encoding: {ACCEPT_ENCODING}\r\n"
        ).encode("ascii")

    def redirected(self, location: str) -> Target:
        """The target a Location header names, resolved against this URL; UnusableAnswer when
        it is not a URL or leaves this origin."""
        try:
            url = self.url.join(URL(location))
            target = Target(url.with_fragment(None))
        except ValueError:
            raise UnusableAnswer(
                f"redirect to an unusable Location {cut(location, 80)!r}"
            ) from None
        if target.origin != self.origin:
            raise UnusableAnswer(
                f"redirect from {self.url.origin()} to another origin "
                f"({target.url.origin()}) refused: the request's credentials stay with its origin"
            )
        return target


def encode_request(
    target: Target, headers: Mapping[str, str], body: bytes, method: str = "POST"
) -> bytes:
    """The request's bytes. Host, Content-Length and Accept-Encoding are the client's own; a
    header name or value with a line break (or a non-Latin-1 character) is refused (ValueError)."""
    head = target.head if method == "POST" else target.request_head(method)
    lines = target.header_lines(headers)
    if body or method == "POST":
        return b"".join((head, lines, b"Content-Length: %d\r\n\r\n" % len(body), body))
    return b"".join((head, lines, b"\r\n"))


def _header_lines(items: tuple[tuple[str, str], ...]) -> bytes:
    lines = []
    for name, value in items:
        if name.lower() in _OWN_HEADERS:
            continue
        line = f"{name}: {value}\r\n"
        if "\r" in line[:-2] or "\n" in line[:-2] or ":" in name:
            raise ValueError(f"header {name!r} holds a line break or a colon")
        lines.append(line.encode("latin-1"))
    return b"".join(lines)


_OWN_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
)


def redirect_method(status: int, method: str) -> str:
    """The method a redirect is followed with, as httpx decides it (RFC 9110 and browsers)."""
    if status == 303 and method != "HEAD":
        return "GET"
    if status == 302 and method != "HEAD":
        return "GET"
    if status == 301 and method == "POST":
        return "GET"
    return method


class Request:
    """One request of a call, as a client sends it. Following a redirect changes its method,
    target and body; its headers, its loop and the call's deadline (in that loop's time) stay."""

    __slots__ = ("method", "target", "headers", "body", "deadline", "loop")

    def __init__(
        self,
        target: Target,
        headers: Mapping[str, str],
        body: bytes,
        deadline: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.method = "POST"
        self.target = target
        self.headers = headers
        self.body = body
        self.deadline = deadline
        self.loop = loop

    def redirect(self, status: int, location: str) -> None:
        """Become the request that follows a redirect (`status`) to `location`; UnusableAnswer
        when that leaves the origin (Target.redirected)."""
        self.target = self.target.redirected(location)
        self.method = redirect_method(status, self.method)
        if self.method == "GET":
            self.body = b""


class BaseHttpClient:
    """One POST and its answer within a deadline, following same-origin redirects; a subclass
    sends one request (`_send`). Every HttpError leaving `post` carries the call's elapsed time."""

    async def post(
        self, target: Target, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> HttpResponse:
        """POST `body` and read the whole answer within `timeout` seconds (HttpTimeout)."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()  # uvloop's clock ticks in milliseconds: too coarse for this
        request = Request(target, headers, body, loop.time() + timeout, loop)
        try:
            response = await self._send(request)
            if response.status in REDIRECT_STATUSES:
                response = await self._follow(response, request)
        except HttpError as error:
            error.elapsed = time.monotonic() - started
            raise
        return response

    async def _follow(self, response: HttpResponse, request: Request) -> HttpResponse:
        redirects = 0
        while response.status in REDIRECT_STATUSES:
            location = response.headers.get("Location")
            if location is None:
                return response  # not a redirect to follow (httpx's has_redirect_location)
            redirects += 1
            if redirects > MAX_REDIRECTS:
                raise UnusableAnswer(f"more than {MAX_REDIRECTS} redirects")
            request.redirect(response.status, location)
            response = await self._send(request)
        return response

    async def _send(self, request: Request) -> HttpResponse:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _Connection(asyncio.Protocol):
    """One connection: at most one request at a time; its response parsed as bytes arrive by
    httptools, which calls the `on_*` methods below."""

    def __init__(self, registry: set[_Connection]) -> None:
        self._registry = registry  # the client's open connections; this one leaves it when lost
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.received = False  # any byte of the current response
        self._parser = httptools.HttpResponseParser(self)
        # LF-only line endings, as h11 (the openai SDK's parser) and browsers accept them.
        self._parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._keep_alive = False
        # The current exchange: bytes fed, where its head ended, body bytes, chunks.
        self._fed = 0
        self._head_end = 0
        self._content = 0
        self._chunks = 0
        self._answered = False  # its final response is complete
        # The current message (an interim 1xx one, then the final one).
        self._status = 0
        self._fields: list[tuple[bytes, bytes]] = []
        self._headers_done = False
        self._until_eof = False
        self._body: BoundedBody | None = None

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
        reason = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        if self._until_eof and self._headers_done:
            if exc is None:  # the body ends with the connection, and it ended cleanly
                try:
                    self._finish()
                except HttpError as error:
                    self._fail(error)
                return
            self._fail(HttpError(f"the connection was lost before the end of the body{reason}"))
        elif not self.received:
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
        # Bounds on what the parser may hold or churn through (checked on what it was fed
        # before): the head, and a body's framing beyond its content (chunk lines, trailers).
        if not self._headers_done:
            if self._fed > MAX_HEAD:
                self._fail(UnusableAnswer("response headers too large"))
                return
        elif self._fed - self._head_end - self._content > MAX_HEAD + CHUNK_FRAMING * self._chunks:
            self._fail(UnusableAnswer("response framing too large"))
            return
        self._fed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UnusableAnswer("unexpected protocol switch (101)"))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, HttpError) else UnusableAnswer(str(exc)))
        except httptools.HttpParserError as exc:
            self._fail(UnusableAnswer(f"malformed HTTP response ({exc})"))

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._answered:
            # Bytes beyond the response (nothing was pipelined): not reusable.
            raise UnusableAnswer("bytes after the end of the response")
        self._fields = []
        self._headers_done = False
        self._until_eof = False
        self._body = None

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._headers_done:  # trailers are read and dropped
            self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._head_end = self._fed
        status = self._status = self._parser.get_status_code()
        if status < 200:
            if status == 101:
                raise UnusableAnswer("unexpected protocol switch (101)")
            return  # an interim response: the real one follows
        encoding = ""
        codings: list[bytes] | None = None
        length = False
        for name, value in self._fields:
            size = len(name)
            if size == 14 and name.lower() == b"content-length":
                length = True
                if int(value) > MAX_BODY:  # llhttp checked it is digits, and only one
                    raise UnusableAnswer(f"response body larger than {MAX_BODY} bytes")
            elif size == 16 and name.lower() == b"content-encoding":
                coding = value.decode("latin-1")
                encoding = f"{encoding},{coding}" if encoding else coding
            elif size == 17 and name.lower() == b"transfer-encoding":
                codings = (codings or []) + [c.strip().lower() for c in value.split(b",")]
        if codings is not None and not _framing_codings(codings):
            raise UnusableAnswer(
                f"unsupported Transfer-Encoding {b', '.join(codings)[:60].decode('latin-1')!r}"
            )
        self._keep_alive = self._parser.should_keep_alive()
        if status != 204 and status != 304:
            self._until_eof = (codings is None and not length) or (
                codings is not None and b"chunked" not in codings
            )
        self._body = BoundedBody(encoding)

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        self._content += len(body)
        assert self._body is not None
        self._body.feed(body)

    def on_message_complete(self) -> None:
        if self._status < 200:
            self._headers_done = False
            return
        self._finish()

    # -- the exchange --------------------------------------------------------------------------

    def send(self, data: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[HttpResponse]:
        assert self.transport is not None
        waiter: asyncio.Future[HttpResponse] = loop.create_future()
        self._waiter = waiter
        self.received = False
        self._answered = False
        self._headers_done = False
        self._fed = self._head_end = self._content = self._chunks = 0
        self.transport.write(data)
        return waiter

    def time_out(self, origin: str) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            phase = "reading the answer from" if self.received else "waiting for an answer from"
            waiter.set_exception(HttpTimeout(f"timed out {phase} {origin}", phase="response"))
        self.abort()

    def abort(self) -> None:
        self.closed = True
        self._registry.discard(self)
        if self.transport is not None:
            self.transport.abort()

    @property
    def reusable(self) -> bool:
        return self._keep_alive and not self.closed

    def _fail(self, error: HttpError) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.abort()

    def _finish(self) -> None:
        self._answered = True
        body = self._body.finish() if self._body is not None else b""
        self._body = None
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(HttpResponse(self._status, self._fields, body))
        if not self._keep_alive:
            self.abort()


def _framing_codings(codings: list[bytes]) -> bool:
    """Whether llhttp frames a body with these transfer codings as they mean: chunked framing
    (chunked last), or the body up to the end of the connection (identity only). Any other
    coding would have to be decoded, and chunked before another one is not framing."""
    if any(c not in (b"chunked", b"identity", b"") for c in codings):
        return False
    return b"chunked" not in codings or codings[-1] == b"chunked"


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


class HttpClient(BaseHttpClient):
    """Keep-alive requests to any number of origins. `close()` ends every connection.

    `ssl_context` is the TLS trust of https origins (the system's default when None)."""

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

    async def _send(self, request: Request) -> HttpResponse:
        if self._closed:
            raise HttpError("the HTTP client is closed")
        target, deadline, loop = request.target, request.deadline, request.loop
        data = encode_request(target, request.headers, request.body, request.method)
        pool = self._pools.get(target.origin)
        if pool is None:
            pool = self._pools[target.origin] = _Pool()
        reused = pool.take(loop.time())
        connection = reused if reused is not None else await self._connect(target, deadline, loop)
        # The exchange is awaited here, not in a coroutine of its own: one frame less on every
        # call's path, and every resumption of it.
        while True:
            waiter = connection.send(data, loop)
            timer = loop.call_at(deadline, connection.time_out, target.where)
            try:
                response = await waiter
            except BaseException as exc:
                # Failed, timed out or cancelled mid-exchange: the connection's framing is unknown.
                connection.abort()
                if (
                    connection is reused
                    and isinstance(exc, HttpError)
                    and not connection.received
                    and loop.time() < deadline
                ):
                    # The server closed this idle connection as we sent on it: it saw nothing.
                    connection = await self._connect(target, deadline, loop)
                    continue
                raise
            finally:
                timer.cancel()
            if connection.reusable and not self._closed:
                pool.give_back(connection, loop.time())
            else:
                connection.abort()
            return response

    async def _connect(
        self, target: Target, deadline: float, loop: asyncio.AbstractEventLoop
    ) -> _Connection:
        where = target.where
        phase = "connect"
        connection: _Connection | None = None
        try:
            async with asyncio.timeout_at(deadline):
                transport, connection = await loop.create_connection(
                    lambda: _Connection(self._open), target.host, target.port
                )
                if target.tls:
                    # The handshake on its own, so that its failures and timeouts say so.
                    phase = "tls"
                    secure = await loop.start_tls(
                        transport, connection, self._tls(), server_hostname=target.server_hostname
                    )
                    if secure is None:
                        raise ConnectionError("the connection closed during the TLS handshake")
                    connection.transport = secure
        except BaseException as exc:
            if connection is not None:
                connection.abort()
            if isinstance(exc, TimeoutError):  # ours (the deadline) or the system's (ETIMEDOUT)
                doing = "in the TLS handshake with" if phase == "tls" else "connecting to"
                raise HttpTimeout(f"timed out {doing} {where}", phase=phase) from None
            if isinstance(exc, OSError):  # refused, unreachable, name resolution, TLS (SSLError)
                during = " (TLS handshake)" if phase == "tls" else ""
                raise HttpError(
                    f"cannot connect to {where}{during}: {type(exc).__name__}: {exc}"
                ) from None
            raise
        if self._closed:
            connection.abort()
            raise HttpError("the HTTP client is closed")
        return connection

    async def close(self) -> None:
        """Close every connection, idle or busy (requests in flight fail)."""
        self._closed = True
        for connection in list(self._open):
            connection.abort()
        for pool in self._pools.values():
            pool.idle.clear()
        self._pools.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run
