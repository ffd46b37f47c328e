"""The parts of a Rasa domain that routing reads: intents, entities, slots with their NLU
mappings, and session_config. Loaded and checked by worker.config.domain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# rasa/shared/core/constants.py DEFAULT_INTENTS, the same in every release 3.11-3.21: every
# domain has them, also one that does not list them (and Rasa's empty domain).
DEFAULT_INTENTS = frozenset(
    {"restart", "back", "out_of_scope", "session_start", "session_end", "silence_timeout",
     "nlu_fallback"}
)  # fmt: skip
# rasa/shared/constants.py: DEFAULT_SESSION_EXPIRATION_TIME_IN_MINUTES and
# DEFAULT_CARRY_OVER_SLOTS_TO_NEW_SESSION (DEFAULT_START_SESSION_AFTER_EXPIRY from 3.16).
DEFAULT_SESSION_EXPIRATION_MINUTES = 60.0


# An `active_loop` a condition does not name (Rasa's SlotMappingCondition uses "" for it, since
# `active_loop: null` is a condition of its own: no form active).
NOT_GIVEN = ""


@dataclass(frozen=True, slots=True)
class MappingCondition:
    active_loop: str | None = NOT_GIVEN
    requested_slot: str | None = None
    active_flow: str | None = None


@dataclass(frozen=True, slots=True)
class SlotMapping:
    """One entry of a slot's `mappings:`; `intents`/`not_intents` as lists (Rasa's to_list)."""

    type: str
    entity: str | None = None
    role: str | None = None
    group: str | None = None
    intents: tuple[str, ...] = ()
    not_intents: tuple[str, ...] = ()
    value: Any = None
    conditions: tuple[MappingCondition, ...] = ()


@dataclass(frozen=True, slots=True)
class Slot:
    name: str
    type: str = "any"
    mappings: tuple[SlotMapping, ...] = ()
    initial_value: Any = None

    @property
    def is_list(self) -> bool:
        """A list slot keeps every extracted value, the others the last one."""
        return self.type == "list"


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """`session_config:` with Rasa's defaults."""

    expiration_minutes: float = DEFAULT_SESSION_EXPIRATION_MINUTES
    carry_over_slots: bool = True
    start_session_after_expiry: bool = True  # read from Rasa 3.16 on

    def routing_expiry_seconds(self) -> float:
        """Idle seconds after which Rasa drops a sender's routing, 0 = never.

        A Rasa session expiry starts a new session (action_session_start) that carries the
        slots over, the routing slot among them, unless carry_over_slots_to_new_session is
        false; and from 3.16 no new session starts at all with start_session_after_expiry:
        false. Sessions never expire with session_expiration_time 0.
        """
        if self.expiration_minutes <= 0 or self.carry_over_slots:
            return 0.0
        if not self.start_session_after_expiry:
            return 0.0
        return self.expiration_minutes * 60


@dataclass(frozen=True, slots=True)
class Domain:
    """A domain as Rasa holds it once loaded: its intents include Rasa's default intents and
    `slot_names` the slots Rasa adds itself (built-in and pattern slots)."""

    intents: frozenset[str] = DEFAULT_INTENTS
    entities: frozenset[str] = frozenset()
    slots: tuple[Slot, ...] = ()
    slot_names: frozenset[str] = frozenset()
    session: SessionConfig = field(default_factory=SessionConfig)


# Rasa's Domain.empty(): what the IntentBasedRouter hands the NLU command adapter (no domain).
EMPTY_DOMAIN = Domain()
