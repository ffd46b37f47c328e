"""Rasa's `config.yml`: the one coexistence router of the pipeline, and the model groups it uses.

Everything else in the pipeline (tokenizers, classifiers, command generators) is Rasa's business
and is ignored, except that its `llm:` / `embeddings:` references to model groups are collected:
the same `config.yml` must start against every `endpoints.yml` it is deployed with.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import ValidationError

from worker.config.errors import (
    ConfigError,
    display_name,
    key_path,
    looked_in,
    problem,
    validation_problems,
)
from worker.config.yaml_files import read_yaml
from worker.rasa.releases import DEFAULT_BEHAVIOUR, MissingPrompt, RasaBehaviour
from worker.routing.router_config import (
    IntentBasedRouterConfig,
    LLMBasedRouterConfig,
    RouterConfig,
)

ROUTER_NAMES = ("IntentBasedRouter", "LLMBasedRouter")
PROMPT_KEYS = ("prompt", "prompt_template")
MODEL_CLIENT_KEYS = ("llm", "embeddings")


@dataclass(frozen=True, slots=True)
class ModelGroupReference:
    """`{model_group: id}` in the pipeline; `path` says where, e.g. `pipeline[3] (X).llm`."""

    group_id: str
    path: str


@dataclass(frozen=True, slots=True)
class RasaConfig:
    """What the worker takes from `config.yml`."""

    file: str
    router: RouterConfig
    router_path: str
    references: tuple[ModelGroupReference, ...]


def _component_name(entry: dict[str, Any]) -> str | None:
    name = entry.get("name")
    if not isinstance(name, str):
        return None
    # Rasa also accepts a component by its full module path.
    return name.rsplit(".", 1)[-1]


def _component_path(section: str, index: int, entry: object) -> str:
    name = _component_name(entry) if isinstance(entry, dict) else None
    return f"{section}[{index}]" + (f" ({name})" if name else "")


def _model_group_references(
    value: object, path: str, file: str, problems: list[str]
) -> Iterator[ModelGroupReference]:
    """Every `llm:` / `embeddings:` block holding `model_group`, at any depth of a component

    (command generators nest one under `flow_retrieval:`).
    """
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _model_group_references(item, f"{path}[{i}]", file, problems)
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        where = key_path(path, [str(key)])
        if key in MODEL_CLIENT_KEYS and isinstance(item, dict) and "model_group" in item:
            group_id = item["model_group"]
            if isinstance(group_id, str) and group_id:
                yield ModelGroupReference(group_id, where)
            else:
                problems.append(
                    problem(file, f"{where}.model_group", "must be a model group id (text)")
                )
        else:
            yield from _model_group_references(item, where, file, problems)


def _resolve_prompt(prompt: str, config_dir: Path) -> Path | None:
    # Rasa reads the path relative to the current directory (where `rasa train` runs); a path
    # relative to config.yml is accepted too, so the worker can start from anywhere.
    as_given = Path(prompt)
    if as_given.is_file():
        return as_given
    if not as_given.is_absolute() and (config_dir / as_given).is_file():
        return config_dir / as_given
    return None


_TEMPLATES = ImmutableSandboxedEnvironment(autoescape=False)


@dataclass(frozen=True, slots=True)
class _RouterEntry:
    """Where the router's entry is read (its file, its path there, config.yml's folder), by
    which release, and where its problems and warnings go."""

    file: str
    path: str
    config_dir: Path
    rasa: RasaBehaviour
    problems: list[str]
    warnings: list[str]

    def problem(self, key: str, what: str) -> None:
        self.problems.append(problem(self.file, f"{self.path}.{key}", what))

    def warn(self, key: str, what: str) -> None:
        self.warnings.append(problem(self.file, f"{self.path}.{key}", what))


def _read_prompt(entry: dict[str, Any], where: _RouterEntry) -> dict[str, Any]:
    """`prompt_text`: the template of the key the release reads (the first of its
    `prompt_keys` that is set), else the release's default template."""
    rasa = where.rasa
    resolved = {k: v for k, v in entry.items() if k not in PROMPT_KEYS}
    default = resolved | {"prompt": None, "prompt_text": rasa.template_text}
    ignored = [key for key in PROMPT_KEYS if entry.get(key) and key not in rasa.prompt_keys]
    for key in ignored:
        where.warn(key, f"Rasa {rasa.releases} does not read {key}: ignored")
    given = [key for key in rasa.prompt_keys if entry.get(key)]
    if not given:
        return default
    key = given[0]
    for other in given[1:]:
        where.warn(other, f"ignored: Rasa {rasa.releases} reads {key} first")
    prompt = entry[key]
    if not isinstance(prompt, str):
        where.problem(key, "must be the path of a jinja2 file")
        return entry
    found = _resolve_prompt(prompt, where.config_dir)
    if found is None:
        missing = f"prompt file {prompt} not found ({looked_in(where.config_dir)})"
        if rasa.missing_prompt is MissingPrompt.REFUSED:
            where.problem(key, f"{missing}; Rasa {rasa.releases} refuses it")
        else:
            where.warn(
                key, f"{missing}: Rasa's default template is used, as Rasa {rasa.releases} does"
            )
        return default
    prompt_name = display_name(found)
    try:
        # Rasa strips the template it reads (LLMBasedRouter.__init__).
        text = found.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        where.problem(key, f"cannot read {prompt_name}: {error}")
        return entry
    try:
        _TEMPLATES.from_string(text)  # compiled, not only parsed: unknown filters fail here
    except TemplateSyntaxError as error:
        where.problems.append(
            f"{prompt_name}:{error.lineno}: prompt template does not compile: {error.message}"
        )
        return entry
    return resolved | {"prompt": prompt, "prompt_text": text}


