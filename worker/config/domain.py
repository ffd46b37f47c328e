"""Rasa's domain YAML (`--domain FILE_OR_DIR`): intents, entities, slots with their mappings,
and session_config, read and merged as Rasa reads them (shared/core/domain.py Domain.load,
from_directory, merge_domain_dicts; the domain schema of shared/utils/schemas/domain.yml).

A directory is read recursively; a YAML file is a domain file when it has any domain key
(`intents`, `entities`, `slots`, `responses`, `actions`, `forms`, `e2e_actions`,
`session_config`). Files are merged in path order: intents, entities and slots of an earlier
file win over the same names later (Rasa warns, as the worker does); the first
`session_config` that is not Rasa's default is kept; a response defined twice is refused.

Refused, one line per problem, as Rasa refuses them: a section of the wrong type, an intent or
entity entry that is neither a name nor a `{name: {…}}` mapping, a slot without `type` or of an
unknown type, a slot mapping of an unknown type (`custom` reads as `controlled` from 3.12; a
mapping without `type` is `from_llm` from 3.12 and refused in 3.11) or without the key its
type needs (`entity` for from_entity, `value` for from_intent and from_trigger_intent), a
mapping condition with other keys than active_loop, requested_slot and active_flow, and a
session_config whose expiration time is not a number >= 0 or whose flags are not booleans.
Rasa itself falls back to an empty domain (with a warning) for some of these; refusing is
safer than routing without the domain the user meant.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.config.errors import ConfigError, display_name, problem
from worker.config.yaml_files import read_yaml
from worker.rasa.releases import RasaBehaviour
from worker.routing.domain import (
    DEFAULT_INTENTS,
    DEFAULT_SESSION_EXPIRATION_MINUTES,
    NOT_GIVEN,
    Domain,
    MappingCondition,
    SessionConfig,
    Slot,
    SlotMapping,
)

DOMAIN_SUFFIXES = (".yml", ".yaml")
DOMAIN_KEYS = (
    "intents",
    "entities",
    "slots",
    "responses",
    "actions",
    "forms",
    "e2e_actions",
    "session_config",
)
ROUTING_SLOT = "route_session_to_calm"
SLOT_TYPES = frozenset({"text", "bool", "categorical", "float", "list", "any"})
_MODULE_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+")
_REQUIRED_MAPPING_KEYS = {
    "from_entity": "entity",
    "from_intent": "value",
    "from_trigger_intent": "value",
}
_CONDITION_KEYS = frozenset({"active_loop", "requested_slot", "active_flow"})
_DEFAULT_SESSION = {"session_expiration_time": DEFAULT_SESSION_EXPIRATION_MINUTES,
                    "carry_over_slots_to_new_session": True}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _DomainFile:
    file: str
    data: dict[str, Any]


def _domain_files(path: Path, problems: list[str]) -> Iterator[_DomainFile]:
    files = (
        sorted(p for p in path.rglob("*") if p.suffix in DOMAIN_SUFFIXES and p.is_file())
        if path.is_dir()
        else [path]
    )
    for domain_file in files:
        file = display_name(domain_file)
        ok, document = read_yaml(domain_file, problems)
        if not ok:
            continue
        if document is None:
            document = {}
        if not isinstance(document, dict):
            if not path.is_dir():
                problems.append(f"{file}: must be a mapping of domain sections (intents, slots, …)")
            continue
        if path.is_dir() and not any(key in document for key in DOMAIN_KEYS):
            continue  # flows, NLU data, stories: not a domain file
        yield _DomainFile(file, document)


def _names(
    entries: object, *, file: str, key: str, problems: list[str]
) -> dict[str, dict[str, Any]]:
    """`intents:` / `entities:`: names, or `{name: {properties}}` mappings of one key."""
    if entries is None:
        return {}
    if not isinstance(entries, list):
        problems.append(problem(file, key, "must be a list of names"))
        return {}
    found: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, str) and entry:
            found.setdefault(entry, {})
        elif isinstance(entry, dict) and len(entry) == 1:
            [(name, properties)] = entry.items()
            if not isinstance(name, str) or not (
                properties is None or isinstance(properties, dict)
            ):
                problems.append(problem(file, f"{key}[{i}]", "must be `name` or `name: {…}`"))
                continue
            found.setdefault(name, properties or {})
        else:
            problems.append(problem(file, f"{key}[{i}]", "must be `name` or `name: {…}`"))
    return found


def _section(data: dict[str, Any], key: str, file: str, problems: list[str]) -> dict[Any, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(problem(file, key, "must be a mapping"))
        return {}
    return value


@dataclass
class _Merged:
    intents: dict[str, dict[str, Any]]
    entities: dict[str, dict[str, Any]]
    slots: dict[str, tuple[str, Any]]  # name -> (file it came from, definition)
    responses: dict[str, str]
    forms: bool
    session: tuple[str, dict[Any, Any]] | None


def _merge(files: list[_DomainFile], problems: list[str], warnings: list[str]) -> _Merged:
    merged = _Merged({}, {}, {}, {}, False, None)
    for domain_file in files:
        file, data = domain_file.file, domain_file.data
        for key, target in (("intents", merged.intents), ("entities", merged.entities)):
            for name, properties in _names(
                data.get(key), file=file, key=key, problems=problems
            ).items():
                if name in target:
                    warnings.append(
                        problem(
                            file,
                            f"{key}.{name}",
                            "defined in another domain file too; the first is used",
                        )
                    )
                target.setdefault(name, properties)
        for name, slot in _section(data, "slots", file, problems).items():
            if str(name) in merged.slots:
                warnings.append(
                    problem(
                        file,
                        f"slots.{name}",
                        f"defined in {merged.slots[str(name)][0]} too; that one is used",
                    )
                )
                continue
            merged.slots[str(name)] = (file, slot)
        for name in _section(data, "responses", file, problems):
            if str(name) in merged.responses:
                problems.append(
                    problem(
                        file,
                        f"responses.{name}",
                        f"defined in {merged.responses[str(name)]} too; "
                        "Rasa refuses a response defined twice",
                    )
                )
            merged.responses.setdefault(str(name), file)
        merged.forms = merged.forms or bool(_section(data, "forms", file, problems))
        session = data.get("session_config")
        if session is not None and _replaces(merged.session, session):
            merged.session = (file, session)
    return merged


def _replaces(current: tuple[str, Any] | None, session: object) -> bool:
    """merge_domain_dicts: a later file's session_config replaces one that is Rasa's default."""
    return current is None or (current[1] == _DEFAULT_SESSION and session != _DEFAULT_SESSION)


def _condition(
    raw: object, *, file: str, path: str, problems: list[str]
) -> MappingCondition | None:
    if not isinstance(raw, dict):
        problems.append(
            problem(file, path, "must be a mapping (active_loop, requested_slot, active_flow)")
        )
        return None
    unknown = sorted(str(k) for k in raw if k not in _CONDITION_KEYS)
    if unknown:
        problems.append(problem(file, path, f"unknown key(s) {', '.join(unknown)}"))
        return None
    for key in _CONDITION_KEYS:
        if key in raw and raw[key] is not None and not isinstance(raw[key], str):
            problems.append(problem(file, f"{path}.{key}", "must be a name"))
            return None
    return MappingCondition(
        active_loop=raw.get("active_loop", NOT_GIVEN),
        requested_slot=raw.get("requested_slot"),
        active_flow=raw.get("active_flow"),
    )


def _as_names(value: object) -> tuple[str, ...] | None:
    """SlotMapping.to_list: one name, a list of them, or nothing."""
    if value is None:
        return ()
    values: list[Any] = value if isinstance(value, list) else [value]
    return tuple(str(v) for v in values) if all(isinstance(v, str) for v in values) else None


def _mapping(
    raw: object, *, file: str, path: str, rasa: RasaBehaviour, problems: list[str]
) -> SlotMapping | None:
    if not isinstance(raw, dict):
        problems.append(problem(file, path, "a slot mapping must be a mapping with a type"))
        return None
    given = raw.get("type")
    mapping_type = given if isinstance(given, str) else rasa.untyped_mapping or ""
    if given is not None and not isinstance(given, str):
        mapping_type = ""
    mapping_type = rasa.mapping_aliases.get(mapping_type, mapping_type)
    if mapping_type not in rasa.mapping_types:
        known = ", ".join(sorted(rasa.mapping_types))
        what = (
            f"required key is missing (Rasa {rasa.releases} has no default mapping type)"
            if given is None
            else f"not a slot mapping type of Rasa {rasa.releases} ({known})"
        )
        problems.append(problem(file, f"{path}.type", what))
        return None
    needed = _REQUIRED_MAPPING_KEYS.get(mapping_type)
    if needed is not None and raw.get(needed) is None:
        problems.append(
            problem(file, f"{path}.{needed}", f"a {mapping_type} mapping needs {needed}")
        )
        return None
    for key in ("entity", "role", "group"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            problems.append(problem(file, f"{path}.{key}", "must be a name"))
            return None
    intents, not_intents = _as_names(raw.get("intent")), _as_names(raw.get("not_intent"))
    if intents is None or not_intents is None:
        key = "intent" if intents is None else "not_intent"
        problems.append(problem(file, f"{path}.{key}", "must be an intent name or a list of them"))
        return None
    conditions_raw = raw.get("conditions") or []
    if not isinstance(conditions_raw, list):
        problems.append(problem(file, f"{path}.conditions", "must be a list of conditions"))
        return None
    conditions = [
        _condition(c, file=file, path=f"{path}.conditions[{i}]", problems=problems)
        for i, c in enumerate(conditions_raw)
    ]
    if any(c is None for c in conditions):
        return None
    return SlotMapping(
        type=mapping_type,
        entity=raw.get("entity"),
        role=raw.get("role"),
        group=raw.get("group"),
        intents=intents,
        not_intents=not_intents,
        value=raw.get("value"),
        conditions=tuple(c for c in conditions if c is not None),
    )


def _slot(
    name: str, raw: object, *, file: str, rasa: RasaBehaviour, problems: list[str]
) -> Slot | None:
    path = f"slots.{name}"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(problem(file, path, "must be a mapping with a type"))
        return None
    slot_type = raw.get("type")
    if slot_type is None:
        problems.append(problem(file, f"{path}.type", "required key is missing"))
        return None
    if not isinstance(slot_type, str) or (
        slot_type not in SLOT_TYPES and not _MODULE_PATH.fullmatch(slot_type)
    ):
        problems.append(
            problem(
                file,
                f"{path}.type",
                f"unknown slot type ({', '.join(sorted(SLOT_TYPES))}, or a module path)",
            )
        )
        return None
    raw_mappings = raw.get("mappings")
    if raw_mappings is None:
        raw_mappings = [{"type": "from_llm"}]  # Domain.collect_slots
    if not isinstance(raw_mappings, list):
        problems.append(problem(file, f"{path}.mappings", "must be a list of mappings"))
        return None
    mappings = [
        _mapping(m, file=file, path=f"{path}.mappings[{i}]", rasa=rasa, problems=problems)
        for i, m in enumerate(raw_mappings)
    ]
    if any(m is None for m in mappings):
        return None
    return Slot(
        name,
        slot_type,
        tuple(m for m in mappings if m is not None),
        initial_value=raw.get("initial_value"),
    )


def _session(raw: object, *, file: str, rasa: RasaBehaviour, problems: list[str]) -> SessionConfig:
    if raw is None:
        return SessionConfig()
    if not isinstance(raw, dict):
        problems.append(problem(file, "session_config", "must be a mapping"))
        return SessionConfig()
    minutes = raw.get("session_expiration_time")
    if minutes is None:
        minutes = DEFAULT_SESSION_EXPIRATION_MINUTES
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes < 0:
        problems.append(
            problem(
                file, "session_config.session_expiration_time", "must be a number of minutes >= 0"
            )
        )
        minutes = DEFAULT_SESSION_EXPIRATION_MINUTES
    flags = {"carry_over_slots_to_new_session": True, "start_session_after_expiry": True}
    for key in flags:
        value = raw.get(key, True)
        if not isinstance(value, bool):
            problems.append(problem(file, f"session_config.{key}", "must be true or false"))
        else:
            flags[key] = value
    return SessionConfig(
        expiration_minutes=float(minutes),
        carry_over_slots=flags["carry_over_slots_to_new_session"],
        # Rasa reads this key from 3.16; earlier releases ignore it.
        start_session_after_expiry=(
            flags["start_session_after_expiry"] if rasa.start_session_after_expiry else True
        ),
    )


def load_domain(
    path: Path | None,
    rasa: RasaBehaviour,
    *,
    pattern_slots: tuple[str, ...] = (),
    warnings: list[str] | None = None,
) -> Domain | None:
    """The merged domain of a file or directory, None without one. `pattern_slots`: the slots
    Rasa's pattern domain adds (it is merged only when the assistant has flows)."""
    if path is None:
        return None
    if not path.exists():
        raise ConfigError([f"{display_name(path)}: domain file or directory not found"])
    warnings = warnings if warnings is not None else []
    problems: list[str] = []
    files = list(_domain_files(path, problems))
    if not files and not problems:
        raise ConfigError(
            [f"{display_name(path)}: no domain file found (YAML with intents, slots, …)"]
        )
    merged = _merge(files, problems, warnings)
    slots = [
        slot
        for name, (file, raw) in merged.slots.items()
        if (slot := _slot(name, raw, file=file, rasa=rasa, problems=problems)) is not None
    ]
    session_file, session_raw = merged.session or (files[0].file if files else "", None)
    session = _session(session_raw, file=session_file, rasa=rasa, problems=problems)
    if problems:
        raise ConfigError(problems)
    builtin = set(rasa.builtin_slots) | ({"requested_slot"} if merged.forms else set())
    return Domain(
        intents=frozenset(merged.intents) | DEFAULT_INTENTS,
        entities=frozenset(merged.entities),
        slots=tuple(slots),
        slot_names=frozenset(merged.slots) | builtin | set(pattern_slots),
        session=session,
    )
