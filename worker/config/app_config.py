"""The whole configuration of a worker: config.yml + endpoints.yml + flows, checked together.

Every problem of every file is collected before anything is refused, so one run of
`coexistence-router validate` (or a failed start) lists all of them.

The LLMBasedRouter's `llm:` (Rasa 3.11+, SPEC §5):
- `llm: {model_group: id}`: the group of that id in endpoints.yml.
- an inline `llm:` (provider, model, … as in Rasa ≤ 3.10): still loads, as a one-deployment group
  named `LLMBasedRouter.llm`, with a deprecation warning. Mixing styles is refused: `model_group`
  next to model keys in one block, or an inline router `llm:` while other components of the
  pipeline use model groups.
- no `llm:`: Rasa 3.11's default (`DEFAULT_LLM_CONFIG` of its llm_based_router.py): OpenAI
  `gpt-3.5-turbo`, timeout 7, temperature 0.0, max_tokens 1, key from `OPENAI_API_KEY`.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker.config.endpoints import Endpoints, EndpointsRead, read_endpoints
from worker.config.endpoints_rules import DEFAULT_RELEASE, ReleaseNumber, rules_for
from worker.config.env import SECRET_KEYS, PlainReference, expand_at_load
from worker.config.errors import ConfigError, problem, validation_problems
from worker.config.flows import load_flow_triggers
from worker.config.model_config import ModelReading, read_model
from worker.config.model_groups import check_build
from worker.config.rasa_config import RasaConfig, read_rasa_config
from worker.llm.gateway import fallback_closure
from worker.llm.model_group import Deployment, ModelGroup
from worker.llm.providers import BuildContext, build_provider
from worker.routing.flows import FlowTriggers
from worker.routing.router_config import LLMBasedRouterConfig, RouterConfig

log = logging.getLogger(__name__)

INLINE_GROUP_ID = "LLMBasedRouter.llm"
# rasa/shared/utils/llm.py of Rasa 3.11: DEFAULT_OPENAI_CHAT_MODEL_NAME.
DEFAULT_OPENAI_CHAT_MODEL_NAME = "gpt-3.5-turbo"
# LLMBasedRouter.DEFAULT_LLM_CONFIG of Rasa 3.11, without `logit_bias`: the boost of " A"/" B"/
# " C" depends on the model's tokenizer, so the LLM client adds it where the tokenizer is known.
DEFAULT_LLM_CONFIG: dict[str, Any] = {
    "provider": "openai",
    "model": DEFAULT_OPENAI_CHAT_MODEL_NAME,
    "timeout": 7,
    "temperature": 0.0,
    "max_tokens": 1,
}
# Where Rasa ≤ 3.10 (through litellm) found credentials an inline `llm:` does not name.
_PROVIDER_ENVIRONMENT: dict[str, dict[str, str]] = {
    "openai": {"api_key": "${OPENAI_API_KEY}"},
    "azure": {
        "api_key": "${AZURE_API_KEY}",
        "api_base": "${AZURE_API_BASE}",
        "api_version": "${AZURE_API_VERSION}",
    },
}


@dataclass(frozen=True, slots=True)
class ConfigPaths:
    config: Path
    endpoints: Path
    flows: Path | None


@dataclass(frozen=True, slots=True)
class AppConfig:
    router: RouterConfig
    endpoints: Endpoints
    triggers: FlowTriggers
    llm_group: ModelGroup | None  # the LLMBasedRouter's model group; None for intents
    paths: ConfigPaths
    release: ReleaseNumber = DEFAULT_RELEASE  # whose rules read the files
    warnings: tuple[str, ...] = ()

    @property
    def router_groups(self) -> dict[str, ModelGroup]:
        """The groups the router calls: its own and every group its fallbacks reach."""
        group = self.llm_group
        if group is None:
            return {}
        known = {**self.endpoints.model_groups, group.id: group}
        return {gid: known[gid] for gid in fallback_closure(known, group.id) if gid in known}


def _inline_group(
    llm: Mapping[str, Any],
    *,
    file: str,
    path: str,
    environ: Mapping[str, str],
    release: ReleaseNumber,
    problems: list[str],
    notes: list[str],
) -> ModelGroup | None:
    """An inline (or absent) `llm:` as a one-deployment group, merged like Rasa's
    `combine_custom_and_default_config`: defaults apply only when the provider is the default's.
    Its keys are read as a model of a group without router (worker.config.model_config)."""
    found = len(problems)
    for key in SECRET_KEYS:
        if key in llm:
            # engine/validation.py validate_model_client_configuration_setup_during_training_time
            problems.append(
                problem(
                    file,
                    f"{path}.{key}",
                    "is not allowed in config.yml (Rasa refuses secrets there): it is read from "
                    "the environment (OPENAI_API_KEY, AZURE_API_KEY, …)",
                )
            )
    model = {k: v for k, v in llm.items() if k not in SECRET_KEYS}
    provider = model.get("provider", model.get("type"))
    if provider is None or provider == DEFAULT_LLM_CONFIG["provider"]:
        model = DEFAULT_LLM_CONFIG | model
        provider = DEFAULT_LLM_CONFIG["provider"]
    if isinstance(provider, str):
        for key, reference in _PROVIDER_ENVIRONMENT.get(provider, {}).items():
            if environ.get(reference[2:-1]):
                model.setdefault(key, reference)
    # config.yml is read without telling quoted from plain scalars: every `${…}` counts as plain.
    plain = {
        k: PlainReference(v) if isinstance(v, str) and "${" in v else v for k, v in model.items()
    }
    expanded = expand_at_load(plain, file=file, path=path, environ=environ, problems=problems)
    reading = ModelReading(
        file, path, INLINE_GROUP_ID, False, rules_for(release), environ, problems, notes
    )
    read = read_model(expanded, reading)
    if read is None or len(problems) > found:
        return None
    try:
        deployment = Deployment.model_validate(read)
        build_provider(
            deployment, None, BuildContext(environ=environ, routed=False, check_only=True)
        )
    except ValidationError as error:
        problems.extend(validation_problems(error, file=file, base=path))
        return None
    except ValueError as error:
        problems.append(problem(file, path, str(error)))
        return None
    return ModelGroup(id=INLINE_GROUP_ID, models=[deployment])


def _router_llm(
    rasa: RasaConfig,
    environ: Mapping[str, str],
    problems: list[str],
    *,
    release: ReleaseNumber = DEFAULT_RELEASE,
    notes: list[str] | None = None,
) -> tuple[str | None, ModelGroup | None]:
    """(referenced group id, or None with the inline/default group built here)."""
    router = rasa.router
    if not isinstance(router, LLMBasedRouterConfig):
        return None, None
    file, path = rasa.file, f"{rasa.router_path}.llm"
    llm = router.llm
    found: list[str] = [] if notes is None else notes
    inline = functools.partial(
        _inline_group,
        file=file,
        path=path,
        environ=environ,
        release=release,
        problems=problems,
        notes=found,
    )
    if llm is None:
        if not environ.get("OPENAI_API_KEY"):
            problems.append(
                problem(
                    file,
                    rasa.router_path,
                    f"has no llm, so Rasa's default ({DEFAULT_LLM_CONFIG['provider']} "
                    f"{DEFAULT_LLM_CONFIG['model']}) is used, which needs environment variable "
                    "OPENAI_API_KEY: it is not set",
                )
            )
            return None, None
        return None, inline({})
    if "model_group" in llm:
        others = sorted(key for key in llm if key != "model_group")
        if others:
            problems.append(
                problem(
                    file,
                    path,
                    f"model_group cannot be combined with model keys ({', '.join(others)}); "
                    "reference a group of endpoints.yml or define the model inline, not both",
                )
            )
            return None, None
        group_id = llm["model_group"]
        return (group_id if isinstance(group_id, str) else None), None
    elsewhere = [ref.path for ref in rasa.references if not ref.path.startswith(path)]
    if elsewhere:
        problems.append(
            problem(
                file,
                path,
                "inline llm config mixed with model_group references "
                f"({', '.join(elsewhere)}); move this model into a group of endpoints.yml",
            )
        )
        return None, None
    message = (
        f"{file}: {path}: an inline llm config is deprecated since Rasa 3.11; define a model "
        f"group in endpoints.yml and write `llm: {{model_group: <id>}}` (loaded as group "
        f"{INLINE_GROUP_ID})"
    )
    log.warning(message)
    warnings.warn(message, DeprecationWarning, stacklevel=2)
    return None, inline(llm)


def _missing_groups(rasa: RasaConfig, read: EndpointsRead) -> list[str]:
    return [
        problem(
            rasa.file,
            f"{ref.path}.model_group",
            f"model group {ref.group_id} is not defined in {read.file}",
        )
        for ref in rasa.references
        if ref.group_id not in read.group_ids
    ]


def _check_router_groups(
    group: ModelGroup | None, read: EndpointsRead, environ: Mapping[str, str]
) -> list[str]:
    """Build-check the groups the router calls (its own and its fallbacks' in `read`): only
    those must find their keys and base URLs in this environment."""
    if group is None or read.endpoints is None:
        return []
    groups = {**read.endpoints.model_groups, group.id: group}
    problems: list[str] = []
    for group_id in fallback_closure(groups, group.id):
        if group_id in read.group_paths and group_id in groups:
            check_build(
                groups[group_id],
                file=read.file,
                path=read.group_paths[group_id],
                environ=environ,
                problems=problems,
            )
    return problems


def _read_config(path: Path, problems: list[str]) -> RasaConfig | None:
    try:
        return read_rasa_config(path)
    except ConfigError as error:
        problems.extend(error.problems)
        return None


def _read_flows(path: Path | None, problems: list[str]) -> FlowTriggers | None:
    try:
        return load_flow_triggers(path)
    except ConfigError as error:
        problems.extend(error.problems)
        return None


def _unique(problems: list[str]) -> list[str]:
    return list(dict.fromkeys(problems))


def _log_warnings(notes: list[str]) -> tuple[str, ...]:
    unique = tuple(_unique(notes))
    for warning in unique:
        log.warning("%s", warning)
    return unique


def load_app_config(
    config: Path,
    endpoints: Path,
    flows: Path | None,
    environ: Mapping[str, str],
    *,
    release: ReleaseNumber = DEFAULT_RELEASE,
) -> AppConfig:
    """Everything the worker runs on, read as Rasa `release` reads it; ConfigError lists every
    problem of every file. Warnings are logged and kept in `AppConfig.warnings`."""
    problems: list[str] = []
    notes: list[str] = []
    rasa = _read_config(config, problems)
    triggers = _read_flows(flows, problems)
    read = read_endpoints(endpoints, environ, release=release)
    problems.extend(read.problems)
    notes.extend(read.warnings)
    llm_group: ModelGroup | None = None
    if rasa is not None:
        group_id, llm_group = _router_llm(rasa, environ, problems, release=release, notes=notes)
        problems.extend(_missing_groups(rasa, read))
        if group_id is not None and read.endpoints is not None:
            llm_group = read.endpoints.model_groups.get(group_id)
        problems.extend(_check_router_groups(llm_group, read, environ))
    if problems or rasa is None or triggers is None or read.endpoints is None:
        raise ConfigError(_unique(problems))
    if isinstance(rasa.router, LLMBasedRouterConfig) and llm_group is None:
        raise ConfigError([problem(rasa.file, rasa.router_path, "no LLM could be resolved")])
    if read.endpoints.nlu is None and not isinstance(rasa.router, LLMBasedRouterConfig):
        log.info("%s has no nlu: endpoint; messages without parse_data have no intent", read.file)
    return AppConfig(
        router=rasa.router,
        endpoints=read.endpoints,
        triggers=triggers,
        llm_group=llm_group,
        paths=ConfigPaths(config, endpoints, flows),
        release=release,
        warnings=_log_warnings(notes),
    )


def reload_app_config(current: AppConfig, environ: Mapping[str, str]) -> AppConfig:
    """The same files read again (SIGHUP), with the same release's rules; ConfigError leaves
    `current` to keep running on."""
    paths = current.paths
    return load_app_config(
        paths.config, paths.endpoints, paths.flows, environ, release=current.release
    )


def validate_files(
    config: Path,
    endpoints: list[Path],
    flows: Path | None,
    environ: Mapping[str, str],
    *,
    release: ReleaseNumber = DEFAULT_RELEASE,
    warnings: list[str] | None = None,
) -> list[str]:
    """Every problem of `config.yml` run against each endpoints file; [] when all is valid.

    The endpoints files (one per environment) must also define the same model group ids. What
    Rasa accepts but that behaves surprisingly is appended to `warnings`.
    """
    found: list[str] = [] if warnings is None else warnings
    problems: list[str] = []
    if not endpoints:
        problems.append("no endpoints file given")
    rasa = _read_config(config, problems)
    _read_flows(flows, problems)
    group_id, inline_group = None, None
    if rasa is not None:
        group_id, inline_group = _router_llm(rasa, environ, problems, release=release, notes=found)
    reads = [read_endpoints(path, environ, release=release) for path in endpoints]
    for read in reads:
        problems.extend(read.problems)
        found.extend(read.warnings)
        if rasa is not None:
            problems.extend(_missing_groups(rasa, read))
        group = inline_group
        if group_id is not None and read.endpoints is not None:
            group = read.endpoints.model_groups.get(group_id)
        problems.extend(_check_router_groups(group, read, environ))
    every_id = {group_id for read in reads for group_id in read.group_ids}
    for read in reads:
        for group_id in sorted(every_id - set(read.group_ids)):
            defined_in = ", ".join(r.file for r in reads if group_id in r.group_ids)
            problems.append(
                problem(
                    read.file,
                    "model_groups",
                    f"lacks group id {group_id}, defined in {defined_in}",
                )
            )
    found[:] = _unique(found)
    return _unique(problems)
