"""Requests through an HTTP(S) proxy: aiohttp, which speaks proxies (absolute-form requests for
http, CONNECT tunnels for https), with the bounds and behaviour of worker.llm.http.

aiohttp does not decode here (`auto_decompress=False`) and is never asked to read a whole body:
its bytes go, as they arrive, to the same bounded decoder as the direct client's
(worker.llm.body), with the same Accept-Encoding; redirects, the deadline and the errors are
BaseHttpClient's, so a deployment behaves the same behind a proxy as without one.
"""

from __future__ import annotations

import ssl

import aiohttp

from worker.llm.body import ACCEPT_ENCODING, BoundedBody
from worker.llm.errors import HttpError, HttpTimeout, UnusableAnswer
from worker.llm.http import USER_AGENT, BaseHttpClient, HttpResponse, Request
from worker.llm.proxies import Proxy


class ProxiedHttpClient(BaseHttpClient):
    """Requests to any origin through one proxy; one aiohttp session, made when first used."""

    def __init__(self, proxy: Proxy, ssl_context: ssl.SSLContext | None = None) -> None:
        self._proxy = proxy
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"ProxiedHttpClient({self._proxy!r})"

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                trust_env=False,
                auto_decompress=False,
            )
        return self._session

    async def _send(self, request: Request) -> HttpResponse:
        target, method, body = request.target, request.method, request.body
        headers = {**request.headers, "Accept-Encoding": ACCEPT_ENCODING, "User-Agent": USER_AGENT}
        proxy_headers: dict[str, str] | None = None
        if self._proxy.auth is not None:
            # To the proxy: on the CONNECT of a tunnel (https), else on the request itself.
            if target.tls:
                proxy_headers = {"Proxy-Authorization": self._proxy.auth.header()}
            else:
                headers["Proxy-Authorization"] = self._proxy.auth.header()
        try:
            async with self._client_session().request(
                method,
                target.url,
                data=body if body or method == "POST" else None,
                headers=headers,
                # Never 0 or less: aiohttp reads that as no timeout at all.
                timeout=aiohttp.ClientTimeout(
                    total=max(request.deadline - request.loop.time(), 0.001)
                ),
                allow_redirects=False,
                proxy=self._proxy.url,
                proxy_headers=proxy_headers,
                ssl=self._ssl,
            ) as response:
                decoded = BoundedBody(response.headers.get("Content-Encoding", ""))
                async for chunk in response.content.iter_any():
                    decoded.feed(chunk)
                return HttpResponse(response.status, [], decoded.finish(), response.headers)
        except TimeoutError as exc:
            where = target.where
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise HttpTimeout(
                    f"timed out connecting to {where} through {self._proxy}", phase="connect"
                ) from None
            raise HttpTimeout(
                f"timed out waiting for the answer from {where} through {self._proxy}",
                phase="response",
            ) from None
        except aiohttp.ClientHttpProxyError as exc:
            raise HttpError(f"the proxy {self._proxy} refused: HTTP {exc.status}") from None
        except aiohttp.ClientResponseError as exc:
            raise UnusableAnswer(f"malformed HTTP response ({exc.message})") from None
        except (aiohttp.ClientError, OSError) as exc:
            # The proxy's URL in aiohttp's messages holds no credentials (Proxy keeps them apart).
            raise HttpError(f"through {self._proxy}: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
