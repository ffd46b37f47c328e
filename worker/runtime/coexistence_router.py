"""The router at the edge: pure rules, plus what they need fetched (an intent, an LLM answer)."""

from __future__ import annotations

from contracts.models import UserMessage
from worker.llm.gateway import GatewayRegistry
from worker.llm.router_call import ask_router
from worker.routing.decision import RoutingDecision
from worker.routing.flows import FlowTriggers
from worker.routing.prompt import RouterPrompt
from worker.routing.router_config import IntentBasedRouterConfig, RouterConfig
from worker.routing.rules import decide_by_intent, decide_by_llm, route_without_router
from worker.routing.session import StickySession
from worker.runtime.nlu_client import NluServer


class CoexistenceRouter:
    def __init__(
        self,
        config: RouterConfig,
        triggers: FlowTriggers,
        *,
        nlu: NluServer | None = None,
        gateways: GatewayRegistry | None = None,
        model_group: str | None = None,
    ) -> None:
        self.config = config
        self.triggers = triggers
        self._nlu = nlu
        self._gateways = gateways
        self._model_group = model_group
        self._prompt = None if isinstance(config, IntentBasedRouterConfig) else RouterPrompt(config)
        if self._prompt is not None and (gateways is None or model_group is None):
            raise ValueError("an LLMBasedRouter needs a model group")

    def decide_now(
        self, session: StickySession | None, message: UserMessage
    ) -> RoutingDecision | None:
        """The decision when it needs nothing fetched (nearly every intent-routed message, and
        every sticky one), else None: then `decide` must wait for the NLU server or the LLM."""
        decision = route_without_router(session, message.text, self.config, self.triggers)
        if decision is not None:
            return decision
        parse_data, config = message.parse_data, self.config
        needs_nlu = parse_data is None and self._nlu is not None
        if isinstance(config, IntentBasedRouterConfig) and not needs_nlu:
            intent = parse_data.intent if parse_data is not None else None
            return decide_by_intent(intent, config, self.triggers, nlu_failed=False)
        return None

    async def decide(self, session: StickySession | None, message: UserMessage) -> RoutingDecision:
        decision = self.decide_now(session, message)
        if decision is not None:
            return decision
        if isinstance(self.config, IntentBasedRouterConfig):
            return await self._decide_by_intent(message, self.config)
        assert self._prompt is not None and self._gateways is not None
        assert self._model_group is not None
        gateway = self._gateways.get(self._model_group)
        answer, call, failed = await ask_router(gateway, self._prompt.render(message.text))
        return decide_by_llm(answer, call, failed=failed)

    async def _decide_by_intent(
        self, message: UserMessage, config: IntentBasedRouterConfig
    ) -> RoutingDecision:
        assert self._nlu is not None  # decide_now answered every other case
        parse_data = await self._nlu.parse(message.text, message.message_id)
        intent = parse_data.intent if parse_data is not None else None
        return decide_by_intent(intent, config, self.triggers, nlu_failed=parse_data is None)

    async def close(self) -> None:
        if self._nlu is not None:
            await self._nlu.close()
