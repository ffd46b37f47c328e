"""One entry of a group's `models:` as Rasa reads it: the provider it names or implies, the
deprecated aliases of that provider's client config, the keys it requires and refuses, and the
`${VAR}` rules of model groups (worker.config.env).

Rasa's client configs (rasa/shared/providers/_configs/*_client_config.py, the same 3.11.0-3.21.0
but for `max_tokens`, a column of worker.config.endpoints_rules), chosen by the provider
(shared/providers/mappings.py get_client_config_class_from_provider) after inferring it
(shared/utils/llm.py get_provider_from_config):

    provider      aliases (alias -> key, the alias's value wins)        required       refused
    openai        model_name, type/_type -> provider, openai_api_type,  model          stream, n
                  openai_api_base, openai_api_version, request_timeout,
                  max_tokens -> max_completion_tokens (where the release renames it)
    azure         deployment_name, engine -> deployment, type/_type,    deployment     stream, n
                  openai_api_*, model_name, request_timeout, max_tokens (idem)
    self-hosted   model_name, type/_type, openai_api_*, request_timeout api_base, model stream, n
    rasa          none                                                  api_base,model
    any other     request_timeout; `model_name` without `model` refused model          stream, n

`type`/`_type` name a provider only for openai, azure and self-hosted (Rasa resolves them
through those three configs alone). `api_type` must be `openai` for openai and self-hosted; it is
dropped (ModelConfig.from_dict pops it). A model without provider is `azure` when it names a
deployment (`deployment`, `deployment_name`, `engine`), else `openai`, the LLMBasedRouter's
default provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.config.endpoints_rules import EndpointsRules
from worker.config.env import (
    REFERENCE_KEYS,
    SECRET_KEYS,
    is_variable_reference,
    resolve,
    starts_with_reference,
)
from worker.config.errors import key_path, problem

DEFAULT_PROVIDER = "openai"  # LLMBasedRouter.DEFAULT_LLM_CONFIG's, in every release
FORBIDDEN = ("stream", "n")  # shared/constants.py STREAM_CONFIG_KEY, N_REPHRASES_CONFIG_KEY
OPENAI_ALIASES = {
    "openai_api_type": "api_type",
    "openai_api_base": "api_base",
    "openai_api_version": "api_version",
}
_PROVIDER_ALIASES = {"type": "provider", "_type": "provider"}
_TIMEOUT_ALIAS = {"request_timeout": "timeout"}
_MAX_TOKENS_ALIAS = {"max_tokens": "max_completion_tokens"}


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What one of Rasa's client config classes does with a model's keys."""

    name: str  # Rasa's class, for messages
    aliases: Mapping[str, str]
    required: tuple[str, ...]
    forbidden: tuple[str, ...] = FORBIDDEN
    api_type: str | None = None  # the only `api_type` accepted, when it is checked
    renames_max_tokens: bool = False  # in the releases that do (EndpointsRules)
    refuses_model_name: bool = False  # `model_name` without `model` is an error
    aliases_provider: bool = field(default=False)  # `type`/`_type` name this provider

    def aliases_for(self, rules: EndpointsRules) -> dict[str, str]:
        aliases = dict(self.aliases)
        if self.renames_max_tokens and rules.max_completion_tokens_alias:
            aliases.update(_MAX_TOKENS_ALIAS)
        return aliases


OPENAI = ClientConfig(
    "OpenAIClientConfig",
    {"model_name": "model", **_PROVIDER_ALIASES, **OPENAI_ALIASES, **_TIMEOUT_ALIAS},
    required=("model",),
    api_type="openai",
    renames_max_tokens=True,
    aliases_provider=True,
)
AZURE = ClientConfig(
    "AzureOpenAIClientConfig",
    {
        "deployment_name": "deployment",
        "engine": "deployment",
        **_PROVIDER_ALIASES,
        **OPENAI_ALIASES,
        "model_name": "model",
        **_TIMEOUT_ALIAS,
    },
    required=("deployment",),
    renames_max_tokens=True,
    aliases_provider=True,
)
SELF_HOSTED = ClientConfig(
    "SelfHostedLLMClientConfig",
    {"model_name": "model", **_PROVIDER_ALIASES, **OPENAI_ALIASES, **_TIMEOUT_ALIAS},
    required=("api_base", "model"),
    api_type="openai",
    aliases_provider=True,
)
RASA = ClientConfig("RasaLLMClientConfig", {}, required=("model", "api_base"), forbidden=())
DEFAULT_LITELLM = ClientConfig(
    "DefaultLiteLLMClientConfig", _TIMEOUT_ALIAS, required=("model",), refuses_model_name=True
)
CLIENT_CONFIGS = {"openai": OPENAI, "azure": AZURE, "self-hosted": SELF_HOSTED, "rasa": RASA}
_DEPLOYMENT_KEYS = ("deployment", "deployment_name", "engine")


