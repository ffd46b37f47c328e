"""Rasa's NLU command adapter (NLUCommandAdapter.convert_nlu_to_commands) for a sender whose
routing is unset: which commands a message's intent, entities and text produce. Routing only
needs to know whether there are none, only system ones, or a user command.

Checked against generator/nlu_command_adapter.py and shared/core/slot_mappings.py of 3.11.0,
3.11.20, 3.12.0, 3.12.42 and 3.21.0 (the logic is the same in all; 3.12 only reworded it):

1. No flows at all: no commands.
2. The first flow (the user's, then the patterns) whose nlu_trigger the intent meets at its
   confidence (>= threshold): a StartFlow for a user flow, the pattern's command for a pattern
   (none for a pattern Rasa does not map to one).
3. A SetSlot for every slot some flow collects (without ask_before_filling) whose NLU mapping
   fills it. A mapping counts when its type is NLU-based (`from_llm` and `custom`/`controlled`
   never), it is valid for the domain the adapter was given (`from_entity`: the entity is in it;
   `from_intent` with `intent:`: every intent is in it), the intent is desired (listed in
   `intent`, or `intent` empty and not listed in `not_intent`), its `conditions` hold (with no
   form or flow active only `active_loop: null` does), and it yields a value: `from_entity` the
   values of entities of that type, role and group; `from_intent` its `value`; `from_text` the
   text; `from_trigger_intent` nothing (it needs an active form). The value counts unless it is
   None while the slot is empty.

The router's path and the payload path differ only in the domain handed over: the
IntentBasedRouter passes none (Rasa's empty domain: no entities, only the default intents), the
payload path the assistant's (core/processor.py _nlu_to_commands).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from worker.rasa.releases import PatternCommand
from worker.routing.domain import EMPTY_DOMAIN, Domain, Slot, SlotMapping
from worker.routing.flows import Flows

NO_NLU_MAPPINGS = frozenset({"from_llm", "custom", "controlled"})


class Commands(Enum):
    """What the adapter produced for a message."""

    NONE = "none"
    SYSTEM = "system commands only"  # session start/end, restart
    USER = "a user command"  # a flow, a non-system pattern, or a slot


@dataclass(frozen=True, slots=True)
class NluInput:
    """What the adapter reads of a message."""

    intent: str
    confidence: float
    entities: Sequence[dict[str, Any]] = ()
    text: str = ""


class NluCommandAdapter:
    def __init__(self, flows: Flows, domain: Domain | None) -> None:
        self.flows = flows
        # The tracker's slots (the assistant's domain) that some flow collects, with the
        # mappings that can fill them; no other slot ever yields a command.
        slots = domain.slots if domain is not None else ()
        self._slots: tuple[Slot, ...] = tuple(
            slot
            for slot in slots
            if slot.name in flows.collected
            and any(m.type not in NO_NLU_MAPPINGS for m in slot.mappings)
        )

    @property
    def fillable_slots(self) -> tuple[Slot, ...]:
        return self._slots

    def commands(self, message: NluInput, domain: Domain = EMPTY_DOMAIN) -> Commands:
        if not self.flows:
            return Commands.NONE
        flow_command = self.flows.command_for(message.intent, message.confidence)
        if flow_command is PatternCommand.USER or self.fills_a_slot(message, domain):
            return Commands.USER
        return Commands.NONE if flow_command is None else Commands.SYSTEM

    def fills_a_slot(self, message: NluInput, domain: Domain = EMPTY_DOMAIN) -> bool:
        return any(_fills(slot, message, domain) for slot in self._slots)


def _fills(slot: Slot, message: NluInput, domain: Domain) -> bool:
    for mapping in slot.mappings:
        if mapping.type in NO_NLU_MAPPINGS or not _applies(mapping, message, domain):
            continue
        values = _values(mapping, message)
        if values:
            value = values if slot.is_list else values[-1]
            if value is not None or slot.initial_value is not None:
                return True
    return False


def _applies(mapping: SlotMapping, message: NluInput, domain: Domain) -> bool:
    if mapping.type == "from_entity" and mapping.entity not in domain.entities:
        return False
    if mapping.type == "from_intent" and any(
        intent and intent not in domain.intents for intent in mapping.intents
    ):
        return False
    intent = message.intent
    desired = (not mapping.intents and intent not in mapping.not_intents) or (
        intent in mapping.intents
    )
    if not desired:
        return False
    # No form and no flow are active for a sender the router has not routed: of the
    # conditions, only `active_loop: null` holds.
    return not mapping.conditions or any(c.active_loop is None for c in mapping.conditions)


def _values(mapping: SlotMapping, message: NluInput) -> list[Any]:
    if mapping.type == "from_entity":
        return [
            entity.get("value")
            for entity in message.entities
            if entity.get("entity") == mapping.entity
            and entity.get("group") == mapping.group
            and entity.get("role") == mapping.role
        ]
    if mapping.type == "from_intent":
        return [mapping.value]
    if mapping.type == "from_text":
        return [message.text]
    return []  # from_trigger_intent: only with an active form


UNMENTIONED = "\x00an intent nothing names"


class RouterTriggers:
    """Rule 5 of the IntentBasedRouter, precomputed per intent: on the router's path the
    adapter gets no domain, so entities never count and the text always does (`from_text`);
    the answer depends on the intent and its confidence only."""

    def __init__(self, adapter: NluCommandAdapter) -> None:
        mentioned = set(adapter.flows.trigger_intents)
        for slot in adapter.fillable_slots:
            for mapping in slot.mappings:
                mentioned.update(mapping.intents, mapping.not_intents)
        mentioned.discard(UNMENTIONED)
        self._slot_fills = {
            intent: adapter.fills_a_slot(NluInput(intent, 1.0)) for intent in mentioned
        }
        self._other_fills = adapter.fills_a_slot(NluInput(UNMENTIONED, 1.0))
        self._thresholds = {
            intent: min(thresholds)
            for intent in mentioned
            if (thresholds := adapter.flows.thresholds(intent))
        }
        self._no_flows = not adapter.flows

    def calm(self, intent: str, confidence: float) -> bool:
        """True when the adapter produces a command: the router routes CALM sticky."""
        if self._no_flows:
            return False
        if self._slot_fills.get(intent, self._other_fills):
            return True
        threshold = self._thresholds.get(intent, math.inf)
        return confidence >= threshold
