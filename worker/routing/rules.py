"""Rasa Pro's coexistence routing rules (SPEC §4) as pure functions: no I/O, no clock.

Everything the rules read besides the session and the message is an `Assistant`, prepared once
at start: the router config, the flows and domain, and the selected Rasa release's row of
worker.rasa.releases. The worker first asks `route_without_router` (sticky sessions, payloads,
`/restart`); when that returns the text for the router instead of a decision, it fetches what the
router needs (an intent from the NLU server, or an LLM answer) and calls `decide_by_intent` or
`decide_by_llm`.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.models import Intent, LlmCall, Reason, Route, RouterName
from worker.rasa.releases import DEFAULT_BEHAVIOUR, PayloadRouting, RasaBehaviour
from worker.routing.commands import Commands, NluCommandAdapter, NluInput, RouterTriggers
from worker.routing.decision import RoutingDecision
from worker.routing.domain import EMPTY_DOMAIN, Domain
from worker.routing.flows import Flows
from worker.routing.payload import CommandPayload, IntentPayload, PayloadReader
from worker.routing.router_config import IntentBasedRouterConfig, RouterConfig
from worker.routing.session import StickySession

CALM = Route.CALM
NLU = Route.NLU
RESTART_INTENT = "restart"


@dataclass(frozen=True, slots=True)
class _IntentAnswer:
    """The IntentBasedRouter's answer for one intent, decisions built once."""

    listed: RoutingDecision | None  # rules 2-4
    calm: RoutingDecision  # rule 5 produced a command
    nlu: RoutingDecision  # it did not


class Assistant:
    """The assistant as routing sees it: built once at start, read on every message."""

    def __init__(
        self,
        router: RouterConfig,
        flows: Flows | None = None,
        domain: Domain | None = None,
        rasa: RasaBehaviour = DEFAULT_BEHAVIOUR,
    ) -> None:
        self.router = router
        self.router_name = (
            RouterName.INTENT if isinstance(router, IntentBasedRouterConfig) else RouterName.LLM
        )
        self.flows = flows if flows is not None else Flows()
        self.domain = domain  # None: no domain given, the documented fallbacks apply
        self.rasa = rasa
        self.adapter = NluCommandAdapter(self.flows, domain)
        self.payloads = PayloadReader(domain, set_slots_lists=rasa.set_slots_lists)
        self.triggers = RouterTriggers(self.adapter)
        self._answers: dict[str, _IntentAnswer] = {}
        if isinstance(router, IntentBasedRouterConfig):
            known = {
                *router.nlu_entry.sticky,
                *router.nlu_entry.non_sticky,
                *router.calm_entry.sticky,
                *self.flows.trigger_intents,
            }
            self._answers = {intent: self._answer(intent, router) for intent in known}

    def _answer(self, intent: str, config: IntentBasedRouterConfig) -> _IntentAnswer:
        name = RouterName.INTENT
        listed = None
        if intent in config.nlu_entry.sticky:
            listed = RoutingDecision(NLU, True, Reason.LISTED_INTENT, name, intent)
        elif intent in config.nlu_entry.non_sticky:
            listed = RoutingDecision(NLU, False, Reason.LISTED_INTENT, name, intent)
        elif intent in config.calm_entry.sticky:
            listed = RoutingDecision(CALM, True, Reason.LISTED_INTENT, name, intent)
        return _IntentAnswer(
            listed,
            RoutingDecision(CALM, True, Reason.NLU_TRIGGER, name, intent),
            RoutingDecision(NLU, True, Reason.UNLISTED_INTENT, name, intent),
        )

    def answer_for(self, intent: str) -> _IntentAnswer | None:
        """The prepared answer for an intent the config or the flows name."""
        return self._answers.get(intent)


def route_without_router(
    session: StickySession | None, text: str, assistant: Assistant
) -> RoutingDecision | str:
    """A decision that needs no router work, or the text the router gets (Rasa strips every
    message text; slash text that is not a payload loses its leading slashes)."""
    stripped = text.strip()
    if session is not None and not stripped.startswith("/"):
        return RoutingDecision(session.route, True, Reason.STICKY_SESSION, assistant.router_name)
    reading = assistant.payloads.read(stripped)
    if isinstance(reading, IntentPayload) and reading.intent == RESTART_INTENT:
        # Routed like any payload (by the session, else the payload rule); the restart then
        # clears every slot, the routing slot too (pattern_restart / action_restart).
        route = (
            session.route if session is not None else _payload_decision(reading, assistant).route
        )
        return RoutingDecision(
            route,
            sticky=False,
            reason=Reason.RESTART,
            router=assistant.router_name,
            intent=reading.intent,
            ends_session=True,
        )
    if session is not None:
        return RoutingDecision(session.route, True, Reason.STICKY_SESSION, assistant.router_name)
    if isinstance(reading, IntentPayload):
        return _payload_decision(reading, assistant)
    if isinstance(reading, CommandPayload):
        # Rasa runs a command payload's commands as they are: the routing stays unset, so the
        # NLU-based system handles the turn and the router is asked again next time.
        return RoutingDecision(NLU, False, Reason.INTENT_PAYLOAD, assistant.router_name)
    return reading


def _payload_decision(payload: IntentPayload, assistant: Assistant) -> RoutingDecision:
    """core/processor.py _parse_message_with_commands_and_intents: the command adapter, with
    the domain, decides the routing of a payload."""
    commands = assistant.adapter.commands(
        NluInput(payload.intent, payload.confidence, payload.entities, payload.text),
        assistant.domain or EMPTY_DOMAIN,
    )
    name, intent = assistant.router_name, payload.intent
    if commands is Commands.USER or (
        commands is Commands.SYSTEM and assistant.rasa.payload_routing is PayloadRouting.ANY_COMMAND
    ):
        return RoutingDecision(CALM, True, Reason.INTENT_PAYLOAD, name, intent)
    if commands is Commands.SYSTEM:
        return RoutingDecision(NLU, False, Reason.INTENT_PAYLOAD, name, intent)
    return RoutingDecision(NLU, True, Reason.INTENT_PAYLOAD, name, intent)


def decide_by_intent(
    intent: Intent | None, assistant: Assistant, *, nlu_failed: bool = False
) -> RoutingDecision:
    """IntentBasedRouter with no session: the five rules, in Rasa's order."""
    if intent is None or intent.name is None:
        reason = Reason.NLU_FAILURE if nlu_failed else Reason.NO_INTENT
        return RoutingDecision(NLU, sticky=True, reason=reason, router=RouterName.INTENT)
    name = intent.name
    answer = assistant.answer_for(name)
    if answer is not None and answer.listed is not None:
        return answer.listed
    calm = assistant.triggers.calm(name, intent.confidence)
    if answer is None:
        # An intent nothing names is not listed. Its decision is built per message, not
        # cached: the names come from the input, and a cache of them would grow without bound.
        if calm:
            return RoutingDecision(CALM, True, Reason.NLU_TRIGGER, RouterName.INTENT, name)
        return RoutingDecision(NLU, True, Reason.UNLISTED_INTENT, RouterName.INTENT, name)
    return answer.calm if calm else answer.nlu


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
