"""Intent payloads: text of the form `/intent_name` or `/intent_name{"entity": "value"}`."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Rasa's RegexMessageHandler pattern: intent, optional @confidence, optional entities JSON.
_PAYLOAD = re.compile(r"^/(?P<intent>[^{@\s]+)(?P<confidence>@[0-9.]+)?(?P<entities>\{.*\})?\s*$")

RESTART_INTENT = "restart"


@dataclass(frozen=True, slots=True)
class IntentPayload:
    intent: str
    confidence: float


def parse_intent_payload(text: str) -> IntentPayload | None:
    match = _PAYLOAD.match(text.strip())
    if match is None:
        return None
    confidence = 1.0
    if raw := match.group("confidence"):
        try:
            confidence = float(raw[1:])
        except ValueError:
            confidence = 1.0
    return IntentPayload(intent=match.group("intent"), confidence=confidence)
