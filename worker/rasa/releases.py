"""What Rasa Pro does differently from release to release, as a table: one row per range of
releases that behave alike for the router, each read from Rasa's published wheels.

`--rasa-version` picks a row (`behaviour_of`); everything version-dependent reads its columns:
the router's default LLM config and where Rasa merges it, the default prompt template, which
keys name a prompt file and what a missing one does, the built-in pattern flows, and how the
payload path (`/intent…`, `/SetSlots(…)`) sets the routing. A new behaviour is a new column, a
new release that changes one is a new row: no version checks anywhere else.

The source files each column was read from (paths inside the `rasa` package of the wheel):

- llm: dialogue_understanding/coexistence/llm_based_router.py (DEFAULT_LLM_CONFIG,
  A_TO_C_TOKEN_IDS_CHATGPT), shared/utils/llm.py (_combine_single_model_configs,
  _apply_default_reasoning_effort); a user's deprecated keys (`max_tokens`) are renamed where
  the model is read (worker.config.endpoints_rules)
- template: dialogue_understanding/coexistence/router_template.jinja2
- prompt_keys: llm_based_router.py (LLMBasedRouter.__init__)
- missing_prompt: shared/utils/llm.py (get_prompt_template)
- patterns: dialogue_understanding/patterns/default_flows_for_patterns.yml, and the
  triggerable-pattern table (dialogue_understanding/commands/pattern_to_command_mapping.py in
  3.11, dialogue_understanding/generator/utils.py from 3.12)
- payload_routing: core/processor.py (_parse_message_with_commands_and_intents,
  _determine_route_to_calm_slot_value)
- set_slots_lists: shared/core/command_payload_reader.py (SET_SLOTS_PATTERN)
- mapping types: shared/core/constants.py (SlotMappingType), shared/core/slot_mappings.py
- session: shared/core/domain.py (SessionConfig), core/processor.py (_update_tracker_session)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType


@dataclass(frozen=True, order=True, slots=True)
class Release:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def line(self) -> str:
        return f"{self.major}.{self.minor}"

    @classmethod
    def parse(cls, text: str) -> Release:
        """`3.11.20` (exactly three numbers)."""
        major, minor, patch = (int(part) for part in text.split("."))
        return cls(major, minor, patch)


class MissingPrompt(StrEnum):
    """What Rasa does when the prompt file a config names cannot be read."""

    DEFAULT = "warns, uses the default"
    REFUSED = "refused"


class PayloadRouting(StrEnum):
    """How Rasa's payload path sets the routing of a sender with none (`/intent…` text)."""

    # CALM sticky when the command adapter produced any command, else NLU sticky.
    ANY_COMMAND = "any command: CALM"
    # System commands (session start/end, restart) alone leave the routing unset: NLU for the
    # turn, the router is asked again next time.
    USER_COMMAND = "system commands alone: unset"


class PatternCommand(StrEnum):
    """The command a triggered pattern flow produces; system ones do not route to CALM on the
    payload path (PayloadRouting.USER_COMMAND)."""

    SYSTEM = "system"
    USER = "user"


@dataclass(frozen=True, slots=True)
class RouterLlmDefaults:
    """LLMBasedRouter.DEFAULT_LLM_CONFIG of a release, and how Rasa merges it into a model."""

    model: str
    temperature: float
    token_limit_key: str | None  # `max_tokens`, `max_completion_tokens`, or none sent
    logit_bias_ids: tuple[int, ...]  # the ids of " A", " B", " C" that get bias 100; () = none
    timeout: float  # client side, never on the wire
    reasoning_effort: str | None
    # Providers whose deployments get these defaults (Rasa merges only where the deployment's
    # provider is the default's); every other deployment sends only what the user wrote.
    merged_into: frozenset[str] = frozenset({"openai"})
    # From 3.16 Rasa picks the default reasoning effort per deployment from its model family
    # (openai, and azure models that name one): the first matching prefix, else none at all.
    effort_by_model: tuple[tuple[str, str | None], ...] = ()

    @property
    def token_limit(self) -> int | None:
        return 1 if self.token_limit_key is not None else None


