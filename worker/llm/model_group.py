"""`model_groups` of endpoints.yml (Rasa 3.11+): a group of deployments and how to balance them.

These models validate values *after* `${VAR}` expansion; the file-level rules (which keys may use
`${VAR}`, secrets that must be `${VAR}`, unset variables) live in `worker.config.endpoints`.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Provider = Literal["openai", "azure", "self-hosted", "ollama", "litellm_proxy", "rasa", "bedrock"]
RoutingStrategy = Literal[
    "simple-shuffle",
    "least-busy",
    "latency-based-routing",
    "usage-based-routing",
    "cost-based-routing",
]

SECRET_KEYS = ("api_key", "aws_access_key_id", "aws_secret_access_key", "aws_session_token")
EXPANDABLE_KEYS = (
    "api_base",
    "api_version",
    "deployment",
    "api_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_region_name",
)


class Deployment(BaseModel):
    """One model deployment of a group. Unknown keys are kept and passed to the request body."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    provider: Provider
    model: str | None = None
    deployment: str | None = None
    api_base: str | None = None
    api_version: str | None = None
    api_key: SecretStr | None = None
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    aws_region_name: str | None = None
    use_chat_completions_endpoint: bool = True
    timeout: float | None = Field(default=None, gt=0)
    weight: float | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # A `${NAME}` left in place is an unset variable, which endpoints.yml's loading
        # reports itself: not a second problem here.
        if value is not None and "${" not in value:
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
        return self

    @property
    def name(self) -> str:
        """How the deployment is named in routing blocks, logs and metrics (never a secret)."""
        return self.deployment or self.model or self.provider

    def extra_body(self) -> dict[str, Any]:
        """Keys this model does not know: passed through to the provider's request body."""
        return dict(self.model_extra or {})


class RouterSettings(BaseModel):
    """A group's `router:` block, with litellm Router's keys and defaults."""

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    routing_strategy: RoutingStrategy = "simple-shuffle"
    num_retries: int = Field(default=2, ge=0)
    cooldown_time: float = Field(default=5.0, ge=0)
    allowed_fails: int = Field(default=3, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    lowest_latency_buffer: float = Field(default=0.0, ge=0)
    redis_url: SecretStr | None = None  # may carry a password: redis://:pw@host
    redis_host: str | None = None
    redis_port: int = 6379
    redis_password: SecretStr | None = None
    routing_strategy_args: dict[str, Any] = Field(default_factory=dict)


class ModelGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    id: str = Field(min_length=1)
    models: list[Deployment] = Field(min_length=1)
    router: RouterSettings | None = None

    @model_validator(mode="after")
    def _router_for_several(self) -> ModelGroup:
        if len(self.models) > 1 and self.router is None:
            raise ValueError(f"group of {len(self.models)} models needs a `router` block")
        return self

    @property
    def settings(self) -> RouterSettings:
        return self.router or RouterSettings()