def client_config(provider: str) -> ClientConfig:
    return CLIENT_CONFIGS.get(provider, DEFAULT_LITELLM)


def _resolved(model: Mapping[str, Any], config: ClientConfig) -> dict[str, Any]:
    resolved = dict(model)
    for alias, key in config.aliases.items():
        if alias in resolved:
            resolved[key] = resolved.pop(alias)
    return resolved


def infer_provider(model: Mapping[str, Any]) -> str:
    """get_provider_from_config, with the LLMBasedRouter's default for a model naming none."""
    if _resolved(model, SELF_HOSTED).get("provider") == "self-hosted":
        return "self-hosted"
    azure = _resolved(model, AZURE)
    if azure.get("provider") == "azure" or (
        azure.get("deployment") is not None and azure.get("provider") is None
    ):
        return "azure"
    if _resolved(model, OPENAI).get("provider") == "openai":
        return "openai"
    provider = model.get("provider")
    return provider if isinstance(provider, str) and provider else DEFAULT_PROVIDER


@dataclass(slots=True)
class ModelReading:
    """Where a model is, and where its problems and warnings go."""

    file: str
    path: str
    group_id: str
    routed: bool
    rules: EndpointsRules
    environ: Mapping[str, str]
    problems: list[str]
    warnings: list[str]

    def problem(self, key: str | None, message: str) -> None:
        self.problems.append(problem(self.file, key_path(self.path, [key] if key else []), message))

    def warn(self, key: str | None, message: str) -> None:
        self.warnings.append(problem(self.file, key_path(self.path, [key] if key else []), message))


def _check_references(model: Mapping[str, Any], at: ModelReading) -> None:
    """engine/validation.py's two checks of `${…}` in a model, on the keys as written."""
    rules = at.rules
    for key, value in model.items():
        if key in SECRET_KEYS:
            _check_secret(key, value, at, full=rules.secret_fullmatch)
        elif isinstance(value, str) and starts_with_reference(value) and key not in REFERENCE_KEYS:
            at.problem(
                key,
                "a quoted ${...} is not expanded for this key: Rasa expands an unquoted one when "
                "it reads the file, and a quoted one only under "
                f"{', '.join(sorted(REFERENCE_KEYS))}; remove the quotes",
            )
    oauth = model.get("oauth")
    if isinstance(oauth, Mapping):
        for key in rules.oauth_secret_keys:
            if key in oauth:
                _check_secret(f"oauth.{key}", oauth[key], at, full=True)


def _check_secret(key: str, value: Any, at: ModelReading, *, full: bool) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        at.problem(key, "must be written as ${VAR} (an environment variable)")
    elif full and not is_variable_reference(value):
        if starts_with_reference(value):
            at.problem(key, "must be exactly ${VAR}: Rasa 3.21 refuses text around the reference")
        else:
            at.problem(key, "must be written as ${VAR}, a literal secret is refused")
    elif not starts_with_reference(value):
        at.problem(key, "must be written as ${VAR}, a literal secret is refused")