@dataclass(frozen=True, slots=True)
class PatternFlow:
    """A built-in pattern flow as routing sees it: its NLU trigger intents (threshold 0) and the
    slots it collects without `ask_before_filling`. A user flow of the same id replaces it."""

    flow_id: str
    trigger_intents: tuple[str, ...] = ()
    collects: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Patterns:
    """Rasa's built-in pattern flows as far as routing sees them."""

    flows: tuple[PatternFlow, ...]
    commands: Mapping[str, PatternCommand]  # pattern flows the NLU command adapter can start
    slots: tuple[str, ...]  # slots of the patterns' domain (all `from_llm` or unmapped)


@dataclass(frozen=True, slots=True)
class ReleaseRange:
    """A row of a per-release table: the releases `first`..`last` (both included)."""

    first: Release
    last: Release
    read_from: tuple[str, ...]  # the releases whose source this row was checked against

    def covers(self, release: Release) -> bool:
        return self.first <= release <= self.last

    @property
    def releases(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}–{self.last}"


@dataclass(frozen=True, slots=True)
class RasaBehaviour(ReleaseRange):
    """One row: the releases `first`..`last` behave alike for everything below."""

    llm: RouterLlmDefaults
    template: str  # file in worker/rasa/templates/, the default router_template.jinja2
    prompt_keys: tuple[str, ...]  # config keys naming the prompt file, the first given wins
    missing_prompt: MissingPrompt
    patterns: Patterns
    payload_routing: PayloadRouting
    set_slots_lists: bool  # `/SetSlots(x=[a, b])` reads a bracketed list as one value
    mapping_types: frozenset[str]  # slot mapping types the domain may use
    mapping_aliases: Mapping[str, str]  # deprecated mapping types read as another
    untyped_mapping: str | None  # the type of a mapping without `type`; None: refused
    builtin_slots: tuple[str, ...]  # slots every domain has (`requested_slot` too with forms)
    start_session_after_expiry: bool  # session_config.start_session_after_expiry is read

    @property
    def template_text(self) -> str:
        return template_text(self.template)


def template_text(name: str) -> str:
    """A built-in router template as Rasa uses it: stripped (LLMBasedRouter.__init__)."""
    # A file next to this module rather than importlib.resources: setuptools' editable finder
    # can serve `worker` as a namespace package, which resources cannot read from.
    return (Path(__file__).resolve().parent / "templates" / name).read_text().strip()


# ---- the facts the rows share ------------------------------------------------------------------

# The ids of " A", " B", " C" in OpenAI's tokenizers, which Rasa boosts with logit_bias 100.
CL100K_ABC = (362, 426, 356)  # gpt-3.5-turbo, gpt-4, gpt-4-turbo
O200K_ABC = (355, 418, 363)  # the gpt-4o family, gpt-4.1, gpt-4.5

_LLM_3_11_0 = RouterLlmDefaults(
    model="gpt-3.5-turbo",
    temperature=0.0,
    token_limit_key="max_tokens",
    logit_bias_ids=CL100K_ABC,
    timeout=7.0,
    reasoning_effort=None,
)
_LLM_3_11_14 = replace(_LLM_3_11_0, token_limit_key="max_completion_tokens")
_LLM_3_13 = replace(_LLM_3_11_14, model="gpt-4o-2024-11-20", logit_bias_ids=O200K_ABC)
# shared/utils/llm.py _REASONING_EFFORT_LOWEST_BY_MODEL_PREFIX (the same 3.16.0-3.21.0), which
# Rasa consults after litellm's capability data; where that data answers first for a family it
# is written here first (litellm 1.101: gpt-5-chat models have no reasoning effort).
_EFFORT_BY_MODEL: tuple[tuple[str, str | None], ...] = (
    ("gpt-5-chat", None),
    ("gpt-5.4-mini", "none"),
    ("gpt-5.4-nano", "none"),
    ("gpt-5.4", "none"),
    ("gpt-5.2-pro", "low"),
    ("gpt-5.2", "none"),
    ("gpt-5.1-codex-max", "low"),
    ("gpt-5.1-codex-mini", "low"),
    ("gpt-5.1-codex", "low"),
    ("gpt-5.1", "none"),
    ("gpt-5-codex", "low"),
    ("gpt-5-pro", "high"),
    ("gpt-5-mini", "minimal"),
    ("gpt-5-nano", "minimal"),
    ("gpt-5", "minimal"),
)
_LLM_3_16 = RouterLlmDefaults(
    model="gpt-5-mini-2025-08-07",
    temperature=1.0,
    token_limit_key=None,
    logit_bias_ids=(),
    timeout=7.0,
    reasoning_effort="minimal",
    effort_by_model=_EFFORT_BY_MODEL,
)

