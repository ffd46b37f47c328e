"""How each Rasa Pro release reads the `model_groups` of endpoints.yml, as a table: one row per
range of releases that read it alike, each read from Rasa's published wheels (and from the
litellm release that wheel pins, where Rasa hands the `router:` block to litellm's Router).

The loader takes the selected release (`RasaVersion.release` of `--rasa-version`, whose routing
behaviour is the other table, worker.rasa.releases) and reads its row here; nothing else in the
code compares versions. A new behaviour is a new column, a release that changes one is a new row.
The two tables stay apart because their rows split at other releases.

Where a change falls between two releases that were not both read, the row starts at the first
release read with the change (the releases read are each row's `read_from`).

What every row shares (unchanged from 3.11.0 to 3.21.0) is not a column: the aliases other than
`max_tokens`, the forbidden `stream`/`n`, provider inference, `${VAR}` at load, the routing
strategies Rasa accepts, and the keys Rasa itself consumes from `router:`
(`use_chat_completions_endpoint`). Those live in worker.config.model_config and
worker.config.router_settings, next to the rules that use them.

Source files (paths inside the `rasa` package of the wheel, and of litellm's):
- max_completion_tokens_alias: shared/providers/_configs/openai_client_config.py and
  azure_openai_client_config.py (DEPRECATED_ALIASES_TO_STANDARD_KEY_MAPPING)
- license_variables: utils/licensing.py (retrieve_license_from_env)
- api_key_over_license: shared/providers/llm/rasa_llm_client.py (_completion_fn_args)
- call_deadline: shared/providers/llm/litellm_router_llm_client.py and _base_litellm_client.py
  (asyncio.wait_for around the call; core/constants.py DEFAULT_REQUEST_TIMEOUT)
- oauth: shared/providers/_configs/azure_entra_id_config.py (absent before 3.12.0)
- bedrock_api_key: litellm's llms/bedrock/base_aws_llm.py get_request_headers (an `api_key`,
  else AWS_BEARER_TOKEN_BEDROCK, sent as Bearer; from litellm 1.79.3, absent in 1.69.3)
- secret_fullmatch, oauth_secret_keys, api_key_env_refused: engine/validation.py
  (_validate_sensitive_keys_are_an_environment_variables_for_model_groups, up to 3.20.5),
  shared/providers/model_group_validation.py (3.21.0), shared/constants.py (SENSITIVE_DATA)
- litellm: the wheel's `Requires-Dist: litellm` pin; in litellm: router.py (Router.__init__,
  get_allowed_fails_from_policy), router_utils/get_retry_from_policy.py, types/router.py
  (RetryPolicy, AllowedFailsPolicy), router_utils/cooldown_handlers.py
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from worker.llm.errors import ErrorKind
from worker.rasa.releases import DEFAULT_RASA, Release, ReleaseRange


class ReleaseNumber(Protocol):
    """Anything naming a Rasa Pro release (worker.rasa.releases.Release is one)."""

    @property
    def major(self) -> int: ...

    @property
    def minor(self) -> int: ...

    @property
    def patch(self) -> int: ...


# Until `--rasa-version` selects another: the release table's default (SPEC §3).
DEFAULT_RELEASE = DEFAULT_RASA.release


@dataclass(frozen=True, slots=True)
class LitellmRouter:
    """What one litellm release's Router accepts and how its policies apply."""

    version: str  # the litellm release read
    router_keys: frozenset[str]  # Router.__init__'s keyword arguments
    # RetryPolicy field -> the failures it applies to; a field applying to none is accepted by
    # litellm (declared) but never consulted (InternalServerErrorRetries before 1.101).
    retry_policy: Mapping[str, frozenset[ErrorKind]]
    default_retries: str | None  # the field that applies to every other failure
    allowed_fails_policy: Mapping[str, frozenset[ErrorKind]]
    # `AllowedFailsPolicy` value 0: honoured (1.101), or read as unset (`policy or allowed_fails`)
    zero_allowed_fails_honoured: bool


_K = ErrorKind
_NONE: frozenset[ErrorKind] = frozenset()


def _fields(**fields: frozenset[ErrorKind]) -> Mapping[str, frozenset[ErrorKind]]:
    return MappingProxyType(dict(fields))


