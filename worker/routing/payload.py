"""Rasa's reading of a message text before any NLU: intent payloads, `/SetSlots(…)` command
payloads, and slash text that is neither (core/processor.py parse_message, checked against
3.11.0-3.21.0; the grammar is the same in every release).

- `/intent[@confidence][{"entity": value}][anything]` (YAMLStoryReader.unpack_regex_message):
  the name may be preceded by spaces and runs up to the first `@` or `{`; it must be an intent of
  the domain. A confidence that is not a number is 0.0, above 1 it is 1.0, absent it is 1.0.
  Entities must be a JSON object; otherwise, and for entity types the domain lacks, they are
  dropped. Trailing text is ignored.
- `/SetSlots(name=value, …)` (CommandPayloadReader): every name must be a slot of the domain;
  `none`/`null`/`undefined` mean None; more than ten `=` make it plain text.
- Any other text starting with `/` is text: the router gets it without its leading slashes and
  spaces (MessageProcessor._sanitize_message).

Without a domain (the documented fallback) every name is an intent and every slot exists.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from worker.routing.domain import Domain

PAYLOAD_PREFIX = "/"
SET_SLOTS_PREFIX = "/SetSlots"
MAX_SET_SLOTS = 10  # CommandPayloadReader.MAX_NUMBER_OF_SLOTS, counted as `=` signs
_NONE_VALUES = frozenset({"none", "null", "undefined"})
_SLOT_DELIMITERS = "(),"

# The intent payload grammar. Anchored at the start and always completed by the last group, so
# matching is linear in the text.
_INTENT_PAYLOAD = re.compile(r"/([^{@]+)(@[0-9.]+)?(\{.+\})?(.*)")
_LEADING_SLASHES = re.compile(r"^[/\s]+")


@dataclass(frozen=True, slots=True)
class IntentPayload:
    intent: str
    confidence: float
    entities: tuple[dict[str, Any], ...] = ()
    text: str = ""  # the whole payload text, which `from_text` mappings read


@dataclass(frozen=True, slots=True)
class CommandPayload:
    """`/SetSlots(…)`: commands Rasa executes as they are, without NLU or the router."""

    slots: tuple[tuple[str, str | None], ...]


Payload = IntentPayload | CommandPayload


class PayloadReader:
    """Reads message texts as Rasa's MessageProcessor does, for one domain and release."""

    def __init__(self, domain: Domain | None, *, set_slots_lists: bool) -> None:
        self._intents = domain.intents if domain is not None else None
        self._entities = domain.entities if domain is not None else None
        self._slot_names = domain.slot_names if domain is not None else None
        self._set_slots_lists = set_slots_lists

    def read(self, text: str) -> Payload | str:
        """A payload, or the text the router gets. `text` is already stripped, as Rasa's
        UserMessage strips every text it receives."""
        if not text.startswith(PAYLOAD_PREFIX):
            return text
        payload: Payload | None
        if text.startswith(SET_SLOTS_PREFIX):
            payload = self._command_payload(text)
        else:
            payload = self._intent_payload(text)
        if payload is not None:
            return payload
        return _LEADING_SLASHES.sub("", text).strip()

    def _intent_payload(self, text: str) -> IntentPayload | None:
        match = _INTENT_PAYLOAD.match(text)
        if match is None:
            return None
        intent = match.group(1).strip()
        if not intent or (self._intents is not None and intent not in self._intents):
            return None
        entities = self._entity_list(match.group(3))
        return IntentPayload(intent, _confidence(match.group(2)), entities, text)

    def _entity_list(self, raw: str | None) -> tuple[dict[str, Any], ...]:
        if raw is None:
            return ()
        try:
            # The standard library's parser, as Rasa's: it also takes NaN and Infinity.
            parsed = json.loads(raw)
        except (ValueError, RecursionError):
            return ()
        if not isinstance(parsed, dict):
            return ()
        entities: list[dict[str, Any]] = []
        for entity, values in parsed.items():
            if self._entities is not None and entity not in self._entities:
                continue
            for value in values if isinstance(values, list) else [values]:
                entities.append({"entity": entity, "value": value})
        return tuple(entities)

    def _command_payload(self, text: str) -> CommandPayload | None:
        if text.count("=") > MAX_SET_SLOTS:
            return None
        slots: list[tuple[str, str | None]] = []
        for raw_name, raw_value in _set_slots_pairs(text, lists=self._set_slots_lists):
            name, value = raw_name.strip(), raw_value.strip()
            if self._slot_names is not None and name not in self._slot_names:
                return None
            slots.append((name, None if value.lower() in _NONE_VALUES else value))
        return CommandPayload(tuple(slots)) if slots else None


def _confidence(raw: str | None) -> float:
    if raw is None:
        return 1.0
    try:
        confidence = float(raw[1:])
    except ValueError:
        return 0.0
    return min(confidence, 1.0)


def _set_slots_pairs(text: str, *, lists: bool) -> list[tuple[str, str]]:
    """Every `name=value` of a /SetSlots text, as `re.findall` finds them with Rasa's pattern
    (name: no `(),=`; value: no `(),`, or with `lists` a `[…]` up to the first `]`), but in one
    pass: that pattern rescans the text from every position, quadratic in a long text."""
    pairs: list[tuple[str, str]] = []
    position, end = 0, len(text)
    close = -2  # the next `]` at or after the last search start; -1: there is none
    while (equals := text.find("=", position)) >= 0:
        start = equals
        while (
            start > position and text[start - 1] not in _SLOT_DELIMITERS and text[start - 1] != "="
        ):
            start -= 1
        value_start = equals + 1
        value_end = -1
        if lists and value_start < end and text[value_start] == "[":
            if close != -1 and close < value_start + 1:
                close = text.find("]", value_start + 1)
            if close >= 0:
                value_end = close + 1
        if value_end < 0:
            value_end = value_start
            while value_end < end and text[value_end] not in _SLOT_DELIMITERS:
                value_end += 1
        if start == equals or value_end == value_start:
            position = equals + 1  # an empty name or value: no pair at this `=`
            continue
        pairs.append((text[start:equals], text[value_start:value_end]))
        position = value_end
    return pairs
