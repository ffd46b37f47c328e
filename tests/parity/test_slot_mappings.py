"""Slot filling as Rasa's NLU command adapter sees it, for a sender without routing: every
mapping type and condition, on the router's path (no domain: Domain.empty()) and the payload
path (the assistant's domain).

Checked against shared/core/slot_mappings.py (SlotMapping.check_mapping_validity,
intent_is_desired, entity_is_desired, SlotFillingManager._matches_mapping_conditions,
extract_slot_value_from_predefined_mapping, extract_slot_value) and
dialogue_understanding/generator/nlu_command_adapter.py (_issue_set_slot_commands) of 3.11.20
and 3.21.0, where the logic is the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contracts.models import Route
from tests.parity.assistant import decide_now, load_assistant
from worker.config.errors import ConfigError

VERSIONS = ["3.11.20", "3.21.0"]


def assistant(
    tmp_path: Path,
    version: str,
    mapping: dict[str, Any],
    *,
    slot_type: str = "text",
    ask_before_filling: bool = False,
    collected: bool = True,
    initial_value: Any = None,
) -> Any:
    collect = {"collect": "s", "ask_before_filling": ask_before_filling}
    steps = [collect] if collected else [{"action": "utter_hi"}]
    flows = {"flows": {"collector": {"description": "c", "steps": steps}}}
    slot: dict[str, Any] = {"type": slot_type, "mappings": [mapping]}
    if initial_value is not None:
        slot["initial_value"] = initial_value
    domain = {
        "intents": ["inform", "greet", "other"],
        "entities": ["city", {"person": {"roles": ["receiver"], "groups": ["g1"]}}],
        "slots": {
            "route_session_to_calm": {"type": "bool", "mappings": [{"type": "custom"}]},
            "s": slot,
        },
        "forms": {"a_form": {"required_slots": ["s"]}},
    }
    return load_assistant(tmp_path, version, flows=json.dumps(flows), domain=json.dumps(domain))


def refusal(tmp_path: Path, version: str, mapping: dict[str, Any]) -> str:
    """The one problem of an assistant whose slot mapping the release refuses."""
    with pytest.raises(ConfigError) as caught:
        assistant(tmp_path, version, mapping)
    [problem] = caught.value.problems
    return problem


def router_path(app: Any, intent: str = "inform", **parse: Any) -> bool:
    """True when the IntentBasedRouter's adapter call produces a command (CALM sticky)."""
    return decide_now(app, "a text", intent=intent, **parse).route is Route.CALM


def payload_path(app: Any, text: str) -> bool:
    return decide_now(app, text).route is Route.CALM


CITY = '/inform{"city": "Berlin"}'


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("name", "mapping", "router", "payloads"),
    [
        # from_entity needs the entity in the domain the adapter got: never on the router's path.
        ("from_entity", {"type": "from_entity", "entity": "city"}, False,
         {CITY: True, "/inform": False, '/inform{"planet": "x"}': False}),
        ("from_entity-intent", {"type": "from_entity", "entity": "city", "intent": "inform"},
         False, {CITY: True, '/greet{"city": "Berlin"}': False}),
        ("from_entity-not_intent",
         {"type": "from_entity", "entity": "city", "not_intent": ["inform"]}, False,
         {CITY: False, '/greet{"city": "Berlin"}': True}),
        # Payload entities have no role or group: a mapping that names one never matches them.
        ("from_entity-role", {"type": "from_entity", "entity": "person", "role": "receiver"},
         False, {'/inform{"person": "Ann"}': False}),
        ("from_entity-group", {"type": "from_entity", "entity": "person", "group": "g1"},
         False, {'/inform{"person": "Ann"}': False}),
        # from_intent with `intent:` is valid only where the domain has those intents.
        ("from_intent", {"type": "from_intent", "value": "yes", "intent": "inform"}, False,
         {"/inform": True, "/greet": False}),
        ("from_intent-any-intent", {"type": "from_intent", "value": "yes"}, True,
         {"/inform": True, "/greet": True}),
        ("from_intent-not_intent", {"type": "from_intent", "value": "yes", "not_intent": "inform"},
         False, {"/inform": False, "/greet": True}),
        # from_trigger_intent needs an active form: never for a sender without routing.
        ("from_trigger_intent", {"type": "from_trigger_intent", "value": "yes", "intent": "inform"},
         False, {"/inform": False}),
        # from_text takes the text, on both paths.
        ("from_text", {"type": "from_text"}, True, {"/inform": True, "/greet": True}),
        ("from_text-intent", {"type": "from_text", "intent": ["greet"]}, False,
         {"/inform": False, "/greet": True}),
        ("from_text-not_intent", {"type": "from_text", "not_intent": ["inform"]}, False,
         {"/inform": False, "/other": True}),
        # conditions: with no form and no flow active only `active_loop: null` holds.
        ("conditions-no-loop", {"type": "from_text", "conditions": [{"active_loop": None}]}, True,
         {"/inform": True}),
        ("conditions-a-form", {"type": "from_text", "conditions": [{"active_loop": "a_form"}]},
         False, {"/inform": False}),
        ("conditions-a-flow", {"type": "from_text", "conditions": [{"active_flow": "collector"}]},
         False, {"/inform": False}),
        ("conditions-any-holds", {"type": "from_text", "conditions": [
            {"active_loop": "a_form", "requested_slot": "s"}, {"active_loop": None}]}, True,
         {"/inform": True}),
        # Never by NLU.
        ("from_llm", {"type": "from_llm"}, False, {"/inform": False, CITY: False}),
        ("custom", {"type": "custom"}, False, {"/inform": False}),
    ],
)  # fmt: skip
def test_mapping(
    tmp_path: Path,
    version: str,
    name: str,
    mapping: dict[str, Any],
    router: bool,
    payloads: dict[str, bool],
) -> None:
    app = assistant(tmp_path, version, mapping)
    assert router_path(app) is router, name
    # The router's path never sees entities: an entity from the NLU changes nothing.
    assert router_path(app, entities=[{"entity": "city", "value": "Berlin"}]) is router, name
    for text, calm in payloads.items():
        assert payload_path(app, text) is calm, f"{name}: {text}"


