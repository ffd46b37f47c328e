"""Rasa's reading of message texts: intent payloads, /SetSlots command payloads, slash text
(shared/core/training_data/story_reader/yaml_story_reader.py, shared/core/command_payload_reader.py,
core/processor.py _sanitize_message of 3.11.20; the parity suite has the per-version cases)."""

from __future__ import annotations

import random
import re

import pytest

from worker.routing.domain import Domain
from worker.routing.payload import (
    CommandPayload,
    IntentPayload,
    PayloadReader,
    _set_slots_pairs,
)

DOMAIN = Domain(
    intents=frozenset({"greet", "inform", "transfer_money"}),
    entities=frozenset({"city", "amount"}),
    slot_names=frozenset({"note", "items", "city"}),
)
READER = PayloadReader(DOMAIN, set_slots_lists=False)
NO_DOMAIN = PayloadReader(None, set_slots_lists=False)


@pytest.mark.parametrize(
    ("text", "intent", "confidence"),
    [
        ("/greet", "greet", 1.0),
        ("/ greet", "greet", 1.0),  # spaces after the slash are part of the name, stripped
        ("/greet@0.4", "greet", 0.4),
        ("/greet@1.5", "greet", 1.0),  # above 1: 1.0
        ("/greet@1.2.3", "greet", 0.0),  # not a number: 0.0
        ("/greet@.", "greet", 0.0),
        ("/greet@0.9xyz", "greet", 0.9),  # trailing text is ignored
        ('/greet{"x": 1} and more', "greet", 1.0),
    ],
)
def test_intent_payloads(text: str, intent: str, confidence: float) -> None:
    payload = READER.read(text)
    assert isinstance(payload, IntentPayload)
    assert (payload.intent, payload.confidence, payload.text) == (intent, confidence, text)


@pytest.mark.parametrize(
    ("text", "entities"),
    [
        ('/inform{"city": "Berlin"}', [{"entity": "city", "value": "Berlin"}]),
        ('/inform{"city": ["Berlin", "Rome"]}', [
            {"entity": "city", "value": "Berlin"}, {"entity": "city", "value": "Rome"}]),
        ('/inform{"planet": "Mars", "amount": 5}', [{"entity": "amount", "value": 5}]),
        ('/inform{"city": "Berlin"', []),  # no closing brace: no entities group, trailing text
        ("/inform{not json}", []),
        ("/inform{[1, 2]}", []),
    ],
)  # fmt: skip
def test_entities_of_intent_payloads(text: str, entities: list[dict[str, object]]) -> None:
    payload = READER.read(text)
    assert isinstance(payload, IntentPayload)
    assert list(payload.entities) == entities


@pytest.mark.parametrize(
    ("text", "routed"),
    [
        ("hello", "hello"),
        ("/help_me", "help_me"),  # not a domain intent: text without the slash
        ("//  help me", "help me"),
        ("/", ""),
        ("/greet now", "greet now"),  # the name runs to `@` or `{`: `greet now` is no intent
        ("/SetSlots(planet=mars)", "SetSlots(planet=mars)"),  # not a slot of the domain
        ("/SetSlots()", "SetSlots()"),
    ],
)
def test_text_that_is_no_payload(text: str, routed: str) -> None:
    assert READER.read(text) == routed


def test_without_a_domain_every_name_is_an_intent_and_every_slot_exists() -> None:
    assert NO_DOMAIN.read("/help_me") == IntentPayload("help_me", 1.0, (), "/help_me")
    payload = NO_DOMAIN.read('/x{"planet": "Mars"}')
    assert isinstance(payload, IntentPayload)
    assert payload.entities == ({"entity": "planet", "value": "Mars"},)
    assert NO_DOMAIN.read("/SetSlots(planet=mars)") == CommandPayload((("planet", "mars"),))


@pytest.mark.parametrize(
    ("text", "slots"),
    [
        ("/SetSlots(note=hello)", (("note", "hello"),)),
        ("/SetSlots(note=hello world, city = Rome )", (("note", "hello world"), ("city", "Rome"))),
        ("/SetSlots(note=None)", (("note", None),)),
        ("/SetSlots(note=UNDEFINED)", (("note", None),)),
        ("/SetSlots(note=a=b)", (("note", "a=b"),)),
    ],
)
def test_set_slots(text: str, slots: tuple[tuple[str, str | None], ...]) -> None:
    assert READER.read(text) == CommandPayload(slots)


def test_more_than_ten_equal_signs_are_text() -> None:
    text = "/SetSlots(" + ",".join(f"note=v{i}" for i in range(11)) + ")"
    assert READER.read(text) == text[1:]


def test_set_slots_lists_from_the_releases_that_read_them() -> None:
    text = "/SetSlots(items=[a, b], note=x)"
    assert READER.read(text) == CommandPayload((("items", "[a"), ("note", "x")))  # ` b]`: no `=`
    lists = PayloadReader(DOMAIN, set_slots_lists=True)
    assert lists.read(text) == CommandPayload((("items", "[a, b]"), ("note", "x")))


# The two patterns of CommandPayloadReader.SET_SLOTS_PATTERN (without and with lists), as the
# reference the one-pass reading must agree with.
_PLAIN = re.compile(r"([^(),=]+)=([^(),]+)")
_LISTS = re.compile(r"([^(),=]+)=(\[[^\]]*\]|[^(),]+)")


def test_one_pass_reading_finds_what_the_pattern_finds() -> None:
    rng = random.Random(7)
    alphabet = "ab =,()[]x\n"
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        assert _set_slots_pairs(text, lists=False) == _PLAIN.findall(text), text
        assert _set_slots_pairs(text, lists=True) == _LISTS.findall(text), text


@pytest.mark.timeout(20)
def test_a_long_hostile_set_slots_text_is_read_in_one_pass() -> None:
    # Rasa's pattern rescans from every position: minutes for a megabyte without `=`.
    text = "/SetSlots(" + "a" * 1_000_000
    assert READER.read(text) == text[1:]
    text = "/SetSlots(note=[" + "a=" * 5 + "b," * 500_000
    payload = PayloadReader(DOMAIN, set_slots_lists=True).read(text)
    assert isinstance(payload, CommandPayload) and payload.slots[0][1] == "[a=a=a=a=a=b"
