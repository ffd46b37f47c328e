"""The router at the edge: pure rules, plus what they need fetched (an intent, an LLM answer)."""

from __future__ import annotations

from contracts.models import UserMessage
from worker.llm.gateway import GatewayRegistry
from worker.llm.router_call import ask_router
from worker.routing.decision import RoutingDecision
from worker.routing.prompt import RouterPrompt
from worker.routing.router_config import IntentBasedRouterConfig
from worker.routing.rules import Assistant, decide_by_intent, decide_by_llm, route_without_router
from worker.routing.session import StickySession
from worker.runtime.nlu_client import NluServer


class CoexistenceRouter:
    def __init__(
        self,
        assistant: Assistant,
        *,
        nlu: NluServer | None = None,
        gateways: GatewayRegistry | None = None,
        model_group: str | None = None,
    ) -> None:
        self.assistant = assistant
        self.config = assistant.router
        self._nlu = nlu
        self._gateways = gateways
        self._model_group = model_group
        self._prompt = (
            None if isinstance(self.config, IntentBasedRouterConfig) else RouterPrompt(self.config)
        )
        if self._prompt is not None and (gateways is None or model_group is None):
            raise ValueError("an LLMBasedRouter needs a model group")

    def decide_now(
        self, session: StickySession | None, message: UserMessage
    ) -> RoutingDecision | None:
        """The decision when it needs nothing fetched (nearly every intent-routed message, and
        every sticky one), else None: then `decide` must wait for the NLU server or the LLM."""
        decision = route_without_router(session, message.text, self.assistant)
        if not isinstance(decision, str):
            return decision
        parse_data, config = message.parse_data, self.config
        needs_nlu = parse_data is None and self._nlu is not None
        if isinstance(config, IntentBasedRouterConfig) and not needs_nlu:
            intent = parse_data.intent if parse_data is not None else None
            return decide_by_intent(intent, self.assistant, nlu_failed=False)
        return None

    async def decide(self, session: StickySession | None, message: UserMessage) -> RoutingDecision:
        decision = route_without_router(session, message.text, self.assistant)
        if not isinstance(decision, str):
            return decision
        text = decision  # the text as Rasa's router gets it: stripped, no leading slashes
        if isinstance(self.config, IntentBasedRouterConfig):
            return await self._decide_by_intent(message, text)
        assert self._prompt is not None and self._gateways is not None
        assert self._model_group is not None
        gateway = self._gateways.get(self._model_group)
        answer, call, failed = await ask_router(gateway, self._prompt.render(text))
        return decide_by_llm(answer, call, failed=failed)

    async def _decide_by_intent(self, message: UserMessage, text: str) -> RoutingDecision:
        parse_data = message.parse_data
        if parse_data is not None or self._nlu is None:
            intent = parse_data.intent if parse_data is not None else None
            return decide_by_intent(intent, self.assistant, nlu_failed=False)
        parsed = await self._nlu.parse(text, message.message_id)
        intent = parsed.intent if parsed is not None else None
        return decide_by_intent(intent, self.assistant, nlu_failed=parsed is None)

    async def close(self) -> None:
        if self._nlu is not None:
            await self._nlu.close()
