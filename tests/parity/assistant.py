"""The parity suite's assistant: a small bank with flows, a domain and an IntentBasedRouter,
loaded through the worker's own loaders for a given Rasa release, and decisions taken the way
the worker takes them (CoexistenceRouter.decide_now / decide)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.models import Reason, Route, UserMessage
from worker.config.app_config import AppConfig, load_app_config
from worker.rasa.releases import rasa_version
from worker.routing.decision import RoutingDecision
from worker.routing.session import StickySession
from worker.runtime.coexistence_router import CoexistenceRouter

INTENT_CONFIG = """
pipeline:
  - name: WhitespaceTokenizer
  - name: IntentBasedRouter
    nlu_entry:
      sticky: [handoff]
      non_sticky: [chitchat]
    calm_entry:
      sticky: [open_account]
  - name: NLUCommandAdapter
"""

FLOWS = """
flows:
  transfer_money:
    description: Send money to someone.
    nlu_trigger:
      - intent: transfer_money
    steps:
      - collect: recipient
      - collect: amount
  block_card:
    description: Block a card.
    nlu_trigger:
      - intent:
          name: block_card
          confidence_threshold: 0.8
    steps:
      - collect: card_number
  weather:
    description: The weather in a city.
    steps:
      - collect: city
"""

DOMAIN = """
version: "3.1"
intents:
  - greet
  - chitchat
  - handoff
  - inform
  - open_account
  - transfer_money
  - block_card
  - ask_weather
entities:
  - city
  - amount
  - card_number
  - recipient:
      roles: [sender, receiver]
slots:
  route_session_to_calm:
    type: bool
    mappings:
      - type: custom
  city:
    type: text
    mappings:
      - type: from_entity
        entity: city
  amount:
    type: float
    mappings:
      - type: from_entity
        entity: amount
  recipient:
    type: text
    mappings:
      - type: from_entity
        entity: recipient
        role: receiver
  card_number:
    type: text
    mappings:
      - type: from_llm
  note:
    type: text
    mappings:
      - type: from_llm
"""


def load_assistant(
    directory: Path,
    version: str,
    *,
    config: str = INTENT_CONFIG,
    flows: str | None = FLOWS,
    domain: str | None = DOMAIN,
    endpoints: str = "",
    environ: dict[str, str] | None = None,
) -> AppConfig:
    """The files written to `directory` and loaded for Rasa `version`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yml").write_text(config)
    (directory / "endpoints.yml").write_text(endpoints)
    flows_path = domain_path = None
    if flows is not None:
        flows_path = directory / "flows.yml"
        flows_path.write_text(flows)
    if domain is not None:
        domain_path = directory / "domain.yml"
        domain_path.write_text(domain)
    return load_app_config(
        directory / "config.yml",
        directory / "endpoints.yml",
        flows_path,
        environ or {},
        domain=domain_path,
        rasa=rasa_version(version),
    )


def message(
    text: str,
    intent: str | None = None,
    confidence: float = 0.95,
    entities: list[dict[str, Any]] | None = None,
) -> UserMessage:
    """A user message; with `intent`, the parse_data an upstream NLU would have given it."""
    body: dict[str, Any] = {"message_id": uuid.uuid4().hex, "sender_id": "ann", "text": text}
    if intent is not None:
        body["parse_data"] = {
            "intent": {"name": intent, "confidence": confidence},
            "entities": entities or [],
        }
    return UserMessage.model_validate(body)


def decide_now(
    app: AppConfig, text: str, *, session: Route | None = None, **parse: Any
) -> RoutingDecision:
    sticky = StickySession(session, 0, 0.0) if session is not None else None
    decision = CoexistenceRouter(app.assistant).decide_now(sticky, message(text, **parse))
    assert decision is not None, "an IntentBasedRouter without an NLU server decides at once"
    return decision


@dataclass(frozen=True)
class Outcome:
    """What Rasa does with the message: where it goes, and the sender's routing after it."""

    route: Route
    reason: Reason
    after: Route | None  # the sticky route afterwards; None: the router is asked again

    @staticmethod
    def of(decision: RoutingDecision) -> Outcome:
        return Outcome(decision.route, decision.reason, decision.session_after)


CALM_STICKY = Route.CALM, Route.CALM
NLU_STICKY = Route.NLU, Route.NLU
NLU_UNSET = Route.NLU, None


@dataclass(frozen=True)
class Case:
    """One observed decision of Rasa `rasa`, settled by reading `source` (paths in the wheel's
    `rasa` package)."""

    name: str
    rasa: str
    source: str
    text: str
    route: tuple[Route, Route | None]  # (where the message goes, the routing after it)
    reason: Reason
    parse: dict[str, Any] = field(default_factory=dict)  # intent, confidence, entities

    @property
    def expected(self) -> Outcome:
        return Outcome(self.route[0], self.reason, self.route[1])

    def __str__(self) -> str:
        return f"{self.rasa}-{self.name}"