_SYSTEM, _USER = PatternCommand.SYSTEM, PatternCommand.USER
_COMMANDS_3_11 = MappingProxyType(
    {
        "pattern_session_start": _SYSTEM,
        "pattern_user_silence": _USER,
        "pattern_cancel_flow": _USER,
        "pattern_chitchat": _USER,
        "pattern_human_handoff": _USER,
        "pattern_search": _USER,
        "pattern_skip_question": _USER,
        "pattern_cannot_handle": _USER,
        "pattern_restart": _SYSTEM,
    }
)
_COMMANDS_3_16 = MappingProxyType(
    {
        "pattern_session_start": _SYSTEM,
        "pattern_user_silence": _USER,
        "pattern_cancel_flow": _USER,
        "pattern_chitchat": _USER,
        "pattern_search": _USER,
        "pattern_skip_question": _USER,
        "pattern_cannot_handle": _USER,
        "pattern_restart": _SYSTEM,
        "pattern_session_end": _SYSTEM,
    }
)
_RESTART = PatternFlow("pattern_restart", ("restart",))
_SESSION_START = PatternFlow("pattern_session_start", ("session_start",))
_USER_SILENCE = PatternFlow("pattern_user_silence", ("silence_timeout",))
_SESSION_END = PatternFlow("pattern_session_end", ("session_end",))
_INTERRUPTED = ("interrupted_flow_to_continue", "continue_interrupted_flow_confirmation")
_CONTINUE_INTERRUPTED = PatternFlow("pattern_continue_interrupted", collects=_INTERRUPTED)
_DIGRESSIONS = PatternFlow("pattern_handle_digressions", collects=("continue_previous_flow",))
_SLOTS_3_11 = ("confirm_correction", "consecutive_silence_timeouts", "silence_timeout")
_SLOTS_3_14 = (*_SLOTS_3_11, *_INTERRUPTED)
_SLOTS_3_15 = (*_SLOTS_3_14, "continue_conversation", "max_clarification_options")

_PATTERNS_3_11 = Patterns((_RESTART, _SESSION_START, _USER_SILENCE), _COMMANDS_3_11, _SLOTS_3_11)
_PATTERNS_3_12_0 = Patterns(
    (_RESTART, _SESSION_START, _USER_SILENCE, _DIGRESSIONS),
    _COMMANDS_3_11,
    (*_SLOTS_3_11, "continue_previous_flow"),
)
_PATTERNS_3_14 = Patterns(
    (_RESTART, _SESSION_START, _USER_SILENCE, _CONTINUE_INTERRUPTED), _COMMANDS_3_11, _SLOTS_3_14
)
_PATTERNS_3_15 = Patterns(
    (_RESTART, _SESSION_START, _USER_SILENCE, _CONTINUE_INTERRUPTED), _COMMANDS_3_11, _SLOTS_3_15
)
_PATTERNS_3_16 = Patterns(
    (_RESTART, _SESSION_END, _SESSION_START, _USER_SILENCE, _CONTINUE_INTERRUPTED),
    _COMMANDS_3_16,
    (*_SLOTS_3_15, "csat_score"),
)

_NLU_MAPPINGS = ("from_entity", "from_intent", "from_trigger_intent", "from_text", "from_llm")
_MAPPINGS_3_11 = frozenset({*_NLU_MAPPINGS, "custom"})
_MAPPINGS_3_12 = frozenset({*_NLU_MAPPINGS, "controlled"})
_ALIASES_3_12 = MappingProxyType({"custom": "controlled"})
_NO_ALIASES: Mapping[str, str] = MappingProxyType({})
_BUILTIN_3_11 = ("flow_hashes", "session_started_metadata")
_BUILTIN_3_15 = (*_BUILTIN_3_11, "mocked_datetime")

_OLD_TEMPLATE = "router_3.11.jinja2"
_NEW_TEMPLATE = "router_3.16.jinja2"
_PROMPT = ("prompt",)
_PROMPT_TEMPLATE = ("prompt_template", "prompt")