# litellm 1.53.1 Router.__init__ (read for the 1.52.x that Rasa 3.11.0 and 3.12.0-3.12.6 pin,
# which is not on PyPI any more: the nearest published release).
_KEYS_1_53 = frozenset(
    {
        "model_list", "assistants_config", "redis_url", "redis_host", "redis_port",
        "redis_password", "cache_responses", "cache_kwargs", "caching_groups", "client_ttl",
        "polling_interval", "default_priority", "num_retries", "max_fallbacks", "timeout",
        "default_litellm_params", "default_max_parallel_requests", "set_verbose", "debug_level",
        "default_fallbacks", "fallbacks", "context_window_fallbacks", "content_policy_fallbacks",
        "model_group_alias", "enable_pre_call_checks", "enable_tag_filtering", "retry_after",
        "retry_policy", "model_group_retry_policy", "allowed_fails", "allowed_fails_policy",
        "cooldown_time", "disable_cooldowns", "routing_strategy", "routing_strategy_args",
        "provider_budget_config", "alerting_config", "router_general_settings",
    }
)  # fmt: skip
_KEYS_1_69 = _KEYS_1_53 | {"stream_timeout", "optional_pre_call_checks"}
_KEYS_1_79 = _KEYS_1_69 | {"search_tools", "ignore_invalid_deployments"}
_KEYS_1_80 = _KEYS_1_79 | {"guardrail_list", "tag_filtering_match_any"}
_KEYS_1_82 = _KEYS_1_80 | {"redis_db", "deployment_affinity_ttl_seconds"}
_KEYS_1_87 = _KEYS_1_82 | {
    "routing_groups",
    "model_group_affinity_config",
    "enable_health_check_routing",
    "health_check_staleness_threshold",
    "health_check_ignore_transient_errors",
    "enable_weighted_failover",
}
_KEYS_1_101 = _KEYS_1_87 | {
    "tag_routing_prefix",
    "plugins",
    "background_health_check_model_groups",
    "fallback_access_check",
    "auto_router_capability_limit",
}

# get_retry_from_policy.py: the classes each field is matched against (ContentPolicyViolation
# is a BadRequestError that only litellm's message sniffing produces: the gateway classifies
# a 400 as BadRequestError, so that field never applies here).
_RETRY_UP_TO_1_90 = _fields(
    BadRequestErrorRetries=frozenset({_K.BAD_REQUEST}),
    AuthenticationErrorRetries=frozenset({_K.AUTHENTICATION}),
    TimeoutErrorRetries=frozenset({_K.TIMEOUT}),
    RateLimitErrorRetries=frozenset({_K.RATE_LIMIT}),
    ContentPolicyViolationErrorRetries=_NONE,
    InternalServerErrorRetries=_NONE,  # declared in types/router.py, never consulted
)
_RETRY_1_101 = _fields(
    BadRequestErrorRetries=frozenset({_K.BAD_REQUEST}),
    AuthenticationErrorRetries=frozenset({_K.AUTHENTICATION}),
    TimeoutErrorRetries=frozenset({_K.TIMEOUT}),
    RateLimitErrorRetries=frozenset({_K.RATE_LIMIT}),
    ContentPolicyViolationErrorRetries=_NONE,
    InternalServerErrorRetries=frozenset({_K.INTERNAL_SERVER}),
    ServiceUnavailableErrorRetries=frozenset({_K.SERVICE_UNAVAILABLE}),
    DefaultRetries=_NONE,  # the fallback of every class, see LitellmRouter.default_retries
)
_FAILS_UP_TO_1_90 = _fields(
    BadRequestErrorAllowedFails=frozenset({_K.BAD_REQUEST}),
    AuthenticationErrorAllowedFails=frozenset({_K.AUTHENTICATION}),
    TimeoutErrorAllowedFails=frozenset({_K.TIMEOUT}),
    RateLimitErrorAllowedFails=frozenset({_K.RATE_LIMIT}),
    ContentPolicyViolationErrorAllowedFails=_NONE,
    InternalServerErrorAllowedFails=_NONE,  # declared, never consulted
)
_FAILS_1_101 = _fields(
    BadRequestErrorAllowedFails=frozenset({_K.BAD_REQUEST}),
    AuthenticationErrorAllowedFails=frozenset({_K.AUTHENTICATION}),
    TimeoutErrorAllowedFails=frozenset({_K.TIMEOUT}),
    RateLimitErrorAllowedFails=frozenset({_K.RATE_LIMIT}),
    ContentPolicyViolationErrorAllowedFails=_NONE,
    InternalServerErrorAllowedFails=frozenset({_K.INTERNAL_SERVER}),
    ServiceUnavailableErrorAllowedFails=frozenset({_K.SERVICE_UNAVAILABLE}),
    BadGatewayErrorAllowedFails=frozenset({_K.BAD_GATEWAY}),
    NotFoundErrorAllowedFails=frozenset({_K.NOT_FOUND}),
)


