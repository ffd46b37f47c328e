"""Rendering the LLMBasedRouter prompt. The user message is only ever a template variable."""

from __future__ import annotations

from jinja2.sandbox import ImmutableSandboxedEnvironment

from worker.rasa.releases import RELEASES
from worker.routing.router_config import LLMBasedRouterConfig

_ENVIRONMENT = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=False)
# Rasa's default templates use `{{ user_message }}` once, unfiltered.
_BUILTIN_TEMPLATES = frozenset(row.template_text for row in RELEASES)


class RouterPrompt:
    """A compiled router prompt; user templates are rendered in jinja2's sandbox."""

    def __init__(self, config: LLMBasedRouterConfig) -> None:
        self._template = _ENVIRONMENT.from_string(config.prompt_text)
        self._entries = {
            "calm_entry_sticky": config.calm_entry.sticky,
            "nlu_entry_sticky": config.nlu_entry.sticky,
            "nlu_entry_non_sticky": config.nlu_entry.non_sticky,
        }
        # For Rasa's own templates, rendering once around a marker gives the text on either side
        # of the message, and a prompt is then a concatenation (jinja was a tenth of the LLM
        # router's CPU per message).
        self._around: tuple[str, str] | None = None
        if config.prompt_text in _BUILTIN_TEMPLATES:
            marker = "\x00user_message\x00"
            head, tail = self._template.render(user_message=marker, **self._entries).split(marker)
            self._around = (head, tail)

    def render(self, user_message: str) -> str:
        if self._around is not None:
            return self._around[0] + user_message + self._around[1]
        return self._template.render(user_message=user_message, **self._entries)
