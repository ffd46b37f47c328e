"""Keeping secrets out of anything the gateway says: logs, exception text, reprs."""

from __future__ import annotations

import re
from collections.abc import Iterable

from worker.llm.model_group import Deployment

# Providers echo partly masked keys in their error bodies ("Incorrect API key provided: sk-ab**yz");
# even a fragment is more than a log needs.
# Bearer tokens (Entra ID's are JWTs) change while the gateway runs: matched by their shape.
_KEY_LIKE = re.compile(
    r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-*.]{6,}|\bAKIA[A-Z0-9]{12,}|\bASIA[A-Z0-9]{12,}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)[^/@\s]+@", re.IGNORECASE)
MAX_ERROR_TEXT = 300


def deployment_secrets(deployment: Deployment) -> list[str]:
    return deployment.secrets()


class Redactor:
    """Replaces known secret values (and key-shaped tokens) with `***`, and bounds the length."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def extended(self, secrets: Iterable[str]) -> Redactor:
        return Redactor([*self._secrets, *secrets])

    def __call__(self, text: str, limit: int = MAX_ERROR_TEXT) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = _KEY_LIKE.sub("***", text)
        text = _URL_USERINFO.sub(r"\g<scheme>***@", text)
        text = " ".join(text.split())
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"