def _litellm(version: str, keys: frozenset[str]) -> LitellmRouter:
    newest = version.startswith("1.101")
    return LitellmRouter(
        version=version,
        router_keys=keys,
        retry_policy=_RETRY_1_101 if newest else _RETRY_UP_TO_1_90,
        default_retries="DefaultRetries" if newest else None,
        allowed_fails_policy=_FAILS_1_101 if newest else _FAILS_UP_TO_1_90,
        zero_allowed_fails_honoured=newest,
    )


# The pins of the 3.11.10-3.11.17 (1.64) and 3.12.11 (1.68) wheels were not read: 1.69.3, the
# next published release read, stands for them; so does 1.80.17 for 1.81 and 1.101.0 for 1.100.
LITELLM_1_53 = _litellm("1.53.1", _KEYS_1_53)
LITELLM_1_69 = _litellm("1.69.3", frozenset(_KEYS_1_69))
LITELLM_1_79 = _litellm("1.79.3", frozenset(_KEYS_1_79))
LITELLM_1_80 = _litellm("1.80.17", frozenset(_KEYS_1_80))
LITELLM_1_82 = _litellm("1.82.4", frozenset(_KEYS_1_82))
LITELLM_1_87 = _litellm("1.87.0", frozenset(_KEYS_1_87))
LITELLM_1_90 = _litellm("1.90.2", frozenset(_KEYS_1_87))
LITELLM_1_101 = _litellm("1.101.0", frozenset(_KEYS_1_101))

PRO_LICENSE = ("RASA_PRO_LICENSE",)
BOTH_LICENSES = ("RASA_LICENSE", "RASA_PRO_LICENSE")
# Rasa 3.21.0's SENSITIVE_DATA as far as an Azure `oauth:` block holds them; before 3.21.0 Rasa
# checks no nested key, and the worker refuses a literal client secret anyway (SPEC §5).
_OAUTH_SECRETS_SPEC = ("client_secret",)
_OAUTH_SECRETS_3_21 = ("client_id", "client_secret")


@dataclass(frozen=True, slots=True)
class EndpointsRules(ReleaseRange):
    """One row: releases `first`..`last` read `model_groups` alike."""

    litellm: LitellmRouter
    # `max_tokens` of an openai/azure model is renamed `max_completion_tokens`.
    max_completion_tokens_alias: bool
    # The variables whose value is `provider: rasa`'s key, the first set wins.
    license_variables: tuple[str, ...]
    # `provider: rasa`: a model's own `api_key` is sent instead of the license.
    api_key_over_license: bool
    # The whole call of a group (its retries included) is bounded by the group's `timeout`
    # (a model's own for a group without router), else 300 s.
    call_deadline: bool
    # Rasa reads an Azure `oauth:` block (Entra ID); before, it is an unknown key.
    oauth: bool
    # Secret values must be exactly `${VAR}` (else a `${VAR}` prefix is enough).
    secret_fullmatch: bool
    oauth_secret_keys: tuple[str, ...]  # keys of `oauth:` that must be written as `${VAR}`
    api_key_env_refused: bool  # the removed `api_key_env` key is refused by name
    # A Bedrock deployment's `api_key`, else AWS_BEARER_TOKEN_BEDROCK, is a Bedrock API key
    # (Bearer instead of SigV4); before, litellm ignores both.
    bedrock_api_key: bool


def _row(
    first: str,
    last: str,
    read_from: tuple[str, ...],
    litellm: LitellmRouter,
    *,
    alias: bool = True,
    deadline: bool = True,
    key_over_license: bool = False,
    newest_validation: bool = False,
) -> EndpointsRules:
    start = Release.parse(first)
    return EndpointsRules(
        first=start,
        last=Release.parse(last),
        read_from=read_from,
        litellm=litellm,
        max_completion_tokens_alias=alias,
        license_variables=BOTH_LICENSES if start >= Release(3, 13, 13) else PRO_LICENSE,
        api_key_over_license=key_over_license,
        call_deadline=deadline,
        oauth=start >= Release(3, 12, 0),
        secret_fullmatch=newest_validation,
        oauth_secret_keys=_OAUTH_SECRETS_3_21 if newest_validation else _OAUTH_SECRETS_SPEC,
        api_key_env_refused=newest_validation,
        bedrock_api_key=litellm not in (LITELLM_1_53, LITELLM_1_69),
    )


_L53, _L69, _L79, _L80 = LITELLM_1_53, LITELLM_1_69, LITELLM_1_79, LITELLM_1_80
_L82, _L87, _L90, _L101 = LITELLM_1_82, LITELLM_1_87, LITELLM_1_90, LITELLM_1_101