def _row(
    first: str,
    last: str,
    llm: RouterLlmDefaults,
    patterns: Patterns,
    payload_routing: PayloadRouting,
    refuses_missing_prompt: bool,
    read_from: tuple[str, ...],
) -> RasaBehaviour:
    """A row; the columns that only ever changed with a new line follow from `first`."""
    start = Release.parse(first)
    return RasaBehaviour(
        first=start,
        last=Release.parse(last),
        read_from=read_from or tuple(dict.fromkeys((first, last))),
        llm=llm,
        template=_NEW_TEMPLATE if start >= Release(3, 16, 0) else _OLD_TEMPLATE,
        prompt_keys=_PROMPT_TEMPLATE if start >= Release(3, 13, 0) else _PROMPT,
        missing_prompt=MissingPrompt.REFUSED if refuses_missing_prompt else MissingPrompt.DEFAULT,
        patterns=patterns,
        payload_routing=payload_routing,
        set_slots_lists=refuses_missing_prompt,  # the same patch releases changed both
        mapping_types=_MAPPINGS_3_12 if start >= Release(3, 12, 0) else _MAPPINGS_3_11,
        mapping_aliases=_ALIASES_3_12 if start >= Release(3, 12, 0) else _NO_ALIASES,
        untyped_mapping="from_llm" if start >= Release(3, 12, 0) else None,
        builtin_slots=_BUILTIN_3_15 if start >= Release(3, 15, 0) else _BUILTIN_3_11,
        start_session_after_expiry=start >= Release(3, 16, 0),
    )


_ANY, _USER_ONLY = PayloadRouting.ANY_COMMAND, PayloadRouting.USER_COMMAND
_READ_FROM_3_16 = ("3.16.0", "3.16.32", "3.17.0", "3.17.12", "3.18.0", "3.18.9", "3.19.0",
                   "3.19.9", "3.20.0", "3.20.5", "3.21.0")  # fmt: skip

# Where a line changed within itself, the boundary was found by reading every release around it
# (3.11.13/3.11.14, 3.11.15/3.11.16, 3.12.5/3.12.6, 3.12.13/3.12.14, 3.12.17/3.12.18,
# 3.12.41/3.12.42, 3.13.18/3.13.19, 3.14.6/3.14.7, 3.15.2/3.15.3). "refuses" is
# missing_prompt and set_slots_lists; an empty "read from" is the row's first and last release.
_ROWS: tuple[
    tuple[str, str, RouterLlmDefaults, Patterns, PayloadRouting, bool, tuple[str, ...]], ...
] = (
    # first     last       llm           patterns          payload     refuses    read from
    ("3.11.0",  "3.11.13", _LLM_3_11_0,  _PATTERNS_3_11,   _ANY,       False,     ()),
    ("3.11.14", "3.11.15", _LLM_3_11_14, _PATTERNS_3_11,   _ANY,       False,     ()),
    ("3.11.16", "3.11.20", _LLM_3_11_14, _PATTERNS_3_11,   _USER_ONLY, False,     ()),
    ("3.12.0",  "3.12.5",  _LLM_3_11_0,  _PATTERNS_3_12_0, _ANY,       False,     ()),
    ("3.12.6",  "3.12.13", _LLM_3_11_0,  _PATTERNS_3_11,   _ANY,       False,     ()),
    ("3.12.14", "3.12.17", _LLM_3_11_14, _PATTERNS_3_11,   _ANY,       False,     ()),
    ("3.12.18", "3.12.41", _LLM_3_11_14, _PATTERNS_3_11,   _USER_ONLY, False,     ()),
    ("3.12.42", "3.12.42", _LLM_3_11_14, _PATTERNS_3_11,   _USER_ONLY, True,      ()),
    ("3.13.0",  "3.13.18", _LLM_3_13,    _PATTERNS_3_11,   _USER_ONLY, False,     ()),
    ("3.13.19", "3.13.25", _LLM_3_13,    _PATTERNS_3_11,   _USER_ONLY, True,      ()),
    ("3.14.0",  "3.14.6",  _LLM_3_13,    _PATTERNS_3_14,   _USER_ONLY, False,     ()),
    ("3.14.7",  "3.14.29", _LLM_3_13,    _PATTERNS_3_14,   _USER_ONLY, True,      ()),
    ("3.15.0",  "3.15.2",  _LLM_3_13,    _PATTERNS_3_15,   _USER_ONLY, False,     ()),
    ("3.15.3",  "3.15.36", _LLM_3_13,    _PATTERNS_3_15,   _USER_ONLY, True,      ()),
    ("3.16.0",  "3.21.0",  _LLM_3_16,    _PATTERNS_3_16,   _USER_ONLY, True,      _READ_FROM_3_16),
)  # fmt: skip
RELEASES: tuple[RasaBehaviour, ...] = tuple(_row(*columns) for columns in _ROWS)

