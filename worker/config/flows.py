"""Rasa's flows YAML: each flow's `nlu_trigger` and `collect` steps, checked as Rasa checks them.

Rasa refuses (flows_yaml_schema.json, shared/core/flows/validation.py; the same rules in 3.11
to 3.21): `flows` that is not a mapping, a flow without `description` or `steps`, a flow without
steps, an `nlu_trigger` that is not a non-empty list of `- intent: name` /
`- intent: {name: …, confidence_threshold: <number>}` items, and one intent triggering two
flows. Any threshold is a number Rasa takes, above 1 too. A flow id defined twice (in one
directory) is refused as well. Rasa reads every string value of a trigger item as an intent, so
`- name: pay` triggers on `pay`: that is kept, with a warning.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from worker.config.errors import ConfigError, display_name, problem
from worker.config.yaml_files import read_yaml
from worker.routing.flows import Flow, NluTrigger

FLOW_SUFFIXES = (".yml", ".yaml")
_NESTED_STEP_KEYS = ("then", "else")


def _flow_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in FLOW_SUFFIXES and p.is_file())
    return [path]


def _is_number(value: object) -> bool:
    # YAML `true` is an int to Python, but not a number to JSON Schema.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _intent_mapping_problem(intent: dict[Any, Any]) -> str | None:
    if not isinstance(intent.get("name"), str):
        return "name: must be an intent name"
    if "confidence_threshold" in intent and not _is_number(intent["confidence_threshold"]):
        return "confidence_threshold: must be a number"
    return None


def _triggers(
    listed: object, *, flow_id: str, file: str, path: str, problems: list[str], warnings: list[str]
) -> list[NluTrigger]:
    if not isinstance(listed, list) or not listed:
        problems.append(problem(file, path, "must be a non-empty list of `- intent: …` items"))
        return []
    triggers: list[NluTrigger] = []
    for i, item in enumerate(listed):
        where = f"{path}[{i}]"
        if not isinstance(item, dict):
            problems.append(
                problem(file, where, "must be `- intent: name` or `- intent: {name: …}`")
            )
            continue
        intent = item.get("intent")
        if isinstance(intent, dict):
            # The mapping form allows no other key beside `intent`.
            found = _intent_mapping_problem(intent)
            others = sorted(str(k) for k in item if k != "intent")
            if found is not None:
                key, message = found.split(": ", 1)
                problems.append(problem(file, f"{where}.intent.{key}", message))
                continue
            if others:
                problems.append(problem(file, where, f"unknown key(s) {', '.join(others)}"))
                continue
        elif "intent" in item and not isinstance(intent, str):
            problems.append(problem(file, f"{where}.intent", "must be an intent name or a mapping"))
            continue
        # NLUTriggers.from_json: every value of the item is read, not only `intent`.
        for key, value in item.items():
            if isinstance(value, str):
                if key != "intent":
                    warnings.append(
                        problem(file, f"{where}.{key}", f"Rasa reads {value!r} as a trigger intent")
                    )
                triggers.append(NluTrigger(flow_id, value))
            elif isinstance(value, dict):
                found = _intent_mapping_problem(value)
                if found is not None:
                    key_name, message = found.split(": ", 1)
                    problems.append(problem(file, f"{where}.{key}.{key_name}", message))
                    continue
                threshold = float(value.get("confidence_threshold", 0.0))
                triggers.append(NluTrigger(flow_id, value["name"], threshold))
    return triggers


def _steps(steps: object) -> Iterator[dict[Any, Any]]:
    """Every step of a step list, branches (`next: - if: … then: [steps]`) included."""
    if not isinstance(steps, list):
        return
    for step in steps:
        if not isinstance(step, dict):
            continue
        yield step
        branches = step.get("next")
        if isinstance(branches, list):
            for branch in branches:
                if isinstance(branch, dict):
                    for key in _NESTED_STEP_KEYS:
                        yield from _steps(branch.get(key))


def _collects(steps: object, *, file: str, path: str, problems: list[str]) -> tuple[str, ...]:
    slots: list[str] = []
    for step in _steps(steps):
        if "collect" not in step:
            continue
        slot, ask = step["collect"], step.get("ask_before_filling", False)
        if not isinstance(slot, str) or not slot:
            problems.append(problem(file, f"{path}.collect", "must be a slot name"))
        elif not isinstance(ask, bool):
            problems.append(problem(file, f"{path}.ask_before_filling", "must be true or false"))
        elif not ask:
            slots.append(slot)
    return tuple(dict.fromkeys(slots))


def _flow(
    flow_id: str,
    flow: object,
    *,
    file: str,
    problems: list[str],
    warnings: list[str],
) -> Flow | None:
    path = f"flows.{flow_id}"
    if not isinstance(flow, dict):
        problems.append(problem(file, path, "a flow must be a mapping (description, steps…)"))
        return None
    found = len(problems)
    if not isinstance(flow.get("description"), str):
        what = "is required" if flow.get("description") is None else "must be text"
        problems.append(problem(file, f"{path}.description", what))
    steps = flow.get("steps")
    if not isinstance(steps, list):
        what = "is required" if steps is None else "must be a list of steps"
        problems.append(problem(file, f"{path}.steps", what))
    elif not steps:
        problems.append(problem(file, f"{path}.steps", f"flow {flow_id} does not have any steps"))
    triggers: list[NluTrigger] = []
    if "nlu_trigger" in flow:
        triggers = _triggers(
            flow["nlu_trigger"],
            flow_id=flow_id,
            file=file,
            path=f"{path}.nlu_trigger",
            problems=problems,
            warnings=warnings,
        )
    collects = _collects(steps, file=file, path=f"{path}.steps", problems=problems)
    if len(problems) > found:
        return None
    return Flow(flow_id, tuple(triggers), collects)


def _duplicate_triggers(flows: list[tuple[Flow, str]]) -> list[str]:
    """validate_nlu_trigger: an intent may trigger one flow only."""
    by_intent: dict[str, list[tuple[Flow, str]]] = {}
    for flow, file in flows:
        for intent in dict.fromkeys(t.intent for t in flow.triggers):
            by_intent.setdefault(intent, []).append((flow, file))
    problems = []
    for intent, users in by_intent.items():
        for flow, file in users[1:]:
            first, first_file = users[0]
            problems.append(
                problem(
                    file,
                    f"flows.{flow.id}.nlu_trigger",
                    f"intent {intent} already triggers flow {first.id} ({first_file}); "
                    "Rasa lets an intent trigger one flow only",
                )
            )
    return problems


def load_flows(path: Path | None, warnings: list[str] | None = None) -> list[Flow]:
    """The user's flows of a flows file, or of every *.yml / *.yaml below a directory, in
    order. Files without a `flows:` key (domain, NLU data, stories) are skipped, so `data/` as
    a whole can be given, as with `rasa train`. ConfigError lists every problem."""
    if path is None:
        return []
    if not path.exists():
        raise ConfigError([f"{display_name(path)}: flows file or directory not found"])
    warnings = warnings if warnings is not None else []
    problems: list[str] = []
    flows: list[tuple[Flow, str]] = []
    defined_in: dict[str, str] = {}
    for flow_file in _flow_files(path):
        file = display_name(flow_file)
        ok, document = read_yaml(flow_file, problems)
        if not ok or not isinstance(document, dict) or "flows" not in document:
            continue
        section = document["flows"]
        if not isinstance(section, dict):
            problems.append(problem(file, "flows", "must map flow ids to flows"))
            continue
        for raw_id, raw_flow in section.items():
            flow_id = str(raw_id)
            if flow_id in defined_in:
                problems.append(
                    problem(
                        file,
                        f"flows.{flow_id}",
                        f"flow id already defined in {defined_in[flow_id]}",
                    )
                )
                continue
            defined_in[flow_id] = file
            flow = _flow(flow_id, raw_flow, file=file, problems=problems, warnings=warnings)
            if flow is not None:
                flows.append((flow, file))
    problems.extend(_duplicate_triggers(flows))
    if problems:
        raise ConfigError(problems)
    return [flow for flow, _ in flows]