def read_model(raw: object, at: ModelReading) -> dict[str, Any] | None:
    """The model as Rasa's client config leaves it, its strings resolved; None (with problems
    in `at`) when Rasa would refuse it or it cannot work."""
    if not isinstance(raw, Mapping):
        at.problem(None, "must be a mapping of provider settings (provider, model, …)")
        return None
    found = len(at.problems)
    if "api_key_env" in raw:
        at.problem(
            "api_key_env",
            "is not a Rasa key (Rasa 3.21 refuses it by name; before, it is sent in the request "
            "body): write api_key: ${ENV_VAR_NAME}",
        )
    _check_references(raw, at)
    provider = infer_provider(raw)
    if "oauth" in raw and not at.rules.oauth:
        at.warn(
            "oauth",
            "this Rasa release has no Entra ID support (it arrived in 3.12.0) and sends the "
            "block in the request body; the worker authenticates with it as Rasa 3.12+ does",
        )
    config = client_config(provider)
    misnamed = bool(config.refuses_model_name and raw.get("model_name") and not raw.get("model"))
    if misnamed:  # DefaultLiteLLMClientConfig.check_and_error_for_model_name_in_config
        at.problem("model_name", "is not read for this provider: write model instead")
    aliases = config.aliases_for(at.rules)
    model: dict[str, Any] = dict(raw)
    for alias, key in aliases.items():
        if alias in model:
            at.warn(alias, f"is deprecated (removed in Rasa 4.0.0): write {key} instead")
            model[key] = model.pop(alias)
    given = model.get("provider")
    if given is None:
        model["provider"] = provider
    elif given != provider:
        # `type: anthropic` and the like: Rasa reads it through the default's config class.
        at.problem(
            "provider" if "provider" in raw else "type",
            f"{given} given as type: Rasa reads type/_type only as openai, azure or "
            f"self-hosted; write provider: {given}",
        )
    for key in config.required:
        if model.get(key) in (None, "") and not (misnamed and key == "model"):
            at.problem(key, f"required key is missing (Rasa's {config.name} needs it)")
    for key in config.forbidden:
        if key in model:
            at.problem(key, f"is not allowed (Rasa's {config.name} refuses it)")
    api_type = model.pop("api_type", None)
    if config.api_type is not None and api_type not in (None, config.api_type):
        at.problem(
            "api_type" if "api_type" in raw else "openai_api_type",
            f"must be {config.api_type} for provider {provider} (it is checked and dropped)",
        )
    _read_chat_switch(model, provider, at)
    resolved = resolve(model, file=at.file, path=at.path, environ=at.environ, problems=at.problems)
    if provider == "rasa":
        _rasa_key(resolved, at)
    elif provider == "bedrock":
        _bedrock_api_key(resolved, at)
    return resolved if len(at.problems) == found else None


def _read_chat_switch(model: dict[str, Any], provider: str, at: ModelReading) -> None:
    """`use_chat_completions_endpoint` of a model (shared/providers/_configs/
    self_hosted_llm_client_config.py; engine/validation.py for routed groups)."""
    if "use_chat_completions_endpoint" not in model:
        return
    if at.routed:
        at.problem(
            "use_chat_completions_endpoint",
            "is a router setting: Rasa refuses it in a model of a group with a router; "
            "write it under the group's router:",
        )
    elif provider != "self-hosted":
        at.problem(
            "use_chat_completions_endpoint",
            f"is read only for provider self-hosted; Rasa would send it to {provider} in the "
            "request body, which refuses it",
        )


BEDROCK_API_KEY_VARIABLE = "AWS_BEARER_TOKEN_BEDROCK"


def _bedrock_api_key(model: dict[str, Any], at: ModelReading) -> None:
    """A Bedrock API key (`Authorization: Bearer` instead of SigV4): the model's `api_key`,
    else AWS_BEARER_TOKEN_BEDROCK, where the release's litellm reads one (1.79.3+,
    llms/bedrock/base_aws_llm.py get_request_headers); before, litellm signs with SigV4 and
    reads neither."""
    own = model.get("api_key")
    variable = at.environ.get(BEDROCK_API_KEY_VARIABLE)
    if at.rules.bedrock_api_key:
        if not own and variable:
            model["api_key"] = variable
        return
    later = "Rasa 3.13.24, 3.14.15, 3.15.0 and later"
    if own is not None:
        model.pop("api_key")
        at.warn(
            "api_key",
            "is not used: this Rasa release's litellm signs Bedrock requests with SigV4 and "
            f"reads no Bedrock API key ({later} send it as Bearer)",
        )
    elif variable:
        at.warn(
            None,
            f"{BEDROCK_API_KEY_VARIABLE} is not used: this Rasa release's litellm signs Bedrock "
            f"requests with SigV4 ({later} send it as Bearer)",
        )


def _rasa_key(model: dict[str, Any], at: ModelReading) -> None:
    """`provider: rasa` authenticates with the Rasa license (llm/rasa_llm_client.py,
    utils/licensing.py), or with its own api_key where the release prefers it."""
    own = model.get("api_key")
    if own and at.rules.api_key_over_license:
        return
    for variable in at.rules.license_variables:
        value = at.environ.get(variable)
        if value:
            if own:
                at.warn("api_key", f"is not sent: this Rasa release sends the license {variable}")
            model["api_key"] = value
            return
    if not own:
        names = " or ".join(at.rules.license_variables)
        at.problem(None, f"provider rasa sends the Rasa license as its key: set {names}")