# The newest published release of every supported line (PyPI `rasa-pro`).
NEWEST_OF_LINE: Mapping[str, Release] = MappingProxyType(
    {
        release.line: release
        for release in map(
            Release.parse,
            ("3.11.20", "3.12.42", "3.13.25", "3.14.29", "3.15.36", "3.16.32", "3.17.12",
             "3.18.9", "3.19.9", "3.20.5", "3.21.0"),
        )
    }
)  # fmt: skip
DEFAULT_VERSION = "3.11"  # the newest 3.11 release
VERSION_VARIABLE = "COEXISTENCE_ROUTER_RASA_VERSION"

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


class UnknownRasaVersion(ValueError):
    pass


def supported_versions() -> str:
    return ", ".join(
        f"{line}.0–{newest}" if newest.patch else str(newest)
        for line, newest in NEWEST_OF_LINE.items()
    )


def resolve_release(version: str) -> Release:
    """`3.11` (the newest 3.11) or `3.11.7`; UnknownRasaVersion lists what is supported."""
    match = _VERSION.fullmatch(version.strip())
    newest = NEWEST_OF_LINE.get(f"{match.group(1)}.{match.group(2)}") if match else None
    if match is None or newest is None:
        raise UnknownRasaVersion(
            f"Rasa Pro {version!r} is not supported; supported releases: {supported_versions()}"
        )
    release = (
        newest
        if match.group(3) is None
        else Release(newest.major, newest.minor, int(match.group(3)))
    )
    if release > newest:
        raise UnknownRasaVersion(
            f"Rasa Pro {release} is not a published release (the newest {newest.line} is "
            f"{newest}); supported releases: {supported_versions()}"
        )
    return release


def behaviour_of(release: Release) -> RasaBehaviour:
    for row in RELEASES:
        if row.covers(release):
            return row
    raise UnknownRasaVersion(f"Rasa Pro {release}: no row of the release table covers it")


@dataclass(frozen=True, slots=True)
class RasaVersion:
    """The Rasa Pro release whose routing is reproduced, and its row of the table."""

    release: Release
    behaviour: RasaBehaviour

    def __str__(self) -> str:
        return f"Rasa Pro {self.release}"


def rasa_version(version: str = DEFAULT_VERSION) -> RasaVersion:
    """`--rasa-version`: UnknownRasaVersion (listing the supported releases) when unknown."""
    release = resolve_release(version)
    return RasaVersion(release, behaviour_of(release))


DEFAULT_RASA = rasa_version()
DEFAULT_BEHAVIOUR = DEFAULT_RASA.behaviour


def _bias(llm: RouterLlmDefaults) -> str:
    return "/".join(map(str, llm.logit_bias_ids)) if llm.logit_bias_ids else "none"


def markdown_table() -> str:
    """The README's table of these rows (a unit test keeps the README equal to it)."""
    header = (
        "| releases | default model | temperature | token limit | logit bias ids "
        "| reasoning effort | template | prompt file keys | missing prompt file "
        "| pattern triggers | payload of system commands only | `/SetSlots` lists "
        "| read from |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for row in RELEASES:
        llm = row.llm
        effort = llm.reasoning_effort or "none"
        if llm.effort_by_model:
            effort += " (by model)"
        triggers = ", ".join(
            f"{intent}" for flow in row.patterns.flows for intent in flow.trigger_intents
        )
        lines.append(
            " | ".join(
                [
                    f"| {row.releases}",
                    f"`{llm.model}`",
                    f"{llm.temperature}",
                    f"`{llm.token_limit_key}: 1`" if llm.token_limit_key else "none",
                    _bias(llm),
                    effort,
                    f"`{row.template}`",
                    ", ".join(f"`{key}`" for key in row.prompt_keys),
                    row.missing_prompt.value,
                    triggers,
                    "CALM sticky"
                    if row.payload_routing is PayloadRouting.ANY_COMMAND
                    else "NLU, unset",
                    "yes" if row.set_slots_lists else "no",
                    ", ".join(row.read_from) + " |",
                ]
            )
        )
    return "\n".join(lines)