RULES: tuple[EndpointsRules, ...] = (
    _row("3.11.0", "3.11.9", ("3.11.0",), _L53, alias=False, deadline=False),
    _row("3.11.10", "3.11.13", ("3.11.10", "3.11.12", "3.11.13"), _L69, alias=False,
         deadline=False),
    _row("3.11.14", "3.11.20", ("3.11.14", "3.11.17", "3.11.18", "3.11.20"), _L69,
         deadline=False),
    _row("3.12.0", "3.12.10", ("3.12.0", "3.12.3", "3.12.6"), _L53, alias=False, deadline=False),
    _row("3.12.11", "3.12.13", ("3.12.11", "3.12.13"), _L69, alias=False, deadline=False),
    _row("3.12.14", "3.12.36", ("3.12.14", "3.12.32"), _L69, deadline=False),
    _row("3.12.37", "3.12.42", ("3.12.37", "3.12.42"), _L69),
    _row("3.13.0", "3.13.12", ("3.13.0",), _L69, deadline=False),
    _row("3.13.13", "3.13.15", ("3.13.13",), _L69, deadline=False),
    _row("3.13.16", "3.13.23", ("3.13.16", "3.13.22"), _L69),
    _row("3.13.24", "3.13.25", ("3.13.24", "3.13.25"), _L80),
    _row("3.14.0", "3.14.3", ("3.14.0",), _L69, deadline=False),
    _row("3.14.4", "3.14.14", ("3.14.4", "3.14.8"), _L69),
    _row("3.14.15", "3.14.27", ("3.14.15", "3.14.18"), _L80),
    _row("3.14.28", "3.14.29", ("3.14.28", "3.14.29"), _L87, key_over_license=True),
    _row("3.15.0", "3.15.17", ("3.15.0", "3.15.9"), _L79),
    _row("3.15.18", "3.15.34", ("3.15.18", "3.15.19"), _L80),
    _row("3.15.35", "3.15.36", ("3.15.35", "3.15.36"), _L87, key_over_license=True),
    _row("3.16.0", "3.16.31", ("3.16.0", "3.16.1"), _L82),
    _row("3.16.32", "3.16.32", ("3.16.32",), _L101, key_over_license=True),
    _row("3.17.0", "3.17.11", ("3.17.0",), _L87, key_over_license=True),
    _row("3.17.12", "3.17.12", ("3.17.12",), _L101, key_over_license=True),
    _row("3.18.0", "3.18.9", ("3.18.0", "3.18.9"), _L90, key_over_license=True),
    _row("3.19.0", "3.19.8", ("3.19.0",), _L90, key_over_license=True),
    _row("3.19.9", "3.19.9", ("3.19.9",), _L101, key_over_license=True),
    _row("3.20.0", "3.20.5", ("3.20.0", "3.20.5"), _L101, key_over_license=True),
    _row("3.21.0", "3.21.0", ("3.21.0",), _L101, key_over_license=True,
         newest_validation=True),
)  # fmt: skip


class UnknownRelease(ValueError):
    pass


def rules_for(release: ReleaseNumber = DEFAULT_RELEASE) -> EndpointsRules:
    """The row of `release`; UnknownRelease when no row covers it."""
    number = Release(release.major, release.minor, release.patch)
    for row in RULES:
        if row.covers(number):
            return row
    raise UnknownRelease(f"Rasa Pro {number}: no row of the endpoints rules covers it")


DEFAULT_RULES = rules_for(DEFAULT_RELEASE)


def markdown_table() -> str:
    """The README's table of these rows (a unit test keeps the README equal to it)."""
    header = (
        "| releases | litellm | `max_tokens` → `max_completion_tokens` | `provider: rasa` key "
        "| call deadline | `oauth:` in Rasa | secrets | Bedrock API key | read from |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for row in RULES:
        key = " then ".join(f"`{v}`" for v in row.license_variables)
        if row.api_key_over_license:
            key = f"`api_key`, else {key}"
        secrets = "exactly `${VAR}`, also in `oauth:`" if row.secret_fullmatch else "`${VAR}…`"
        cells = [
            f"| {row.releases}",
            row.litellm.version,
            "yes" if row.max_completion_tokens_alias else "no",
            key,
            "group `timeout`, else 300 s" if row.call_deadline else "none",
            "yes" if row.oauth else "no (sent in the body)",
            secrets,
            "`api_key`, `AWS_BEARER_TOKEN_BEDROCK`" if row.bedrock_api_key else "no",
            ", ".join(row.read_from) + " |",
        ]
        lines.append(" | ".join(cells))
    return "\n".join(lines)