def test_a_default_intent_is_known_to_the_empty_domain(tmp_path: Path) -> None:
    # Domain.empty() holds Rasa's default intents: a from_intent on `restart` is valid there.
    app = assistant(tmp_path, "3.11.20", {"type": "from_intent", "value": 1, "intent": "restart"})
    assert router_path(app, intent="restart")
    assert not router_path(app, intent="inform")


@pytest.mark.parametrize("version", VERSIONS)
def test_only_slots_some_flow_collects_without_asking_first(tmp_path: Path, version: str) -> None:
    text = {"type": "from_text"}
    assert not router_path(assistant(tmp_path / "a", version, text, collected=False))
    assert not router_path(assistant(tmp_path / "b", version, text, ask_before_filling=True))


def test_a_null_value_counts_only_for_a_slot_that_has_one(tmp_path: Path) -> None:
    # extract_slot_value: `value is not None or tracker.get_slot(slot) is not None`.
    mapping = {"type": "from_entity", "entity": "city"}
    empty = assistant(tmp_path / "a", "3.11.20", mapping)
    assert not payload_path(empty, '/inform{"city": null}')
    preset = assistant(tmp_path / "b", "3.11.20", mapping, initial_value="Rome")
    assert payload_path(preset, '/inform{"city": null}')
    # A list slot keeps the values as a list, which is never None.
    listed = assistant(tmp_path / "c", "3.11.20", mapping, slot_type="list")
    assert payload_path(listed, '/inform{"city": [null]}')


def test_mapping_types_per_release(tmp_path: Path) -> None:
    # shared/core/constants.py SlotMappingType: 3.11 has `custom`, 3.12 renamed it
    # `controlled` (custom still read, deprecated); a mapping without type is from_llm from
    # 3.12 (SlotMapping.validate_mapping) and refused in 3.11 (SlotMapping.validate).
    assert refusal(tmp_path / "a", "3.11.20", {"type": "controlled"}).endswith(
        "domain.yml: slots.s.mappings[0].type: not a slot mapping type of Rasa 3.11.16–3.11.20 "
        "(custom, from_entity, from_intent, from_llm, from_text, from_trigger_intent)"
    )
    assert not router_path(assistant(tmp_path / "b", "3.12.0", {"type": "controlled"}))
    assert refusal(tmp_path / "c", "3.11.20", {"entity": "city"}).endswith(
        "domain.yml: slots.s.mappings[0].type: required key is missing (Rasa 3.11.16–3.11.20 "
        "has no default mapping type)"
    )
    assert not payload_path(assistant(tmp_path / "d", "3.12.42", {"entity": "city"}), CITY)
