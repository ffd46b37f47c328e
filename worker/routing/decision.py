"""What the router decided for one message, before it is stamped and published."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts.models import LlmCall, Reason, Route, RouterName, routing_block


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    route: Route
    sticky: bool
    reason: Reason
    router: RouterName
    intent: str | None = None
    llm: LlmCall | None = None
    # A `/restart` ends the session after routing the message, whatever held it.
    ends_session: bool = False

    @property
    def session_after(self) -> Route | None:
        """The route holding the sender after this message, or None (router engaged)."""
        if self.ends_session or not self.sticky:
            return None
        return self.route

    def routing(self, decided_at: float) -> dict[str, Any]:
        """The `routing` block of the message's inbox record."""
        return routing_block(
            route=self.route,
            sticky=self.sticky,
            router=self.router,
            reason=self.reason,
            intent=self.intent,
            llm=self.llm,
            decided_at=decided_at,
        )
