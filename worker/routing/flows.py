"""The parts of Rasa flows routing reads: each flow's `nlu_trigger` and the slots it collects.

The flows the router sees are the user's flows followed by Rasa's built-in pattern flows of the
selected release that the user did not define (FlowSyncImporter.merge_with_default_flows); a
user flow with a pattern's id replaces the pattern. An assistant without flows gets no patterns
either (FlowSyncImporter.get_flows).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from worker.rasa.releases import PatternCommand, Patterns

PATTERN_PREFIX = "pattern_"  # rasa/shared/constants.py RASA_DEFAULT_FLOW_PATTERN_PREFIX


@dataclass(frozen=True, slots=True)
class NluTrigger:
    flow_id: str
    intent: str
    confidence_threshold: float = 0.0


@dataclass(frozen=True, slots=True)
class Flow:
    id: str
    triggers: tuple[NluTrigger, ...] = ()
    collects: tuple[str, ...] = ()  # slots collected without ask_before_filling


class Flows:
    """The merged flows, in Rasa's order, and what the NLU command adapter reads of them."""

    def __init__(self, user_flows: Sequence[Flow] = (), patterns: Patterns | None = None) -> None:
        flows = list(user_flows)
        self.commands: dict[str, PatternCommand] = {}
        if flows and patterns is not None:
            defined = {flow.id for flow in flows}
            flows.extend(
                Flow(
                    p.flow_id,
                    tuple(NluTrigger(p.flow_id, intent) for intent in p.trigger_intents),
                    p.collects,
                )
                for p in patterns.flows
                if p.flow_id not in defined
            )
            self.commands = dict(patterns.commands)
        self.flows: tuple[Flow, ...] = tuple(flows)
        self.collected: frozenset[str] = frozenset(s for flow in flows for s in flow.collects)
        self._triggers: dict[str, list[tuple[int, NluTrigger]]] = {}
        for order, flow in enumerate(flows):
            for trigger in flow.triggers:
                self._triggers.setdefault(trigger.intent, []).append((order, trigger))

    def __len__(self) -> int:
        return len(self.flows)

    def __iter__(self) -> Iterator[Flow]:
        return iter(self.flows)

    @property
    def trigger_intents(self) -> Iterable[str]:
        return self._triggers.keys()

    def command_for(self, intent: str, confidence: float) -> PatternCommand | None:
        """The command of the first flow `intent` triggers at this confidence (Rasa keeps only
        the first): USER for a user flow's StartFlow or a user pattern command, SYSTEM for a
        system pattern; None when no flow triggers, or only patterns without a command."""
        for _, trigger in self._triggers.get(intent, ()):
            if confidence >= trigger.confidence_threshold:
                command = self._command_of(trigger.flow_id)
                if command is not None:
                    return command
        return None

    def thresholds(self, intent: str) -> list[float]:
        """Thresholds of the triggers on `intent` that produce a command."""
        return [
            t.confidence_threshold
            for _, t in self._triggers.get(intent, ())
            if self._command_of(t.flow_id) is not None
        ]

    def _command_of(self, flow_id: str) -> PatternCommand | None:
        # NLUCommandAdapter.convert_nlu_to_commands: a flow id with the pattern prefix (also a
        # user's) starts only the patterns Rasa maps to a command; any other flow a StartFlow.
        if flow_id.startswith(PATTERN_PREFIX):
            return self.commands.get(flow_id)
        return PatternCommand.USER
