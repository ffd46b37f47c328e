"""The Rasa routing rules as pure functions: every branch, no broker."""

from __future__ import annotations

import pytest

from contracts.models import Intent, LlmCall, Reason, Route, RouterName
from worker.rasa.releases import DEFAULT_BEHAVIOUR
from worker.routing.flows import Flow, Flows, NluTrigger
from worker.routing.prompt import RouterPrompt
from worker.routing.router_config import (
    DEFAULT_ROUTER_TEMPLATE,
    IntentBasedRouterConfig,
    LLMBasedRouterConfig,
)
from worker.routing.rules import Assistant, decide_by_intent, decide_by_llm, route_without_router
from worker.routing.session import StickySession

INTENTS = IntentBasedRouterConfig.model_validate(
    {
        "nlu_entry": {"sticky": ["handoff", "both"], "non_sticky": ["chitchat", "both2"]},
        "calm_entry": {"sticky": ["transfer", "both", "both2"]},
    }
)
LLM = LLMBasedRouterConfig.model_validate({"calm_entry": {"sticky": "handles transfers"}})
FLOWS = Flows(
    [
        Flow("f1", (NluTrigger("f1", "block_card"),)),
        Flow("f2", (NluTrigger("f2", "strict", 0.9),)),
    ],
    DEFAULT_BEHAVIOUR.patterns,
)
ASSISTANTS = {"intent": Assistant(INTENTS, FLOWS), "llm": Assistant(LLM, FLOWS)}
CALL = LlmCall(model_group="g", deployment="d", attempts=1)


def intent(name: str | None, confidence: float = 0.8) -> Intent:
    return Intent(name=name, confidence=confidence)


@pytest.mark.parametrize(
    ("found", "route", "sticky", "reason"),
    [
        (None, Route.NLU, True, Reason.NO_INTENT),
        (intent(None), Route.NLU, True, Reason.NO_INTENT),
        (intent("handoff"), Route.NLU, True, Reason.LISTED_INTENT),
        (intent("both"), Route.NLU, True, Reason.LISTED_INTENT),  # nlu sticky before calm
        (intent("both2"), Route.NLU, False, Reason.LISTED_INTENT),  # non-sticky before calm
        (intent("chitchat"), Route.NLU, False, Reason.LISTED_INTENT),
        (intent("transfer"), Route.CALM, True, Reason.LISTED_INTENT),
        (intent("block_card", 0.01), Route.CALM, True, Reason.NLU_TRIGGER),  # default 0.0
        (intent("strict", 0.9), Route.CALM, True, Reason.NLU_TRIGGER),  # >= threshold
        (intent("strict", 0.89), Route.NLU, True, Reason.UNLISTED_INTENT),
        (intent("weather"), Route.NLU, True, Reason.UNLISTED_INTENT),
    ],
)
def test_intent_rules(found: Intent | None, route: Route, sticky: bool, reason: Reason) -> None:
    decision = decide_by_intent(found, ASSISTANTS["intent"])
    assert (decision.route, decision.sticky, decision.reason) == (route, sticky, reason)
    assert decision.router is RouterName.INTENT
    assert decision.session_after == (route if sticky else None)


def test_nlu_failure_is_no_intent_with_its_own_reason() -> None:
    decision = decide_by_intent(None, ASSISTANTS["intent"], nlu_failed=True)
    assert (decision.route, decision.sticky, decision.reason) == (
        Route.NLU,
        True,
        Reason.NLU_FAILURE,
    )


@pytest.mark.parametrize("router", ["intent", "llm"])
@pytest.mark.parametrize("text", ["/block_card", "hello", "/SetSlots(x=1)"])
def test_sticky_session_needs_no_router(router: str, text: str) -> None:
    for route in Route:
        session = StickySession(route, since_offset=3, seen_at=0.0)
        decision = route_without_router(session, text, ASSISTANTS[router])
        assert not isinstance(decision, str)
        assert (decision.route, decision.sticky, decision.reason) == (
            route,
            True,
            Reason.STICKY_SESSION,
        )


