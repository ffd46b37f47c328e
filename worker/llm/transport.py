"""How the gateway reaches each deployment of a group from this process's environment.

Read once, when the gateway is built, as the openai SDK reads them when its client is built
(aiohttp's `trust_env` would read them in a worker thread on every request: two thread hops and
GIL hand-offs per call that cost more than the request itself):
the TLS trust (worker.llm.tls), each deployment's proxy (worker.llm.proxies) and netrc
credentials for exactly its host (worker.llm.netrc_auth). A configuration they make unusable (a
CA bundle that is not a file, a socks5:// proxy) is a ValueError then, not a failure of every
call. Deployments reached directly share one keep-alive client (worker.llm.http); those behind a
proxy, one aiohttp-based client per proxy (worker.llm.proxied). Both bound, decode, redirect and
fail alike: the gateway sees HttpResponse or HttpError, whichever path a deployment takes.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Coroutine, Mapping
from typing import Any

from worker.llm.http import BaseHttpClient, HttpClient, HttpResponse, Target
from worker.llm.netrc_auth import NetrcCredentials
from worker.llm.proxied import ProxiedHttpClient
from worker.llm.proxies import Proxy, proxy_for
from worker.llm.tls import TlsTrust


class Transport:
    """POSTs to the deployments of one group, by deployment key. `close()` ends every
    connection; a later `post` opens new ones (a retired gateway may still finish a call)."""

    def __init__(self, targets: Mapping[str, Target], environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        self._targets = dict(targets)
        trust = TlsTrust.from_environment(env)
        # A context for named files is built now, so that a bad file refuses the config; the
        # default one (the system's trust store, slow to load) when a first https call needs it.
        self._ssl_context: ssl.SSLContext | None = None if trust.is_default else trust.context()
        netrc = NetrcCredentials.from_environment(env)
        self._proxies: dict[str, Proxy] = {}
        self._authorization: dict[str, str] = {}
        secrets: list[str] = []
        for key, target in self._targets.items():
            proxy = proxy_for(target.url, env, netrc)
            if proxy is not None:
                self._proxies[key] = proxy
                if proxy.auth is not None:
                    secrets.extend(proxy.auth.secrets())
            auth = netrc.for_host(target.host)
            if auth is not None:
                self._authorization[key] = auth.header()
                secrets.extend(auth.secrets())
        self.secrets = tuple(secrets)  # what the redactor must know besides the deployments'
        self._direct: HttpClient | None = None
        self._proxied: dict[Proxy, ProxiedHttpClient] = {}

    def __repr__(self) -> str:
        return f"Transport({len(self._targets)} deployments, {len(self._proxies)} behind a proxy)"

    @property
    def closed(self) -> bool:
        """No client is open."""
        return self._direct is None and not self._proxied

    def proxy(self, key: str) -> Proxy | None:
        return self._proxies.get(key)

    def post(
        self, key: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Coroutine[Any, Any, HttpResponse]:
        """POST to deployment `key`: the client's coroutine (BaseHttpClient.post) itself, not
        one more around it on every call's path."""
        authorization = self._authorization.get(key)
        if authorization is not None and "Authorization" not in headers:
            headers = {**headers, "Authorization": authorization}
        return self._client(key).post(self._targets[key], headers, body, timeout)

    def _client(self, key: str) -> BaseHttpClient:
        proxy = self._proxies.get(key)
        if proxy is None:
            if self._direct is None:
                self._direct = HttpClient(self._ssl_context)
            return self._direct
        client = self._proxied.get(proxy)
        if client is None:
            client = self._proxied[proxy] = ProxiedHttpClient(proxy, self._ssl_context)
        return client

    async def close(self) -> None:
        direct, self._direct = self._direct, None
        proxied, self._proxied = list(self._proxied.values()), {}
        if direct is not None:
            await direct.close()
        for client in proxied:
            await client.close()
