"""What the router decided for one message, before it is stamped and published."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.models import LlmCall, Reason, Route, RouterName, Routing


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

    def to_routing(self, decided_at: float) -> Routing:
        # Every field is already typed here: construct without re-validating (hot path).
        return Routing.model_construct(
            route=self.route,
            sticky=self.sticky,
            router=self.router,
            reason=self.reason,
            intent=self.intent,
            llm=self.llm,
            decided_at=decided_at,
        )