@pytest.mark.parametrize("router", ["intent", "llm"])
@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("/block_card", Route.CALM),
        ('/block_card{"card": "visa"}', Route.CALM),
        ("/strict@0.95", Route.CALM),
        ("/strict@0.5", Route.NLU),
        ("/transfer", Route.NLU),  # listed for calm_entry, but payloads look only at triggers
    ],
)
def test_intent_payload_without_session(router: str, text: str, route: Route) -> None:
    # Without a domain every name is an intent (the documented fallback).
    decision = route_without_router(None, text, ASSISTANTS[router])
    assert not isinstance(decision, str)
    assert (decision.route, decision.sticky, decision.reason) == (
        route,
        True,
        Reason.INTENT_PAYLOAD,
    )


def test_plain_text_needs_the_router_stripped() -> None:
    assert route_without_router(None, "  send money / now\n", ASSISTANTS["intent"]) == (
        "send money / now"
    )
    assert route_without_router(None, "a / b", ASSISTANTS["llm"]) == "a / b"


def test_command_payload_leaves_the_routing_unset() -> None:
    decision = route_without_router(None, "/SetSlots(note=hello)", ASSISTANTS["intent"])
    assert not isinstance(decision, str)
    assert (decision.route, decision.sticky, decision.reason) == (
        Route.NLU,
        False,
        Reason.INTENT_PAYLOAD,
    )


def test_restart_routes_by_session_then_ends_it() -> None:
    assistant = ASSISTANTS["intent"]
    session = StickySession(Route.CALM, since_offset=0, seen_at=0.0)
    decision = route_without_router(session, "/restart", assistant)
    assert not isinstance(decision, str)
    assert (decision.route, decision.sticky, decision.reason) == (Route.CALM, False, Reason.RESTART)
    assert decision.session_after is None
    # No session: the payload rule; Rasa 3.11.20's pattern_restart gives a system command only.
    fresh = route_without_router(None, "/restart", assistant)
    assert not isinstance(fresh, str)
    assert fresh.route is Route.NLU and fresh.session_after is None


@pytest.mark.parametrize(
    ("answer", "route", "sticky", "reason"),
    [
        ("A", Route.CALM, True, Reason.LLM_ANSWER),
        (" A\n", Route.CALM, True, Reason.LLM_ANSWER),  # stripped
        ("B", Route.NLU, False, Reason.LLM_ANSWER),
        ("C", Route.NLU, True, Reason.LLM_ANSWER),
        ("a", Route.NLU, True, Reason.LLM_INVALID_ANSWER),  # matched exactly
        ("A.", Route.NLU, True, Reason.LLM_INVALID_ANSWER),
        ("", Route.NLU, True, Reason.LLM_INVALID_ANSWER),
        (None, Route.NLU, True, Reason.LLM_FAILURE),
    ],
)
def test_llm_answers(answer: str | None, route: Route, sticky: bool, reason: Reason) -> None:
    decision = decide_by_llm(answer, CALL, failed=False)
    assert (decision.route, decision.sticky, decision.reason) == (route, sticky, reason)
    assert decision.llm == CALL


def test_llm_failure_routes_nlu_sticky() -> None:
    decision = decide_by_llm("A", CALL, failed=True)
    assert (decision.route, decision.sticky, decision.reason) == (
        Route.NLU,
        True,
        Reason.LLM_FAILURE,
    )


def test_default_prompt_is_rasa_3_11_20_template() -> None:
    rendered = RouterPrompt(LLM).render("I want to send money")
    assert rendered == (
        "You have to forward the user message to the right assistant.\n\n"
        "The following assistants are available:\n\n"
        "Assistant A: handles transfers\n"
        "Assistant B: handles chitchat\n"
        "Assistant C: handles everything else\n\n"
        'The user said: """I want to send money"""\n\n'
        "Answer which assistant needs to get this message:\n"
        "The message is for the assistant with the letter"
    )
    assert DEFAULT_ROUTER_TEMPLATE.endswith("with the letter")


def test_user_message_is_data_not_template() -> None:
    rendered = RouterPrompt(LLM).render("{{ 7 * 7 }} {% for x in [1] %}x{% endfor %}")
    assert '"""{{ 7 * 7 }} {% for x in [1] %}x{% endfor %}"""' in rendered


def test_user_template_is_sandboxed() -> None:
    config = LLM.model_copy(
        update={"prompt_text": "{{ user_message.__class__.__mro__[1].__subclasses__() }}"}
    )
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        RouterPrompt(config).render("hi")
