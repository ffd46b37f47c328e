"""The whole configuration of a worker: config.yml + endpoints.yml + flows + domain, checked
together for the selected Rasa Pro release (`--rasa-version`, worker.rasa.releases).

Every problem of every file is collected before anything is refused, so one run of
`coexistence-router validate` (or a failed start) lists all of them. What Rasa accepts but that
behaves surprisingly is collected as warnings: logged at start, printed by `validate`.

The LLMBasedRouter's `llm:` (Rasa 3.11+, SPEC §5):
- `llm: {model_group: id}`: the group of that id in endpoints.yml.
- an inline `llm:` (provider, model, … as in Rasa ≤ 3.10): still loads, as a one-deployment group
  named `LLMBasedRouter.llm`, with a deprecation warning. Mixing styles is refused: `model_group`
  next to model keys in one block, or an inline router `llm:` while other components of the
  pipeline use model groups.
- no `llm:`: the release's default (`DEFAULT_LLM_CONFIG` of its llm_based_router.py): OpenAI
  with the release's default model, key from `OPENAI_API_KEY`; the other defaults (temperature,
  token limit, logit bias, reasoning effort) are merged into the request by
  worker.llm.router_defaults, as into any openai deployment.

The idle expiry of sticky sessions follows the domain's session_config (SessionConfig.
routing_expiry_seconds): Rasa drops the routing slot at a session expiry only when slots are not
carried over. `kafka.session_expiration_time`, when set, overrides it (with a warning where the
two differ).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker.config.domain import ROUTING_SLOT, load_domain
from worker.config.endpoints import Endpoints, EndpointsRead, read_endpoints
from worker.config.endpoints_rules import rules_for
from worker.config.env import SECRET_KEYS, PlainReference, expand_at_load
from worker.config.errors import ConfigError, display_name, problem, validation_problems
from worker.config.flows import load_flows
from worker.config.model_config import DEFAULT_PROVIDER, ModelReading, read_model
from worker.config.model_groups import check_build
from worker.config.rasa_config import RasaConfig, read_rasa_config
from worker.llm.gateway import fallback_closure
from worker.llm.model_group import Deployment, ModelGroup
from worker.llm.prices import unpriced_warning
from worker.llm.providers import BuildContext, build_provider
from worker.llm.router_defaults import bias_mismatch
from worker.rasa.releases import DEFAULT_RASA, RasaVersion
from worker.routing.domain import Domain, SessionConfig
from worker.routing.flows import Flow, Flows
from worker.routing.router_config import LLMBasedRouterConfig, RouterConfig
from worker.routing.rules import Assistant

log = logging.getLogger(__name__)

INLINE_GROUP_ID = "LLMBasedRouter.llm"
NO_DOMAIN_WARNING = (
    "no --domain given: every /name is read as an intent payload and no slot mapping starts "
    "CALM; Rasa parity needs the assistant's domain"
)
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
    domain: Path | None = None


@dataclass(frozen=True, slots=True)
class AppConfig:
    router: RouterConfig
    endpoints: Endpoints
    assistant: Assistant  # what the routing rules read: router, flows, domain, release
    llm_group: ModelGroup | None  # the LLMBasedRouter's model group; None for intents
    paths: ConfigPaths
    rasa: RasaVersion = DEFAULT_RASA  # whose behaviour and rules apply (--rasa-version)
    session_ttl: float = 0.0  # idle seconds that end a sticky session; 0 = never
    warnings: tuple[str, ...] = ()

    @property
    def flows(self) -> Flows:
        return self.assistant.flows

    @property
    def domain(self) -> Domain | None:
        return self.assistant.domain

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
    rasa: RasaVersion,
    environ: Mapping[str, str],
    problems: list[str],
    notes: list[str],
) -> ModelGroup | None:
    """An inline (or absent) `llm:` as a one-deployment group, as Rasa's
    `combine_custom_and_default_config` reads it: the default provider and model apply only when
    the provider is the default's (the request defaults are merged later, per deployment, by
    worker.llm.router_defaults). Its keys are read as a model of a group without router
    (worker.config.model_config), by the release's rules."""
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
    if provider is None or provider == DEFAULT_PROVIDER:
        model = {"provider": DEFAULT_PROVIDER, "model": rasa.behaviour.llm.model} | model
        provider = DEFAULT_PROVIDER
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
        file, path, INLINE_GROUP_ID, False, rules_for(rasa.release), environ, problems, notes
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
    config: RasaConfig,
    rasa: RasaVersion,
    environ: Mapping[str, str],
    problems: list[str],
    notes: list[str],
) -> tuple[str | None, ModelGroup | None]:
    """(referenced group id, or None with the inline/default group built here)."""
    router = config.router
    if not isinstance(router, LLMBasedRouterConfig):
        return None, None
    file, path = config.file, f"{config.router_path}.llm"
    llm = router.llm
    inline = partial(
        _inline_group,
        file=file,
        path=path,
        rasa=rasa,
        environ=environ,
        problems=problems,
        notes=notes,
    )
    if llm is None:
        if not environ.get("OPENAI_API_KEY"):
            problems.append(
                problem(
                    file,
                    config.router_path,
                    f"has no llm, so {rasa}'s default ({DEFAULT_PROVIDER} "
                    f"{rasa.behaviour.llm.model}) is used, which needs environment variable "
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
    elsewhere = [ref.path for ref in config.references if not ref.path.startswith(path)]
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


def _missing_groups(config: RasaConfig, read: EndpointsRead) -> list[str]:
    return [
        problem(
            config.file,
            f"{ref.path}.model_group",
            f"model group {ref.group_id} is not defined in {read.file}",
        )
        for ref in config.references
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


@dataclass(slots=True)
class _Assistant:
    """The assistant's own files as far as they could be read."""

    config: RasaConfig | None
    flows: list[Flow] | None
    domain: Domain | None
    domain_ok: bool


def _read_assistant(
    paths: ConfigPaths, rasa: RasaVersion, problems: list[str], warnings: list[str]
) -> _Assistant:
    """config.yml, flows and domain (paths.endpoints is not read here)."""
    behaviour = rasa.behaviour
    config = flows = None
    domain, domain_ok = None, True
    try:
        config = read_rasa_config(paths.config, behaviour, warnings)
    except ConfigError as error:
        problems.extend(error.problems)
    try:
        flows = load_flows(paths.flows, warnings)
    except ConfigError as error:
        problems.extend(error.problems)
    try:
        # Rasa merges its patterns' domain only when there are flows (FlowSyncImporter).
        pattern_slots = behaviour.patterns.slots if flows else ()
        domain = load_domain(
            paths.domain, behaviour, pattern_slots=pattern_slots, warnings=warnings
        )
    except ConfigError as error:
        problems.extend(error.problems)
        domain_ok = False
    if paths.domain is None:
        warnings.append(NO_DOMAIN_WARNING)
    elif domain is not None and config is not None:
        routing = next((slot for slot in domain.slots if slot.name == ROUTING_SLOT), None)
        if routing is None or routing.type != "bool":
            # engine/validation.py validate_that_slots_are_defined_if_router_is_defined
            problems.append(
                problem(
                    display_name(paths.domain),
                    "slots",
                    f"{config.router.name} needs the slot {ROUTING_SLOT} of type bool "
                    "(Rasa refuses to train without it)",
                )
            )
    return _Assistant(config, flows, domain, domain_ok)


def session_ttl(
    kafka_ttl: float | None, session: SessionConfig, *, file: str, warnings: list[str]
) -> float:
    """Idle seconds after which the worker ends a sticky session (0 = never): where Rasa would
    drop the routing at a session expiry, unless `kafka.session_expiration_time` says otherwise."""
    rasa_ttl = session.routing_expiry_seconds()
    if kafka_ttl is None:
        return rasa_ttl
    if kafka_ttl != rasa_ttl:
        keeps = (
            "keeps the routing across a session expiry"
            if rasa_ttl == 0
            else f"drops the routing after {rasa_ttl / 60:g} idle min"
        )
        warnings.append(
            problem(
                file,
                "kafka.session_expiration_time",
                f"ends idle sessions after {kafka_ttl / 60:g} min (0 = never), while Rasa "
                f"{keeps} for this domain's session_config",
            )
        )
    return kafka_ttl


def _deployment_warnings(
    group: ModelGroup | None,
    config: RasaConfig,
    read: EndpointsRead,
    message_for: Callable[[Deployment], str | None],
) -> list[str]:
    """A warning per deployment of `group` that `message_for` has something to say about."""
    if group is None:
        return []
    if group.id == INLINE_GROUP_ID:
        file, where = config.file, f"{config.router_path}.llm"
    else:
        file, where = read.file, read.group_paths.get(group.id, f"model_groups (id {group.id})")
    found = []
    for i, deployment in enumerate(group.models):
        message = message_for(deployment)
        if message is not None:
            at = where if group.id == INLINE_GROUP_ID else f"{where}.models[{i}]"
            found.append(problem(file, at, message))
    return found


def _bias_warnings(
    group: ModelGroup | None, rasa: RasaVersion, config: RasaConfig, read: EndpointsRead
) -> list[str]:
    """A warning per deployment that gets Rasa's logit bias for another tokenizer."""

    def message(deployment: Deployment) -> str | None:
        found = bias_mismatch(deployment, rasa.behaviour.llm)
        return None if found is None else found.replace("Rasa ", f"{rasa} ", 1)

    return _deployment_warnings(group, config, read, message)


def _price_warnings(group: ModelGroup | None, config: RasaConfig, read: EndpointsRead) -> list[str]:
    """cost-based-routing: a warning per deployment it cannot price (ranked last)."""
    if group is None or len(group.models) < 2:
        return []
    if group.settings.routing_strategy != "cost-based-routing":
        return []
    return _deployment_warnings(group, config, read, unpriced_warning)


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
    domain: Path | None = None,
    rasa: RasaVersion = DEFAULT_RASA,
) -> AppConfig:
    """Everything the worker runs on, read as `rasa` reads it (its behaviour for config.yml,
    flows and domain, its endpoints rules for model_groups); ConfigError lists every problem of
    every file. Warnings are logged and kept in `AppConfig.warnings`."""
    paths = ConfigPaths(config, endpoints, flows, domain)
    problems: list[str] = []
    notes: list[str] = []
    assistant = _read_assistant(paths, rasa, problems, notes)
    read = read_endpoints(endpoints, environ, release=rasa.release)
    problems.extend(read.problems)
    notes.extend(read.warnings)
    llm_group: ModelGroup | None = None
    rasa_config = assistant.config
    if rasa_config is not None:
        group_id, llm_group = _router_llm(rasa_config, rasa, environ, problems, notes)
        problems.extend(_missing_groups(rasa_config, read))
        if group_id is not None and read.endpoints is not None:
            llm_group = read.endpoints.model_groups.get(group_id)
        problems.extend(_check_router_groups(llm_group, read, environ))
    if (
        problems
        or rasa_config is None
        or assistant.flows is None
        or not assistant.domain_ok
        or read.endpoints is None
    ):
        raise ConfigError(_unique(problems))
    router = rasa_config.router
    if isinstance(router, LLMBasedRouterConfig) and llm_group is None:
        raise ConfigError(
            [problem(rasa_config.file, rasa_config.router_path, "no LLM could be resolved")]
        )
    if read.endpoints.nlu is None and not isinstance(router, LLMBasedRouterConfig):
        log.info("%s has no nlu: endpoint; messages without parse_data have no intent", read.file)
    notes.extend(_bias_warnings(llm_group, rasa, rasa_config, read))
    notes.extend(_price_warnings(llm_group, rasa_config, read))
    ttl = session_ttl(
        read.endpoints.kafka.session_ttl,
        assistant.domain.session if assistant.domain is not None else SessionConfig(),
        file=read.file,
        warnings=notes,
    )
    flows_model = Flows(assistant.flows, rasa.behaviour.patterns)
    return AppConfig(
        router=router,
        endpoints=read.endpoints,
        assistant=Assistant(router, flows_model, assistant.domain, rasa.behaviour),
        llm_group=llm_group,
        paths=paths,
        rasa=rasa,
        session_ttl=ttl,
        warnings=_log_warnings(notes),
    )


def reload_app_config(current: AppConfig, environ: Mapping[str, str]) -> AppConfig:
    """The same files read again (SIGHUP), as the same Rasa release reads them; ConfigError
    leaves `current` to keep running on."""
    paths = current.paths
    return load_app_config(
        paths.config,
        paths.endpoints,
        paths.flows,
        environ,
        domain=paths.domain,
        rasa=current.rasa,
    )


def validate_files(
    config: Path,
    endpoints: list[Path],
    flows: Path | None,
    environ: Mapping[str, str],
    *,
    domain: Path | None = None,
    rasa: RasaVersion = DEFAULT_RASA,
    warnings: list[str] | None = None,
) -> list[str]:
    """Every problem of `config.yml` run against each endpoints file, as `rasa` reads them;
    [] when all is valid.

    The endpoints files (one per environment) must also define the same model group ids. What
    Rasa accepts but that behaves surprisingly is appended to `warnings`.
    """
    found: list[str] = [] if warnings is None else warnings
    problems: list[str] = []
    if not endpoints:
        problems.append("no endpoints file given")
    assistant = _read_assistant(ConfigPaths(config, Path(), flows, domain), rasa, problems, found)
    rasa_config = assistant.config
    group_id, inline_group = None, None
    if rasa_config is not None:
        group_id, inline_group = _router_llm(rasa_config, rasa, environ, problems, found)
    reads = [read_endpoints(path, environ, release=rasa.release) for path in endpoints]
    for read in reads:
        problems.extend(read.problems)
        found.extend(read.warnings)
        if rasa_config is None:
            continue
        problems.extend(_missing_groups(rasa_config, read))
        group = inline_group
        if group_id is not None and read.endpoints is not None:
            group = read.endpoints.model_groups.get(group_id)
        problems.extend(_check_router_groups(group, read, environ))
        found.extend(_bias_warnings(group, rasa, rasa_config, read))
        found.extend(_price_warnings(group, rasa_config, read))
        if read.endpoints is not None:
            session_ttl(
                read.endpoints.kafka.session_ttl,
                assistant.domain.session if assistant.domain is not None else SessionConfig(),
                file=read.file,
                warnings=found,
            )
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
