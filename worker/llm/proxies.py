"""The proxy a deployment is reached through, from the environment, as the usual clients read it.

- `https_proxy` / `http_proxy` for URLs of that scheme, else `all_proxy`; each name in lower or
  upper case, the lower-case one preferred and an empty lower-case one unsetting it (urllib's
  rules, which aiohttp and requests use; httpx and curl read the same variables);
- a value without a scheme (`proxy:3128`) is an http:// proxy, as httpx, requests and curl
  take it; http:// and https:// proxies are supported, any other scheme (socks5://, ...) is
  refused naming the variable, instead of being ignored or failing every call;
- `no_proxy` as urllib's `proxy_bypass_environment` reads it (host suffixes, `*` for all);
- credentials in the proxy URL are the proxy's Basic auth, else a netrc entry for exactly the
  proxy's host (worker.llm.netrc_auth; never netrc's `default`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

from yarl import URL

from worker.llm.netrc_auth import BasicCredentials, NetrcCredentials

PROXY_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class Proxy:
    """A proxy URL without credentials, its Basic auth, and the variable that named it."""

    url: URL
    auth: BasicCredentials | None = field(default=None, compare=False)
    variable: str = field(default="", compare=False)

    def __str__(self) -> str:
        return str(self.url)

    def __repr__(self) -> str:
        auth = ", with credentials" if self.auth is not None else ""
        return f"Proxy({self.url}{auth}, from {self.variable})"


def environment_proxies(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """{scheme (or "all", "no"): (variable, value)} from `<scheme>_proxy` variables, with
    urllib's getproxies_environment precedence, read from `environ`."""
    found: dict[str, tuple[str, str]] = {}
    for name, value in environ.items():
        if value and name[-6:].lower() == "_proxy":
            found[name[:-6].lower()] = (name, value)
    for name, value in environ.items():  # a second pass: lower-case names win
        if name[-6:] == "_proxy":
            if value:
                found[name[:-6].lower()] = (name, value)
            else:
                found.pop(name[:-6].lower(), None)
    return found


def proxy_for(
    url: URL,
    environ: Mapping[str, str] | None = None,
    netrc: NetrcCredentials | None = None,
) -> Proxy | None:
    """The proxy for `url`, or None to connect directly; ValueError naming the variable when it
    names a proxy that cannot be used."""
    proxies = environment_proxies(os.environ if environ is None else environ)
    no_proxy = proxies.get("no")
    if url.host and no_proxy and proxy_bypass_environment(url.host, {"no": no_proxy[1]}):
        return None
    chosen = proxies.get(url.scheme) or proxies.get("all")
    if chosen is None:
        return None
    variable, value = chosen
    try:
        proxy = URL(value if "://" in value else f"http://{value}")
        host = proxy.host
    except ValueError:
        host = None
    if host is None:
        raise ValueError(f"{variable} is not a proxy URL")
    if proxy.scheme not in PROXY_SCHEMES:
        raise ValueError(
            f"{variable}: {proxy.scheme}:// proxies are not supported (http:// and https:// are)"
        )
    auth: BasicCredentials | None = None
    if proxy.user is not None or proxy.password is not None:
        auth = BasicCredentials(proxy.user or "", proxy.password or "")
    elif netrc is not None:
        auth = netrc.for_host(host)
    return Proxy(proxy.with_user(None).with_password(None), auth, variable)
