"""The `nlu_trigger` of each flow in Rasa's flows YAML: all the router needs from flows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.config.errors import ConfigError, display_name, problem
from worker.config.yaml_files import read_yaml
from worker.routing.flows import FlowTriggers, NluTrigger

FLOW_SUFFIXES = (".yml", ".yaml")


def _flow_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in FLOW_SUFFIXES and p.is_file())
    return [path]


def _threshold(value: object) -> float | None:
    # YAML `true` is an int to Python; a threshold written as a boolean is a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0.0 <= value <= 1.0 else None


def _trigger(
    item: object, *, flow_id: str, file: str, path: str, problems: list[str]
) -> NluTrigger | None:
    if not isinstance(item, dict) or "intent" not in item:
        problems.append(problem(file, path, "must be `- intent: name` or `- intent: {name: …}`"))
        return None
    intent = item["intent"]
    if isinstance(intent, str) and intent:
        return NluTrigger(flow_id, intent)
    if not isinstance(intent, dict):
        problems.append(problem(file, f"{path}.intent", "must be an intent name or a mapping"))
        return None
    name = intent.get("name")
    if not isinstance(name, str) or not name:
        problems.append(problem(file, f"{path}.intent.name", "must be an intent name"))
        return None
    unknown = sorted(str(k) for k in intent if k not in ("name", "confidence_threshold"))
    if unknown:
        problems.append(problem(file, f"{path}.intent", f"unknown key(s) {', '.join(unknown)}"))
        return None
    raw = intent.get("confidence_threshold", 0.0)
    threshold = _threshold(raw)
    if threshold is None:
        problems.append(
            problem(
                file,
                f"{path}.intent.confidence_threshold",
                "must be a number between 0 and 1",
            )
        )
        return None
    return NluTrigger(flow_id, name, threshold)


def _file_triggers(flows: dict[Any, Any], *, file: str, problems: list[str]) -> list[NluTrigger]:
    triggers: list[NluTrigger] = []
    for flow_id, flow in flows.items():
        path = f"flows.{flow_id}"
        if not isinstance(flow, dict):
            problems.append(problem(file, path, "a flow must be a mapping (description, steps…)"))
            continue
        listed = flow.get("nlu_trigger")
        if listed is None:
            continue
        if not isinstance(listed, list):
            problems.append(problem(file, f"{path}.nlu_trigger", "must be a list of `- intent:`"))
            continue
        for i, item in enumerate(listed):
            trigger = _trigger(
                item,
                flow_id=str(flow_id),
                file=file,
                path=f"{path}.nlu_trigger[{i}]",
                problems=problems,
            )
            if trigger is not None:
                triggers.append(trigger)
    return triggers


def load_flow_triggers(path: Path | None) -> FlowTriggers:
    """NLU triggers of a flows file, or of every *.yml / *.yaml below a directory.

    Files without a `flows:` key (domain, NLU data, stories) are skipped, so `data/` as a whole
    can be given, as with `rasa train`.
    """
    if path is None:
        return FlowTriggers()
    if not path.exists():
        raise ConfigError([f"{display_name(path)}: flows file or directory not found"])
    problems: list[str] = []
    triggers: list[NluTrigger] = []
    defined_in: dict[str, str] = {}
    for flow_file in _flow_files(path):
        file = display_name(flow_file)
        ok, document = read_yaml(flow_file, problems)
        if not ok or not isinstance(document, dict) or document.get("flows") is None:
            continue
        flows = document["flows"]
        if not isinstance(flows, dict):
            problems.append(problem(file, "flows", "must map flow ids to flows"))
            continue
        for flow_id in flows:
            key = str(flow_id)
            if key in defined_in:
                problems.append(
                    problem(file, f"flows.{key}", f"flow id already defined in {defined_in[key]}")
                )
            defined_in.setdefault(key, file)
        triggers.extend(_file_triggers(flows, file=file, problems=problems))
    if problems:
        raise ConfigError(problems)
    return FlowTriggers(triggers)
