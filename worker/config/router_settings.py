"""A group's `router:` block as Rasa reads it: Rasa takes `use_chat_completions_endpoint` for
itself and hands every other key to litellm's `Router(**router)`
(shared/providers/_configs/litellm_router_client_config.py), which refuses a key it does not have
(`Router.__init__() got an unexpected keyword argument`). Rasa checks `routing_strategy` first
(engine/validation.py _validate_model_group_router_setting).

The gateway implements IMPLEMENTED with litellm's meaning (worker.llm.gateway). A key litellm's
Router accepts but the gateway does not implement is refused too, by name, never ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.config.endpoints_rules import EndpointsRules, LitellmRouter
from worker.config.errors import key_path, problem
from worker.llm.errors import ErrorKind

ROUTING_STRATEGIES = (
    "simple-shuffle",
    "least-busy",
    "latency-based-routing",
    "usage-based-routing",
    "cost-based-routing",
)
REDIS_STRATEGIES = ("cost-based-routing", "usage-based-routing")
RASA_KEYS = ("use_chat_completions_endpoint",)
IMPLEMENTED = frozenset(
    {
        "routing_strategy", "routing_strategy_args", "num_retries", "cooldown_time",
        "allowed_fails", "timeout", "fallbacks", "default_fallbacks", "max_fallbacks",
        "retry_policy", "allowed_fails_policy", "disable_cooldowns", "retry_after",
        "redis_url", "redis_host", "redis_port", "redis_password",
    }
)  # fmt: skip
# routing_strategy_args litellm reads, by strategy (router_strategy/*.py); cost-based-routing is
# given none by the Router, simple-shuffle and least-busy read none.
STRATEGY_ARGS = {
    "latency-based-routing": ("ttl", "lowest_latency_buffer", "max_latency_list_size"),
    "usage-based-routing": ("ttl",),
}


class RouterReading:
    """Where a router block is, and where its problems and warnings go."""

    def __init__(
        self, file: str, path: str, group_id: str, problems: list[str], warnings: list[str]
    ) -> None:
        self.file = file
        self.path = path
        self.group_id = group_id
        self.problems = problems
        self.warnings = warnings

    def problem(self, key: str, message: str) -> None:
        self.problems.append(problem(self.file, key_path(self.path, [key]), message))

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(problem(self.file, key_path(self.path, [key]), message))


def _refuse_unknown(router: Mapping[str, Any], litellm: LitellmRouter, at: RouterReading) -> None:
    for key in router:
        if key in IMPLEMENTED or key in RASA_KEYS:
            continue
        if key in litellm.router_keys:
            at.problem(
                key,
                f"is a setting of litellm's Router (litellm {litellm.version}) that the worker "
                "does not implement: remove it",
            )
        else:
            at.problem(
                key,
                f"unknown router key: Rasa passes the router block to litellm's Router (litellm "
                f"{litellm.version}), which has no such setting",
            )


def _strategy(router: Mapping[str, Any], at: RouterReading) -> str:
    strategy = router.get("routing_strategy")
    if strategy in (None, ""):
        return "simple-shuffle"  # Rasa checks only a given one; litellm's default
    if strategy not in ROUTING_STRATEGIES:
        at.problem(
            "routing_strategy",
            f"{strategy} is not one Rasa accepts: {', '.join(ROUTING_STRATEGIES)}",
        )
        return "simple-shuffle"
    if strategy in REDIS_STRATEGIES and "redis_host" not in router:
        # Rasa's warning; with redis_url the worker does share the counters.
        at.warn(
            "routing_strategy",
            f"{strategy} is meant to share its counters through Redis, but no redis_host is "
            "set: counters are kept per worker"
            + (" (Rasa warns the same; redis_url is used here)" if "redis_url" in router else ""),
        )
    return str(strategy)


def _strategy_args(strategy: str, args: object, at: RouterReading) -> dict[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        at.problem("routing_strategy_args", "must be a mapping")
        return {}
    read = STRATEGY_ARGS.get(strategy, ())
    for key in args:
        if key not in read:
            at.warn(
                f"routing_strategy_args.{key}",
                f"is not read by {strategy} (litellm ignores it"
                + (f"; it reads {', '.join(read)})" if read else ")"),
            )
    values = dict(args)
    for key in read:
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            at.problem(f"routing_strategy_args.{key}", "must be a number")
    if strategy == "usage-based-routing":
        ttl = values.get("ttl")
        if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl < 60:
            at.problem(
                "routing_strategy_args.ttl",
                "below 60 s (litellm then forgets a minute's counts early) is not implemented: "
                "the worker counts per calendar minute",
            )
    return values


def fallback_targets(router: Mapping[str, Any], group_id: str, at: RouterReading) -> list[str]:
    """The groups `group_id` falls back to: litellm's `fallbacks` entry for it, else the generic
    `"*"` one (and `default_fallbacks`, litellm's way to write that)."""
    fallbacks = router.get("fallbacks")
    specific: list[str] | None = None
    generic: list[str] | None = None
    if fallbacks is not None:
        if not isinstance(fallbacks, list):
            at.problem("fallbacks", "must be a list of {group id: [fallback group ids]}")
            return []
        for index, entry in enumerate(fallbacks):
            where = f"fallbacks[{index}]"
            # Router.validate_fallbacks
            if not isinstance(entry, Mapping):
                at.problem(where, "is not a dictionary (litellm refuses it)")
                continue
            if len(entry) != 1:
                at.problem(where, f"must have exactly one key, but has {len(entry)} (litellm)")
                continue
            ((name, targets),) = entry.items()
            if isinstance(targets, str):
                targets = [targets]
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                at.problem(where, "must map a group id to a list of group ids")
                continue
            if name == group_id:
                specific = specific or list(targets)
            elif name == "*":
                generic = generic or list(targets)
            else:
                at.warn(
                    where,
                    f"never applies: this group's calls are made as {group_id!r} (Rasa names "
                    "every deployment of a group after the group)",
                )
    default = router.get("default_fallbacks")
    if default is not None:
        if isinstance(default, str):
            default = [default]
        if not isinstance(default, list) or not all(isinstance(t, str) for t in default):
            at.problem("default_fallbacks", "must be a list of group ids")
        elif generic is None:
            generic = list(default)
    targets = specific if specific is not None else (generic or [])
    if group_id in targets:
        at.warn("fallbacks", f"names the group itself ({group_id}): it is not tried twice")
    return [t for t in dict.fromkeys(targets) if t != group_id]


def _policy(
    name: str,
    given: object,
    fields: Mapping[str, frozenset[ErrorKind]],
    default_field: str | None,
    *,
    zero_is_unset: bool,
    at: RouterReading,
) -> tuple[dict[ErrorKind, int], int | None]:
    """(value by failure kind, the default field's value) of a RetryPolicy/AllowedFailsPolicy,
    as the release's litellm applies it."""
    if given is None:
        return {}, None
    if not isinstance(given, Mapping):
        at.problem(name, "must be a mapping of litellm policy fields")
        return {}, None
    by_kind: dict[ErrorKind, int] = {}
    default: int | None = None
    for field, value in given.items():
        where = f"{name}.{field}"
        if field not in fields:
            at.warn(where, "is not a field of litellm's policy here (litellm ignores it)")
            continue
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            at.problem(where, "must be a whole number of at least 0")
            continue
        if zero_is_unset and value == 0:
            at.warn(where, "0 reads as unset in this litellm (`policy or allowed_fails`)")
            continue
        if field == default_field:
            default = value
            continue
        kinds = fields[field]
        if not kinds:
            at.warn(where, "is accepted but never applied by this release's litellm")
        for kind in kinds:
            by_kind.setdefault(kind, value)
    return by_kind, default


def router_settings(
    router: Mapping[str, Any],
    *,
    group_id: str,
    rules: EndpointsRules,
    at: RouterReading,
) -> dict[str, Any]:
    """The values of worker.llm.model_group.RouterSettings (pydantic checks their types)."""
    litellm = rules.litellm
    _refuse_unknown(router, litellm, at)
    strategy = _strategy(router, at)
    values: dict[str, Any] = {
        key: router[key]
        for key in (
            "num_retries", "cooldown_time", "allowed_fails", "timeout", "max_fallbacks",
            "disable_cooldowns", "retry_after", "redis_url", "redis_host", "redis_port",
            "redis_password",
        )
        if router.get(key) is not None
    }  # fmt: skip
    values["routing_strategy"] = strategy
    values["routing_strategy_args"] = _strategy_args(
        strategy, router.get("routing_strategy_args"), at
    )
    values["fallbacks"] = tuple(fallback_targets(router, group_id, at))
    values["retry_policy"], values["default_retries"] = _policy(
        "retry_policy",
        router.get("retry_policy"),
        litellm.retry_policy,
        litellm.default_retries,
        zero_is_unset=False,
        at=at,
    )
    values["allowed_fails_policy"], _ = _policy(
        "allowed_fails_policy",
        router.get("allowed_fails_policy"),
        litellm.allowed_fails_policy,
        None,
        zero_is_unset=not litellm.zero_allowed_fails_honoured,
        at=at,
    )
    return values
