"""Routing decisions of Rasa Pro, case by case: the differences of issue 9 and their controls.

Each case names the release and the source files of the `rasa` package its outcome was read
from; the assistant (tests/parity/assistant.py) is loaded through the worker's own loaders for
that release, and the decision taken as the worker takes it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.models import Reason, Route
from tests.parity.assistant import (
    CALM_STICKY,
    FLOWS,
    NLU_STICKY,
    NLU_UNSET,
    Case,
    Outcome,
    decide_now,
    load_assistant,
)

ROUTER = (
    "dialogue_understanding/coexistence/intent_based_router.py "
    "(_check_intent_part_of_nlu_trigger: no domain), "
    "dialogue_understanding/generator/nlu_command_adapter.py"
)
PATTERNS = "dialogue_understanding/patterns/default_flows_for_patterns.yml, " + ROUTER
PAYLOAD = (
    "core/processor.py (_parse_message_with_commands_and_intents, "
    "_determine_route_to_calm_slot_value), dialogue_understanding/generator/nlu_command_adapter.py"
)
GRAMMAR = "shared/core/training_data/story_reader/yaml_story_reader.py (INTENT_ENTITIES_PATTERN)"
SLOTS = "shared/core/slot_mappings.py (SlotFillingManager, extract_slot_value)"
SANITIZE = "core/processor.py (parse_message, _sanitize_message)"
SET_SLOTS = "shared/core/command_payload_reader.py, core/processor.py"
NLU = Reason.NLU_TRIGGER
UNLISTED = Reason.UNLISTED_INTENT
PAY = Reason.INTENT_PAYLOAD
V = "3.11.20"

CASES = [
    # 1. Built-in pattern flows carry NLU triggers: an unlisted intent of theirs goes to CALM.
    Case("restart-intent", V, PATTERNS, "start over", CALM_STICKY, NLU, {"intent": "restart"}),
    Case("session-start-intent", V, PATTERNS, "hi", CALM_STICKY, NLU, {"intent": "session_start"}),
    Case("silence-intent", V, PATTERNS, "…", CALM_STICKY, NLU, {"intent": "silence_timeout"}),
    Case("silence-payload", V, PATTERNS + ", " + PAYLOAD, "/silence_timeout", CALM_STICKY, PAY),
    # control: an unlisted intent nothing triggers on
    Case("unlisted-intent", V, ROUTER, "weather?", NLU_STICKY, UNLISTED, {"intent": "ask_weather"}),
    # 2. Slot filling counts: a collected slot filled from the payload's entity.
    Case("inform-city-payload", V, PAYLOAD + ", " + SLOTS, '/inform{"city": "Berlin"}',
         CALM_STICKY, PAY),
    # control: the same intent and entity from the NLU: the router's call has no domain, so the
    # from_entity mapping is not valid there.
    Case("inform-city-nlu", V, ROUTER + ", " + SLOTS, "Berlin", NLU_STICKY, UNLISTED,
         {"intent": "inform", "entities": [{"entity": "city", "value": "Berlin"}]}),
    # controls: an entity the domain lacks is dropped; a mapping with a role needs the role.
    Case("inform-unknown-entity", V, GRAMMAR + ", " + PAYLOAD, '/inform{"planet": "Mars"}',
         NLU_STICKY, PAY),
    Case("inform-entity-without-role", V, SLOTS, '/inform{"recipient": "Ann"}', NLU_STICKY, PAY),
    # 3. Payload grammar.
    Case("trailing-text", V, GRAMMAR, '/transfer_money{"amount": 5} now', CALM_STICKY, PAY),
    Case("confidence-then-text", V, GRAMMAR, "/transfer_money@0.9xyz", CALM_STICKY, PAY),
    Case("space-after-slash", V, GRAMMAR, "/ transfer_money", CALM_STICKY, PAY),
    Case("malformed-confidence", V, GRAMMAR + " (_confidences_from_regex_match)",
         "/block_card@1.2.3", NLU_STICKY, PAY),
    Case("dot-confidence", V, GRAMMAR, "/block_card@.", NLU_STICKY, PAY),
    # controls: a confidence over the 0.8 threshold, and none (1.0)
    Case("good-confidence", V, GRAMMAR, "/block_card@0.85", CALM_STICKY, PAY),
    Case("no-confidence", V, GRAMMAR, "/block_card", CALM_STICKY, PAY),
    # A name that is not a domain intent is text for the router, without the slash.
    Case("unknown-name-is-text", V, SANITIZE, "/help_me", CALM_STICKY, NLU,
         {"intent": "transfer_money"}),
    Case("unknown-name-unlisted", V, SANITIZE, "/help_me", NLU_STICKY, UNLISTED,
         {"intent": "ask_weather"}),
    # /SetSlots and system-command payloads leave the routing unset (NLU for the turn).
    Case("set-slots", V, SET_SLOTS, "/SetSlots(note=hello)", NLU_UNSET, PAY),
    Case("session-start-payload", V, PATTERNS + ", " + PAYLOAD, "/session_start", NLU_UNSET, PAY),
    # control: a slot the domain lacks makes it text for the router
    Case("set-slots-unknown-slot", V, SET_SLOTS, "/SetSlots(planet=mars)", NLU_STICKY, UNLISTED,
         {"intent": "ask_weather"}),
    # control: a listed intent goes by its list, payload or not
    Case("listed-calm", V, "dialogue_understanding/coexistence/intent_based_router.py", "open",
         CALM_STICKY, Reason.LISTED_INTENT, {"intent": "open_account"}),
    Case("listed-payload", V, PAYLOAD, "/open_account", NLU_STICKY, PAY),
    # 3.11.0 routed every payload with a command to CALM, system commands too.
    Case("session-start-payload", "3.11.0", PAYLOAD, "/session_start", CALM_STICKY, PAY),
    Case("session-start-payload", "3.11.15", PAYLOAD, "/session_start", CALM_STICKY, PAY),
    Case("session-start-payload", "3.11.16", PAYLOAD, "/session_start", NLU_UNSET, PAY),
    Case("session-start-payload", "3.12.17", PAYLOAD, "/session_start", CALM_STICKY, PAY),
    Case("session-start-payload", "3.12.18", PAYLOAD, "/session_start", NLU_UNSET, PAY),
    # 3.16 added pattern_session_end with an NLU trigger.
    Case("session-end-intent", "3.21.0", PATTERNS, "bye", CALM_STICKY, NLU,
         {"intent": "session_end"}),
    Case("session-end-intent", "3.15.36", PATTERNS, "bye", NLU_STICKY, UNLISTED,
         {"intent": "session_end"}),
    Case("session-end-payload", "3.21.0", PAYLOAD, "/session_end", NLU_UNSET, PAY),
    Case("session-end-payload", "3.11.20", PAYLOAD, "/session_end", NLU_STICKY, PAY),
    Case("silence-payload", "3.21.0", PAYLOAD, "/silence_timeout", CALM_STICKY, PAY),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=str)
def test_case(case: Case, tmp_path: Path) -> None:
    app = load_assistant(tmp_path, case.rasa)
    assert Outcome.of(decide_now(app, case.text, **case.parse)) == case.expected


def test_restart_payload_ends_the_session_routed_by_the_payload_rule(tmp_path: Path) -> None:
    # pattern_restart's RestartCommand is a system command: 3.11.20 leaves the routing unset,
    # 3.11.0 routes to CALM; the restart then clears every slot (core/actions/action.py
    # ActionRestart; patterns pattern_restart).
    for version, route in (("3.11.20", Route.NLU), ("3.11.0", Route.CALM)):
        decision = decide_now(load_assistant(tmp_path / version, version), "/restart")
        assert (decision.route, decision.reason, decision.session_after) == (
            route,
            Reason.RESTART,
            None,
        )
    sticky = decide_now(load_assistant(tmp_path / "s", V), "/restart", session=Route.CALM)
    assert (sticky.route, sticky.session_after) == (Route.CALM, None)


def test_a_sticky_session_routes_every_payload(tmp_path: Path) -> None:
    app = load_assistant(tmp_path, V)
    for text in ('/inform{"city": "Berlin"}', "/SetSlots(note=hi)", "/help_me", "/session_start"):
        decision = decide_now(app, text, session=Route.NLU)
        assert Outcome.of(decision) == Outcome(Route.NLU, Reason.STICKY_SESSION, Route.NLU)


def test_no_flows_means_no_patterns(tmp_path: Path) -> None:
    # shared/importers/importer.py FlowSyncImporter.get_flows: without flows no default flows,
    # and the NLU command adapter produces nothing without flows.
    app = load_assistant(tmp_path, V, flows=None)
    assert Outcome.of(decide_now(app, "again", intent="restart")) == Outcome(
        Route.NLU, UNLISTED, Route.NLU
    )
    assert Outcome.of(decide_now(app, "/silence_timeout")) == Outcome(Route.NLU, PAY, Route.NLU)


def test_a_user_flow_overrides_the_pattern_of_its_id(tmp_path: Path) -> None:
    # merge_with_default_flows: the user's pattern_restart (no trigger) replaces Rasa's.
    flows = FLOWS + "  pattern_restart:\n    description: r\n    steps: [{action: a}]\n"
    app = load_assistant(tmp_path, V, flows=flows)
    assert decide_now(app, "again", intent="restart").route is Route.NLU


def test_pattern_commands_per_release(tmp_path: Path) -> None:
    # A user's pattern_human_handoff with an NLU trigger: 3.11-3.15 map it to a command
    # (HumanHandoffCommand), 3.16+ no longer (dialogue_understanding/generator/utils.py
    # triggerable_pattern_to_command_class).
    flows = FLOWS + (
        "  pattern_human_handoff:\n    description: h\n    nlu_trigger: [{intent: agent}]\n"
        "    steps: [{action: a}]\n"
    )
    domain_intents = "  - agent\n"
    for version, route in (("3.15.36", Route.CALM), ("3.16.0", Route.NLU)):
        app = load_assistant(
            tmp_path / version,
            version,
            flows=flows,
            domain=_with_intent(domain_intents),
        )
        assert decide_now(app, "a human", intent="agent").route is route


def test_without_a_domain_every_name_is_a_payload(tmp_path: Path) -> None:
    # The documented fallback: no domain to tell intents from text.
    app = load_assistant(tmp_path, V, domain=None)
    decision = decide_now(app, "/help_me", intent="transfer_money")
    assert Outcome.of(decision) == Outcome(Route.NLU, PAY, Route.NLU)
    assert Outcome.of(decide_now(app, '/inform{"city": "Berlin"}')) == Outcome(
        Route.NLU, PAY, Route.NLU
    )


def _with_intent(lines: str) -> str:
    from tests.parity.assistant import DOMAIN

    return DOMAIN.replace("intents:\n", "intents:\n" + lines, 1)


def test_a_collected_from_text_slot_sends_every_unlisted_intent_to_calm(tmp_path: Path) -> None:
    # 3.11.20 shared/core/slot_mappings.py: a from_text mapping is valid without a domain and
    # takes the text, so on the router's path it fills `note` for any intent; the flow that
    # collects it makes the slot available (nlu_command_adapter.py _issue_set_slot_commands).
    flows = FLOWS + "  leave_note:\n    description: n\n    steps: [{collect: note}]\n"
    from tests.parity.assistant import DOMAIN

    note = "  note:\n    type: text\n    mappings:\n      - type: "
    domain = DOMAIN.replace(note + "from_llm", note + "from_text")
    app = load_assistant(tmp_path, V, flows=flows, domain=domain)
    for intent in ("ask_weather", "greet", "anything_at_all"):
        assert Outcome.of(decide_now(app, "hi", intent=intent, confidence=0.01)) == Outcome(
            Route.CALM, NLU, Route.CALM
        )
    # Listed intents still go by their lists, and the payload path fills it too.
    assert decide_now(app, "a human", intent="handoff").route is Route.NLU
    assert Outcome.of(decide_now(app, "/greet")) == Outcome(Route.CALM, PAY, Route.CALM)
