"""The only part of Rasa flows the router reads: each flow's `nlu_trigger`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NluTrigger:
    flow_id: str
    intent: str
    confidence_threshold: float = 0.0


class FlowTriggers:
    """All NLU triggers of the assistant's flows, indexed by intent."""

    def __init__(self, triggers: Iterable[NluTrigger] = ()) -> None:
        self._by_intent: dict[str, list[NluTrigger]] = {}
        for trigger in triggers:
            self._by_intent.setdefault(trigger.intent, []).append(trigger)

    def __len__(self) -> int:
        return sum(len(t) for t in self._by_intent.values())

    def matches(self, intent: str, confidence: float) -> bool:
        """Rasa's NLUCommandAdapter: some flow triggers on `intent` at this confidence."""
        return any(confidence >= t.confidence_threshold for t in self._by_intent.get(intent, ()))
