"""Basic-auth credentials from ~/.netrc (or the file $NETRC names), for exact host names only.

A netrc `machine` entry names the host its credentials are for, and a request to that host
(a self-hosted model behind basic auth, a proxy) carries them, as curl, requests and aiohttp do.
The `default` entry is never used: those clients send it to every host without an entry, which
for the gateway means next to a deployment's own API key, to every LLM provider it calls.
Deployments authenticate with their own keys; a netrc entry is used only where it names the
deployment's (or proxy's) host exactly, case-insensitively, and the request carries no
Authorization of its own.
"""

from __future__ import annotations

import base64
import logging
import netrc
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class BasicCredentials:
    """A login and password for HTTP Basic authentication (RFC 7617). Its repr names the login
    only."""

    login: str
    password: str

    def header(self) -> str:
        """The Authorization (or Proxy-Authorization) header value: Latin-1 where the text
        allows it, as requests and aiohttp encode, else UTF-8 (RFC 7617's charset)."""
        text = f"{self.login}:{self.password}"
        try:
            raw = text.encode("latin-1")
        except UnicodeEncodeError:
            raw = text.encode("utf-8")
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def secrets(self) -> list[str]:
        """What to redact: the password, and the header's encoding of it (a server that
        echoes the Authorization header it got quotes that)."""
        return [self.password, self.header().removeprefix("Basic ")]

    def __repr__(self) -> str:
        return f"BasicCredentials({self.login!r}, ***)"


class NetrcCredentials:
    """The `machine` entries of one netrc file, by lower-cased host name."""

    def __init__(self, entries: Mapping[str, BasicCredentials] | None = None) -> None:
        self._entries = dict(entries or {})

    def __repr__(self) -> str:
        return f"NetrcCredentials({sorted(self._entries)})"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> NetrcCredentials:
        """$NETRC, else ~/.netrc; none when there is no such file or it cannot be read (a
        warning names the file, never its contents)."""
        env = os.environ if environ is None else environ
        given = env.get("NETRC")
        if given:
            path = Path(given).expanduser()
        else:
            home = env.get("HOME")
            path = (Path(home) if home else Path.home()) / ".netrc"
        if not path.is_file():
            return cls()
        try:
            parsed = netrc.netrc(str(path))
        except (netrc.NetrcParseError, OSError, UnicodeDecodeError) as exc:
            # Not the parser's message: it quotes the file's tokens, which may be passwords.
            where = f" at line {exc.lineno}" if isinstance(exc, netrc.NetrcParseError) else ""
            log.warning("netrc file %s not used: %s%s", path, type(exc).__name__, where)
            return cls()
        entries: dict[str, BasicCredentials] = {}
        for host, (login, _account, password) in parsed.hosts.items():
            # Python's netrc keeps the `default` entry under the name "default", where a
            # `machine default` entry would be too: neither is a host's own entry.
            if host == "default" or not password:
                continue
            entries[host.lower()] = BasicCredentials(login or "", password)
        return cls(entries)

    def for_host(self, host: str | None) -> BasicCredentials | None:
        return self._entries.get(host.lower()) if host else None
