"""Keeping secrets out of anything the gateway says: logs, exception text, reprs.

A gateway has one Redactor for its group. It is told every secret a deployment resolves, when
it resolves it: the keys of the file and of the environment, the Rasa license, netrc and proxy
passwords (and the Basic header made of them), OAuth client secrets, and the credentials
obtained while the gateway runs — Entra ID tokens and AWS temporary credentials, each refresh
included — before they are first sent. Redacting happens on error paths only.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

# Providers echo partly masked keys in their error bodies ("Incorrect API key provided: sk-ab**yz");
# even a fragment is more than a log needs.
# Bearer tokens (Entra ID's are JWTs) change while the gateway runs: matched by their shape.
_KEY_LIKE = re.compile(
    r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-*.]{6,}|\bAKIA[A-Z0-9]{12,}|\bASIA[A-Z0-9]{12,}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)[^/@\s]+@", re.IGNORECASE)
MAX_ERROR_TEXT = 300
_LAST_WORD = re.compile(r"\S+$")
MIN_SECRET = 4  # shorter values are not secrets worth replacing (and would mangle every text)

# Names of environment variables that hold credentials, as the providers litellm serves name
# them (ANTHROPIC_API_KEY, GEMINI_API_KEY, HUGGINGFACE_API_KEY, VERTEXAI_CREDENTIALS, …).
_CREDENTIAL_VARIABLE = re.compile(
    r"(?:^|_)(?:API_?KEY|ACCESS_KEY|SECRET|SECRET_ACCESS_KEY|SECRET_KEY|SESSION_TOKEN|TOKEN"
    r"|ACCESS_TOKEN|AUTH_TOKEN|BEARER_TOKEN(?:_[A-Z]+)?|PASSWORD|CREDENTIALS|LICENSE|KEY)$"
)
MIN_ENVIRONMENT_SECRET = 8  # `true`, `1`, `none`: not secrets, however the variable is named


def cut(text: str, limit: int) -> str:
    """`text` bounded to `limit` characters before it is redacted: a cut word is dropped whole,
    since it may be the start of a secret, which the redactor would no longer recognise."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    if not text[limit].isspace():
        head = _LAST_WORD.sub("", head)
    head = head.rstrip()
    return f"{head} …" if head else "…"


def environment_secrets(environ: Mapping[str, str]) -> list[str]:
    """The values of the environment's credential variables (`…_API_KEY`, `…_TOKEN`,
    `…_SECRET…`, `…_PASSWORD`, …): what a library reading its own variables may have sent."""
    return [
        value
        for name, value in environ.items()
        if len(value) >= MIN_ENVIRONMENT_SECRET and _CREDENTIAL_VARIABLE.search(name.upper())
    ]


class Redactor:
    """Replaces known secret values (and key-shaped tokens) with `***`, and bounds the length.

    `learn` adds secrets while the redactor is in use (from any thread: a credential refreshed
    in a worker thread is learnt there); each call sees the secrets learnt before it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._known: frozenset[str] = frozenset()
        self._secrets: tuple[str, ...] = ()
        self.learn(secrets)

    def learn(self, secrets: Iterable[str | None]) -> None:
        """Redact these values from now on (None and short values are skipped)."""
        new = {s for s in secrets if s is not None and len(s) >= MIN_SECRET} - self._known
        if not new:
            return
        with self._lock:
            known = self._known | new
            # Longest first, so a secret containing another is replaced whole. One tuple,
            # swapped whole: a call redacting meanwhile reads the old one or the new one.
            self._secrets = tuple(sorted(known, key=len, reverse=True))
            self._known = known

    def knows(self, secret: str) -> bool:
        return secret in self._known

    def __call__(self, text: str, limit: int = MAX_ERROR_TEXT) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        text = _KEY_LIKE.sub("***", text)
        text = _URL_USERINFO.sub(r"\g<scheme>***@", text)
        text = " ".join(text.split())
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"
