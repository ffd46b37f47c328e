"""The router entries of Rasa's `config.yml` pipeline, with Rasa's own keys and defaults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.rasa.releases import DEFAULT_BEHAVIOUR

# The default release's; worker.config.rasa_config fills in the selected release's template.
DEFAULT_ROUTER_TEMPLATE = DEFAULT_BEHAVIOUR.template_text


class IntentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sticky: list[str]
    non_sticky: list[str] = Field(default_factory=list)


class CalmIntentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sticky: list[str]


class IntentBasedRouterConfig(BaseModel):
    """`- name: IntentBasedRouter`; Rasa requires every one of its three intent lists."""

    model_config = ConfigDict(extra="allow")

    name: Literal["IntentBasedRouter"] = "IntentBasedRouter"
    nlu_entry: IntentEntry
    calm_entry: CalmIntentEntry

    @field_validator("nlu_entry")
    @classmethod
    def _non_sticky_given(cls, entry: IntentEntry) -> IntentEntry:
        # Rasa refuses a missing non_sticky list (validate_config); an empty list is fine.
        if "non_sticky" not in entry.model_fields_set:
            raise ValueError("nlu_entry.non_sticky is required (use [] for none)")
        return entry


class NluDescription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sticky: str = "handles everything else"
    non_sticky: str = "handles chitchat"


class CalmDescription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sticky: str


class LLMBasedRouterConfig(BaseModel):
    """`- name: LLMBasedRouter`. `prompt` names the jinja2 file read (from the key the release
    reads); `prompt_text` is the template used: that file's, or the release's default."""

    model_config = ConfigDict(extra="allow")

    name: Literal["LLMBasedRouter"] = "LLMBasedRouter"
    calm_entry: CalmDescription
    nlu_entry: NluDescription = Field(default_factory=NluDescription)
    prompt: str | None = None
    llm: dict[str, Any] | None = None
    prompt_text: str = DEFAULT_ROUTER_TEMPLATE


RouterConfig = IntentBasedRouterConfig | LLMBasedRouterConfig
