"""A model group, its deployments and how to balance them: the gateway's view of `model_groups`.

These models hold values as the gateway uses them, after worker.config.model_groups has read
the file as the selected Rasa release reads it (aliases resolved, provider inferred, `${VAR}`
expanded, the `router:` block checked against litellm's Router and its policies resolved).
Tests and benchmarks build them directly.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from worker.llm.errors import ErrorKind

RoutingStrategy = Literal[
    "simple-shuffle",
    "least-busy",
    "latency-based-routing",
    "usage-based-routing",
    "cost-based-routing",
]
OAuthType = Literal[
    "azure_entra_id_default", "azure_entra_id_client_secret", "azure_entra_id_client_certificate"
]

SECRET_KEYS = ("api_key", "aws_access_key_id", "aws_secret_access_key", "aws_session_token")

# litellm's own parameters (litellm/types/utils.py all_litellm_params, and the Bedrock
# credential keys of llms/bedrock/base_aws_llm.py): litellm consumes them, they never reach a
# request body. The gateway implements the ones Deployment names as fields; the others have no
# effect here (worker.config.model_groups warns about those that have one in Rasa).
LITELLM_PARAMS = frozenset(
    {
        "metadata", "litellm_metadata", "tags", "caching", "mock_response", "mock_timeout",
        "custom_llm_provider", "id", "headers", "extra_headers", "num_retries", "max_retries",
        "request_timeout", "stream_timeout", "rpm", "tpm", "max_parallel_requests",
        "input_cost_per_token", "output_cost_per_token", "input_cost_per_second",
        "output_cost_per_second", "hf_model_name", "model_info", "base_model", "ttl",
        "supports_system_message", "region_name", "cooldown_time", "tenant_id", "client_id",
        "client_secret", "azure_username", "azure_password", "azure_ad_token",
        "azure_ad_token_provider", "weight", "max_budget", "budget_duration",
        "litellm_credential_name", "use_litellm_proxy", "organization", "timeout",
        "aws_profile_name", "aws_role_name", "aws_session_name", "aws_web_identity_token",
        "aws_sts_endpoint", "aws_bedrock_runtime_endpoint", "aws_external_id",
    }
)  # fmt: skip
# Of those, the ones with an effect in Rasa that the gateway does not reproduce.
UNSUPPORTED_LITELLM_PARAMS = frozenset(
    {
        "max_parallel_requests", "input_cost_per_second", "output_cost_per_second", "model_info",
        "tags", "metadata", "caching", "mock_response", "mock_timeout", "region_name",
        "aws_profile_name", "aws_role_name", "aws_session_name", "aws_web_identity_token",
        "aws_sts_endpoint", "aws_bedrock_runtime_endpoint", "aws_external_id", "tenant_id",
        "client_id", "client_secret", "azure_username", "azure_password", "azure_ad_token",
        "max_budget", "budget_duration", "litellm_credential_name", "use_litellm_proxy",
    }
)  # fmt: skip


class AzureOAuth(BaseModel):
    """`oauth:` of an Azure deployment: Entra ID credentials (azure-identity) for a bearer token,
    as Rasa 3.12+ reads it (shared/providers/_configs/azure_entra_id_config.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    type: OAuthType
    scopes: tuple[str, ...] = Field(min_length=1)
    client_id: str | None = Field(default=None, min_length=1)
    client_secret: SecretStr | None = None
    tenant_id: str | None = Field(default=None, min_length=1)
    certificate_path: str | None = Field(default=None, min_length=1)
    certificate_password: SecretStr | None = None
    send_certificate_chain: bool = False
    authority_host: str | None = None
    disable_instance_discovery: bool = False

    @field_validator("scopes", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value  # Rasa: a str or a list

    @model_validator(mode="after")
    def _fields_of_type(self) -> AzureOAuth:
        needed = {
            "azure_entra_id_client_secret": ("client_id", "client_secret", "tenant_id"),
            "azure_entra_id_client_certificate": ("client_id", "tenant_id", "certificate_path"),
        }.get(self.type, ())
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"oauth type {self.type} needs {', '.join(missing)}")
        return self

    def secrets(self) -> list[str]:
        return [
            s.get_secret_value()
            for s in (self.client_secret, self.certificate_password)
            if s is not None
        ]


class Deployment(BaseModel):
    """One model deployment of a group. Unknown keys are request-body parameters (`extra_body`),
    except litellm's own parameters (LITELLM_PARAMS), which never reach a body."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    provider: str = Field(min_length=1)
    model: str | None = None
    deployment: str | None = None
    api_base: str | None = None
    api_version: str | None = None
    api_key: SecretStr | None = None
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    aws_region_name: str | None = None
    oauth: AzureOAuth | None = None
    use_chat_completions_endpoint: bool = True
    timeout: float | None = Field(default=None, gt=0)
    weight: float | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)
    # litellm's per-deployment overrides of the router's settings
    num_retries: int | None = Field(default=None, ge=0)
    cooldown_time: float | None = Field(default=None, ge=0)
    # HTTP headers litellm adds (`extra_headers` of the openai SDK, litellm's `headers`)
    extra_headers: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    organization: str | None = None  # OpenAI-Organization

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @model_validator(mode="after")
    def _names_a_model(self) -> Deployment:
        if self.provider == "azure" and not self.deployment:
            raise ValueError("provider azure needs `deployment`")
        if self.provider != "azure" and not self.model:
            raise ValueError(f"provider {self.provider} needs `model`")
        if self.oauth is not None and self.api_key is not None:
            raise ValueError("give either api_key or oauth, not both")
        return self

    @property
    def name(self) -> str:
        """How the deployment is named in routing blocks, logs and metrics (never a secret)."""
        return self.deployment or self.model or self.provider

    def extra_body(self) -> dict[str, Any]:
        """Keys this model does not know: passed through to the provider's request body."""
        extra = self.model_extra or {}
        body = {k: v for k, v in extra.items() if k not in LITELLM_PARAMS and k != "extra_body"}
        given = extra.get("extra_body")
        if isinstance(given, dict):  # the openai SDK's `extra_body`, merged into the JSON
            body.update(given)
        return body

    def http_headers(self) -> dict[str, str]:
        headers = {**(self.headers or {}), **(self.extra_headers or {})}
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        return headers

    def secrets(self) -> list[str]:
        values = [
            secret.get_secret_value()
            for secret in (getattr(self, key) for key in SECRET_KEYS)
            if isinstance(secret, SecretStr)
        ]
        if self.oauth is not None:
            values.extend(self.oauth.secrets())
        return values


DEFAULT_NUM_RETRIES = 2  # litellm: openai.DEFAULT_MAX_RETRIES
DEFAULT_COOLDOWN_TIME = 5.0  # litellm: DEFAULT_COOLDOWN_TIME_SECONDS; `cooldown_time: 0` too
DEFAULT_ALLOWED_FAILS = 3  # litellm.allowed_fails
DEFAULT_MAX_FALLBACKS = 5  # litellm: ROUTER_MAX_FALLBACKS


class RouterSettings(BaseModel):
    """A group's `router:` block as the gateway applies it (litellm Router's settings, with the
    policies resolved for the selected release's litellm)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    routing_strategy: RoutingStrategy = "simple-shuffle"
    routing_strategy_args: dict[str, Any] = Field(default_factory=dict)
    num_retries: int = Field(default=DEFAULT_NUM_RETRIES, ge=0)
    cooldown_time: float = Field(default=DEFAULT_COOLDOWN_TIME, gt=0)
    allowed_fails: int = Field(default=DEFAULT_ALLOWED_FAILS, ge=0)
    disable_cooldowns: bool = False
    retry_after: float = Field(default=0.0, ge=0)  # the least backoff before a retry
    timeout: float | None = Field(default=None, gt=0)  # per attempt, below a deployment's own
    # Retries after a first failure of a kind (RetryPolicy), else `default_retries`, else
    # num_retries; allowed fails of a kind (AllowedFailsPolicy), else allowed_fails.
    retry_policy: dict[ErrorKind, int] = Field(default_factory=dict)
    default_retries: int | None = Field(default=None, ge=0)
    allowed_fails_policy: dict[ErrorKind, int] = Field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()  # other groups, in order, once this one has failed
    max_fallbacks: int = Field(default=DEFAULT_MAX_FALLBACKS, ge=0)
    redis_url: SecretStr | None = None  # may carry a password: redis://:pw@host
    redis_host: str | None = None
    redis_port: int = 6379
    redis_password: SecretStr | None = None

    @field_validator("cooldown_time", mode="before")
    @classmethod
    def _zero_is_default(cls, value: object) -> object:
        # Router.__init__: `cooldown_time or DEFAULT_COOLDOWN_TIME_SECONDS` (every litellm read).
        return DEFAULT_COOLDOWN_TIME if value in (0, None) else value

    def retries_after(self, kind: ErrorKind) -> int:
        """How many retries follow a first failure of `kind` (litellm: after the first
        failure, the policy's number for its class replaces num_retries)."""
        given = self.retry_policy.get(kind)
        if given is not None:
            return given
        return self.default_retries if self.default_retries is not None else self.num_retries

    def allowed_fails_for(self, kind: ErrorKind) -> int:
        given = self.allowed_fails_policy.get(kind)
        return given if given is not None else self.allowed_fails


class ModelGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    id: str = Field(min_length=1)
    models: list[Deployment] = Field(min_length=1)
    router: RouterSettings | None = None
    # The group's other keys: Rasa passes them to every call (over each deployment's own).
    call_params: dict[str, Any] = Field(default_factory=dict)
    # The bound of a whole call of the group, retries included (Rasa 3.12.37+ wraps each call in
    # asyncio.wait_for); None: only each attempt's timeout.
    call_timeout: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _router_for_several(self) -> ModelGroup:
        if len(self.models) > 1 and self.router is None:
            raise ValueError(f"group of {len(self.models)} models needs a `router` block")
        return self

    @property
    def settings(self) -> RouterSettings:
        return self.router or _NO_ROUTER

    def secrets(self) -> list[str]:
        values = [secret for d in self.models for secret in d.secrets()]
        settings = self.settings
        for secret in (settings.redis_password, settings.redis_url):
            if secret is not None:
                values.append(secret.get_secret_value())
        return values


_NO_ROUTER = RouterSettings()
