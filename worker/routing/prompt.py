"""Rendering the LLMBasedRouter prompt. The user message is only ever a template variable."""

from __future__ import annotations

from jinja2.sandbox import ImmutableSandboxedEnvironment

from worker.routing.router_config import LLMBasedRouterConfig

_ENVIRONMENT = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


class RouterPrompt:
    """A compiled router prompt; user templates are rendered in jinja2's sandbox."""

    def __init__(self, config: LLMBasedRouterConfig) -> None:
        self._template = _ENVIRONMENT.from_string(config.prompt_text)
        self._entries = {
            "calm_entry_sticky": config.calm_entry.sticky,
            "nlu_entry_sticky": config.nlu_entry.sticky,
            "nlu_entry_non_sticky": config.nlu_entry.non_sticky,
        }

    def render(self, user_message: str) -> str:
        return self._template.render(user_message=user_message, **self._entries)
