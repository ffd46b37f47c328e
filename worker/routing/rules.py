"""Rasa Pro's coexistence routing rules (SPEC §4) as pure functions: no I/O, no clock.

The worker first asks `route_without_router` (sticky sessions, intent payloads, `/restart`);
only when that returns None does it fetch what the router needs (an intent from the NLU server,
or an LLM answer) and call `decide_by_intent` or `decide_by_llm`.
"""

from __future__ import annotations

from contracts.models import Intent, LlmCall, Reason, Route, RouterName
from worker.routing.decision import RoutingDecision
from worker.routing.flows import FlowTriggers
from worker.routing.payload import RESTART_INTENT, parse_intent_payload
from worker.routing.router_config import IntentBasedRouterConfig, RouterConfig
from worker.routing.session import StickySession

CALM = Route.CALM
NLU = Route.NLU


def router_name(config: RouterConfig) -> RouterName:
    if isinstance(config, IntentBasedRouterConfig):
        return RouterName.INTENT
    return RouterName.LLM


def route_without_router(
    session: StickySession | None, text: str, config: RouterConfig, triggers: FlowTriggers
) -> RoutingDecision | None:
    """Decisions that need no router work at all, or None when the router must run."""
    name = router_name(config)
    payload = parse_intent_payload(text)
    if payload is not None and payload.intent == RESTART_INTENT:
        # Rasa routes the `/restart` turn by the session, then action_restart clears the slot.
        if session is not None:
            route = session.route
        else:
            route = CALM if triggers.matches(payload.intent, payload.confidence) else NLU
        return RoutingDecision(
            route,
            sticky=False,
            reason=Reason.RESTART,
            router=name,
            intent=payload.intent,
            ends_session=True,
        )
    if session is not None:
        return RoutingDecision(
            session.route, sticky=True, reason=Reason.STICKY_SESSION, router=name
        )
    if payload is not None:
        route = CALM if triggers.matches(payload.intent, payload.confidence) else NLU
        return RoutingDecision(
            route, sticky=True, reason=Reason.INTENT_PAYLOAD, router=name, intent=payload.intent
        )
    return None


def decide_by_intent(
    intent: Intent | None,
    config: IntentBasedRouterConfig,
    triggers: FlowTriggers,
    *,
    nlu_failed: bool = False,
) -> RoutingDecision:
    """IntentBasedRouter with no session: the five rules, in Rasa's order."""
    name = RouterName.INTENT
    if intent is None or intent.name is None:
        reason = Reason.NLU_FAILURE if nlu_failed else Reason.NO_INTENT
        return RoutingDecision(NLU, sticky=True, reason=reason, router=name)
    found = intent.name
    if found in config.nlu_entry.sticky:
        return RoutingDecision(
            NLU, sticky=True, reason=Reason.LISTED_INTENT, router=name, intent=found
        )
    if found in config.nlu_entry.non_sticky:
        return RoutingDecision(
            NLU, sticky=False, reason=Reason.LISTED_INTENT, router=name, intent=found
        )
    if found in config.calm_entry.sticky:
        return RoutingDecision(
            CALM, sticky=True, reason=Reason.LISTED_INTENT, router=name, intent=found
        )
    if triggers.matches(found, intent.confidence):
        return RoutingDecision(
            CALM, sticky=True, reason=Reason.NLU_TRIGGER, router=name, intent=found
        )
    return RoutingDecision(
        NLU, sticky=True, reason=Reason.UNLISTED_INTENT, router=name, intent=found
    )


def decide_by_llm(answer: str | None, call: LlmCall, *, failed: bool) -> RoutingDecision:
    """LLMBasedRouter with no session: the stripped answer matched exactly against A/B/C."""
    name = RouterName.LLM
    if failed or answer is None:
        return RoutingDecision(NLU, sticky=True, reason=Reason.LLM_FAILURE, router=name, llm=call)
    stripped = answer.strip()
    if stripped == "A":
        return RoutingDecision(CALM, sticky=True, reason=Reason.LLM_ANSWER, router=name, llm=call)
    if stripped == "B":
        return RoutingDecision(NLU, sticky=False, reason=Reason.LLM_ANSWER, router=name, llm=call)
    if stripped == "C":
        return RoutingDecision(NLU, sticky=True, reason=Reason.LLM_ANSWER, router=name, llm=call)
    return RoutingDecision(
        NLU, sticky=True, reason=Reason.LLM_INVALID_ANSWER, router=name, llm=call
    )