def _router_config(entry: dict[str, Any], where: _RouterEntry) -> RouterConfig | None:
    name = _component_name(entry)
    # `prompt_text` is this project's field for the prompt file's content, not a Rasa key.
    values = {k: v for k, v in entry.items() if k not in ("name", "prompt_text")}
    try:
        if name == "IntentBasedRouter":
            return IntentBasedRouterConfig.model_validate(values)
        before = len(where.problems)
        values = _read_prompt(values, where)
        # Validated even when the prompt failed, to report every key's problem in one run.
        config = LLMBasedRouterConfig.model_validate(values)
        return config if len(where.problems) == before else None
    except ValidationError as error:
        where.problems.extend(validation_problems(error, file=where.file, base=where.path))
        return None


def read_rasa_config(
    path: Path, rasa: RasaBehaviour = DEFAULT_BEHAVIOUR, warnings: list[str] | None = None
) -> RasaConfig:
    """The router of `config.yml` and every model-group reference of its pipeline and policies,
    as release `rasa` reads them; what Rasa accepts with a surprise goes to `warnings`."""
    warnings = warnings if warnings is not None else []
    file = display_name(path)
    problems: list[str] = []
    ok, document = read_yaml(path, problems)
    if not ok:
        raise ConfigError(problems)
    if not isinstance(document, dict):
        raise ConfigError([f"{file}: must be a mapping with a `pipeline:` list"])
    pipeline = document.get("pipeline")
    if not isinstance(pipeline, list):
        what = "is missing" if pipeline is None else "must be a list of components"
        raise ConfigError([problem(file, "pipeline", what)])

    routers: list[tuple[int, dict[str, Any]]] = []
    references: list[ModelGroupReference] = []
    sections: list[tuple[str, list[Any]]] = [("pipeline", pipeline)]
    policies = document.get("policies")
    if isinstance(policies, list):
        sections.append(("policies", policies))
    for section, entries in sections:
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            if section == "pipeline" and _component_name(entry) in ROUTER_NAMES:
                routers.append((index, entry))
            where = _component_path(section, index, entry)
            references.extend(_model_group_references(entry, where, file, problems))

    if not routers:
        problems.append(
            problem(
                file,
                "pipeline",
                "has no IntentBasedRouter or LLMBasedRouter; add exactly one of them",
            )
        )
    elif len(routers) > 1:
        found = ", ".join(_component_path("pipeline", i, e) for i, e in routers)
        problems.append(
            problem(
                file,
                "pipeline",
                f"holds {len(routers)} coexistence routers ({found}); Rasa allows exactly one",
            )
        )
    router: RouterConfig | None = None
    router_path = ""
    if len(routers) == 1:
        index, entry = routers[0]
        router_path = _component_path("pipeline", index, entry)
        router = _router_config(
            entry, _RouterEntry(file, router_path, path.parent, rasa, problems, warnings)
        )
    if problems or router is None:
        raise ConfigError(problems)
    return RasaConfig(file, router, router_path, tuple(references))


def load_router_config(path: Path, rasa: RasaBehaviour = DEFAULT_BEHAVIOUR) -> RouterConfig:
    """The IntentBasedRouter or LLMBasedRouter of Rasa's `config.yml`, its prompt file read."""
    return read_rasa_config(path, rasa).router
