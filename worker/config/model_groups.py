"""`model_groups:` of endpoints.yml, read as the selected Rasa release reads it.

A group is `id`, `models` and, for a routed group, `router:` (worker.config.router_settings);
any other key of a routed group is a call argument Rasa passes with every call, over each
deployment's own parameters (LiteLLMRouterClientConfig.extra_parameters). A group without
`router:` is a standalone client of its one model (Rasa's llm_client_factory reads models[0]).

Each model is read by worker.config.model_config; `${VAR}` as worker.config.env says. Then every
deployment is built as the gateway will build it (worker.llm.providers, no I/O), so that a key
or base URL neither the file nor the environment gives, or a missing extra, is refused here —
at start, at reload and by `validate` — rather than on every call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from worker.config.endpoints_rules import DEFAULT_RULES, EndpointsRules
from worker.config.env import SECRET_KEYS, expand_at_load
from worker.config.errors import key_path, problem, validation_problems
from worker.config.model_config import ModelReading, read_model
from worker.config.router_settings import RouterReading, router_settings
from worker.llm.model_group import UNSUPPORTED_LITELLM_PARAMS, ModelGroup
from worker.llm.providers import BuildContext, build_provider, registered
from worker.llm.strategies import Candidate, shuffle_weights

GROUP_KEYS = ("id", "models", "router")
DEFAULT_CALL_TIMEOUT = 300.0  # rasa/core/constants.py DEFAULT_REQUEST_TIMEOUT


class GroupsReading:
    """One file's model_groups: where problems and warnings go, and the rules that apply."""

    def __init__(
        self,
        file: str,
        environ: Mapping[str, str],
        rules: EndpointsRules = DEFAULT_RULES,
        *,
        problems: list[str],
        warnings: list[str],
    ) -> None:
        self.file = file
        self.environ = environ
        self.rules = rules
        self.problems = problems
        self.warnings = warnings
        self.paths: dict[str, str] = {}  # where each group is, by id (`model_groups[i] (id x)`)
        self.fallbacks: dict[str, tuple[str, ...]] = {}  # the groups each group falls back to

    def problem(self, path: str, message: str) -> None:
        self.problems.append(problem(self.file, path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(problem(self.file, path, message))


def _router_block(raw: Mapping[str, Any], path: str, at: GroupsReading) -> Mapping[str, Any] | None:
    if "router" not in raw:
        return None
    router = raw["router"]
    if not isinstance(router, Mapping):
        at.problem(f"{path}.router", "must be a mapping of router settings")
        return {}
    if not router:
        at.problem(f"{path}.router", "cannot be empty (Rasa: 'Router cannot be empty.')")
    return router


def _chat_switch(router: Mapping[str, Any], path: str, at: GroupsReading) -> bool:
    value = router.get("use_chat_completions_endpoint", True)
    if not isinstance(value, bool):
        at.problem(f"{path}.router.use_chat_completions_endpoint", "must be true or false")
        return True
    return value


def _weights_note(group: ModelGroup) -> str | None:
    """Which values simple-shuffle weighs a group's deployments by, when they mix keys."""
    models = group.models
    if len(models) < 2 or group.settings.routing_strategy != "simple-shuffle":
        return None
    keys = ("weight", "rpm", "tpm")
    set_by = {k: [d for d in models if getattr(d, k) is not None] for k in keys}
    used = next((k for k in keys if set_by[k]), None)
    if used is None or (
        len(set_by[used]) == len(models) and not any(set_by[k] for k in keys if k != used)
    ):
        return None
    weights = shuffle_weights([Candidate(d.name, d) for d in models])
    shown = ", ".join(
        f"{d.name} {w:g}" + ("" if getattr(d, used) is not None else f" (no {used})")
        for d, w in zip(models, weights, strict=True)
    )
    ignored = [k for k in keys if k != used and set_by[k]]
    note = (
        f"simple-shuffle weighs these deployments by {used} (the first of weight, rpm, tpm "
        f"that any deployment sets): {shown}"
    )
    if ignored:
        note += f"; their {', '.join(ignored)} is not used to choose"
    return note


def _call_timeout(
    routed: bool,
    call_params: Mapping[str, Any],
    models: Sequence[Mapping[str, Any]],
    rules: EndpointsRules,
) -> float | None:
    if not rules.call_deadline:
        return None
    given = call_params.get("timeout") if routed else (models[0].get("timeout") if models else None)
    if isinstance(given, int | float | str) and not isinstance(given, bool):
        try:
            value = float(given)
        except ValueError:
            return DEFAULT_CALL_TIMEOUT
        return value if value > 0 else DEFAULT_CALL_TIMEOUT
    return DEFAULT_CALL_TIMEOUT


def check_build(
    group: ModelGroup, *, file: str, path: str, environ: Mapping[str, str], problems: list[str]
) -> None:
    """Build every deployment as the gateway will (no I/O): what the file and the environment
    leave missing for a group the router calls — a key, a base URL, an extra — is a problem."""
    context = BuildContext(environ=environ, routed=group.router is not None, check_only=True)
    for index, deployment in enumerate(group.models):
        where = f"{path}.models[{index}]" if path else path
        try:
            build_provider(deployment, None, context)
        except ValueError as exc:
            problems.append(problem(file, where, str(exc)))


def _unused_params(group: ModelGroup, path: str, at: GroupsReading) -> None:
    for index, deployment in enumerate(group.models):
        provider = registered(deployment.provider)
        own = provider.own_params if provider is not None else frozenset()
        unused = sorted((UNSUPPORTED_LITELLM_PARAMS - own) & set(deployment.model_extra or {}))
        if unused:
            at.warn(
                f"{path}.models[{index}]",
                f"{', '.join(unused)}: litellm parameter(s) the worker does not implement; "
                "they have no effect here",
            )


def read_group(raw: Mapping[str, Any], path: str, at: GroupsReading) -> ModelGroup | None:
    found = len(at.problems)
    # Secrets stay references at load, to be checked as written (and resolved later).
    secrets = frozenset((*SECRET_KEYS, *at.rules.oauth_secret_keys))
    values = expand_at_load(
        dict(raw),
        file=at.file,
        path=path,
        environ=at.environ,
        problems=at.problems,
        secret_keys=secrets,
    )
    group_id = str(values.get("id"))
    router = _router_block(values, path, at)
    routed = router is not None
    models = values.get("models")
    if "models" not in values or models is None:
        at.problem(f"{path}.models", "required key is missing")
        models = []
    elif not isinstance(models, list):
        at.problem(f"{path}.models", "must be a list of models")
        models = []
    elif not models:
        at.problem(f"{path}.models", "cannot be empty: a group needs at least one model")
    if len(models) > 1 and not routed:
        at.problem(
            f"{path}.router",
            f"the group has {len(models)} models but no router: Rasa needs a router block for "
            "a group of several models",
        )
    call_params = {k: v for k, v in values.items() if k not in GROUP_KEYS}
    if call_params and not routed:
        at.warn(
            path,
            f"{', '.join(sorted(call_params))}: ignored, Rasa reads a group without router as "
            "its first model alone",
        )
        call_params = {}
    use_chat = _chat_switch(router, path, at) if router else True
    read_models: list[dict[str, Any]] = []
    for index, raw_model in enumerate(models):
        reading = ModelReading(
            at.file,
            f"{path}.models[{index}]",
            group_id,
            routed,
            at.rules,
            at.environ,
            at.problems,
            at.warnings,
        )
        model = read_model(raw_model, reading)
        if model is not None:
            if routed:
                model["use_chat_completions_endpoint"] = use_chat
            read_models.append(model)
    settings = None
    if router is not None:
        settings = router_settings(
            router,
            group_id=group_id,
            rules=at.rules,
            at=RouterReading(at.file, f"{path}.router", group_id, at.problems, at.warnings),
        )
        at.fallbacks[group_id] = settings["fallbacks"]
    if len(at.problems) > found:
        return None
    try:
        group = ModelGroup.model_validate(
            {
                "id": values.get("id"),
                "models": read_models,
                "router": settings,
                "call_params": call_params,
                "call_timeout": _call_timeout(routed, call_params, read_models, at.rules),
            }
        )
    except ValidationError as error:
        at.problems.extend(validation_problems(error, file=at.file, base=path))
        return None
    _unused_params(group, path, at)
    note = _weights_note(group)
    if note is not None:
        at.warn(f"{path}.models", note)
    return None if len(at.problems) > found else group


def read_model_groups(
    section: object, at: GroupsReading
) -> tuple[dict[str, ModelGroup], tuple[str, ...]]:
    """(the groups that could be read, every id the file declares)."""
    if section is None:
        return {}, ()
    if not isinstance(section, list):
        at.problem("model_groups", "must be a list of `- id: …, models: […]`")
        return {}, ()
    groups: dict[str, ModelGroup] = {}
    first_index: dict[str, int] = {}
    paths: dict[str, str] = {}
    for index, raw in enumerate(section):
        group_id = raw.get("id") if isinstance(raw, dict) else None
        named = isinstance(group_id, str) and group_id != ""
        path = f"model_groups[{index}]" + (f" (id {group_id})" if named else "")
        if not isinstance(raw, dict):
            at.problem(path, "must be a mapping with id and models")
            continue
        if not named:
            # Rasa stops at a KeyError; the rest of the group is still worth checking here.
            at.problem(f"{path}.id", "required key is missing (a group id, text)")
            read_group(raw, path, at)
            continue
        assert isinstance(group_id, str)
        if group_id in first_index:
            at.problem(
                f"{path}.id",
                f"duplicate id, already used by model_groups[{first_index[group_id]}] (Rasa "
                "needs every model group id to be unique)",
            )
            continue
        first_index[group_id] = index
        paths[group_id] = path
        group = read_group(raw, path, at)
        if group is not None:
            groups[group_id] = group
    for group_id, targets in at.fallbacks.items():
        for target in targets:
            if target not in first_index and group_id in paths:
                at.problem(
                    key_path(paths[group_id], ["router", "fallbacks"]),
                    f"falls back to model group {target}, which is not defined in {at.file}",
                )
    at.paths.update(paths)
    return groups, tuple(first_index)
