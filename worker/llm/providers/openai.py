"""OpenAI's chat and text completions, and the providers that speak them: `openai`, `azure`,
`self-hosted` (vLLM and the like), `litellm_proxy` and `rasa`.

Where a deployment does not name its base URL or key, each reads the environment variables Rasa's
client for that provider reads, in its order (rasa/shared/providers/llm/*_llm_client.py for a
group without `router:`; litellm's, litellm/main.py and llms/azure/, when Rasa hands the group to
litellm's Router):

    openai        base: OPENAI_BASE_URL, OPENAI_API_BASE (routed) or OPENAI_API_BASE,
                  OPENAI_BASE_URL (standalone); key: OPENAI_API_KEY
    azure         base: AZURE_API_BASE (standalone: then OPENAI_API_BASE, deprecated);
                  version: AZURE_API_VERSION (standalone: then OPENAI_API_VERSION);
                  key: AZURE_OPENAI_API_KEY, AZURE_API_KEY, else the token AZURE_AD_TOKEN
                  (routed) or AZURE_API_KEY, OPENAI_API_KEY (standalone, deprecated)
    self-hosted   key: HOSTED_VLLM_API_KEY, else none (Rasa sends a placeholder, "dummy api
                  key", only because the openai SDK needs some key: no server wants it, and
                  without it a netrc entry for the host can authenticate)
    litellm_proxy base: LITELLM_PROXY_API_BASE; key: LITELLM_PROXY_API_KEY
    rasa          the key is the Rasa license (worker.config.model_config puts it in api_key)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

from worker.llm.model_group import Deployment
from worker.llm.providers.azure_oauth import EntraToken, azure_identity_missing
from worker.llm.providers.base import (
    BuildContext,
    HttpProvider,
    ProviderAnswer,
    register,
)
from worker.llm.tls import TlsTrust

log = logging.getLogger(__name__)

OPENAI_BASE = "https://api.openai.com/v1"


def _first(environ: Mapping[str, str], *names: str) -> tuple[str | None, str | None]:
    """(value, variable) of the first of `names` that is set and not empty."""
    for name in names:
        value = environ.get(name)
        if value:
            return value, name
    return None, None


class OpenAICompatible(HttpProvider):
    """A chat completion (`/chat/completions`), or a text completion (`/completions`) where
    the deployment's `use_chat_completions_endpoint` is false."""

    format_name = "openai-chat"
    model_in_body: ClassVar[bool] = True

    def __init__(
        self, deployment: Deployment, params: Mapping[str, Any], context: BuildContext
    ) -> None:
        super().__init__(deployment, params, context)
        self.chat = deployment.use_chat_completions_endpoint
        self.format_name = "openai-chat" if self.chat else "openai-text"
        self.url = self.endpoint_url(self.base_url(context), context)
        key = self.api_key(context)
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self._api_key = key

    @property
    def secrets(self) -> list[str]:
        return [*super().secrets, *([self._api_key] if self._api_key else [])]

    def base_url(self, context: BuildContext) -> str:
        base = self.deployment.api_base
        if not base:
            raise ValueError(
                f"{self.deployment.provider} deployment {self.name!r} needs `api_base`"
            )
        return base

    def endpoint_url(self, base: str, context: BuildContext) -> str:
        return f"{base.rstrip('/')}/{'chat/completions' if self.chat else 'completions'}"

    def api_key(self, context: BuildContext) -> str | None:
        key = self.deployment.api_key
        return key.get_secret_value() if key is not None else None

    def body(self, prompt: str) -> dict[str, Any]:
        if self.chat:
            body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
        else:
            body = {"prompt": prompt}
        if self.model_in_body:
            body["model"] = self.model
        return {**body, **self.params}

    def read_answer(self, payload: Any) -> ProviderAnswer:
        choice = payload["choices"][0]
        text = choice["message"].get("content") if self.chat else choice["text"]
        usage = payload.get("usage") or {}
        return ProviderAnswer.read(text, usage.get("prompt_tokens"), usage.get("completion_tokens"))


@register
class OpenAI(OpenAICompatible):
    names = ("openai",)
    prefixes = ("openai/",)

    def base_url(self, context: BuildContext) -> str:
        if self.deployment.api_base:
            return self.deployment.api_base
        order = (
            ("OPENAI_BASE_URL", "OPENAI_API_BASE")
            if context.routed
            else ("OPENAI_API_BASE", "OPENAI_BASE_URL")
        )
        base, _ = _first(context.environ, *order)
        return base or OPENAI_BASE

    def api_key(self, context: BuildContext) -> str | None:
        key = super().api_key(context) or context.environ.get("OPENAI_API_KEY")
        if not key:
            raise ValueError(
                f"openai deployment {self.name!r} needs `api_key` or the environment "
                "variable OPENAI_API_KEY (not set)"
            )
        return key


@register
class Azure(OpenAICompatible):
    """`/openai/deployments/{deployment}/…?api-version=`; the key in `api-key`, or an Entra ID
    token as Bearer (`oauth:`, worker.llm.providers.azure_oauth, or AZURE_AD_TOKEN)."""

    names = ("azure",)
    prefixes = ("azure/",)
    model_in_body = False
    _bearer: str | None = None  # AZURE_AD_TOKEN, where the environment gives no key

    def base_url(self, context: BuildContext) -> str:
        variables = ("AZURE_API_BASE",) if context.routed else ("AZURE_API_BASE", "OPENAI_API_BASE")
        base, variable = _first(context.environ, *variables)
        base = self.deployment.api_base or base
        if not base:
            raise ValueError(
                f"azure deployment {self.name!r} needs `api_base` or the environment variable "
                "AZURE_API_BASE (not set)"
            )
        if variable == "OPENAI_API_BASE" and not self.deployment.api_base:
            log.warning(
                "azure deployment %r: its base URL comes from OPENAI_API_BASE, which Rasa "
                "deprecates for Azure; set AZURE_API_BASE",
                self.name,
            )
        return base

    def endpoint_url(self, base: str, context: BuildContext) -> str:
        variables = (
            ("AZURE_API_VERSION",)
            if context.routed
            else ("AZURE_API_VERSION", "OPENAI_API_VERSION")
        )
        version = self.deployment.api_version or _first(context.environ, *variables)[0]
        if not version:
            raise ValueError(
                f"azure deployment {self.name!r} needs `api_version` or the environment "
                "variable AZURE_API_VERSION (not set)"
            )
        path = "chat/completions" if self.chat else "completions"
        name = quote(self.deployment.deployment or "", safe="")
        query = urlencode({"api-version": version})
        return f"{base.rstrip('/')}/openai/deployments/{name}/{path}?{query}"

    def api_key(self, context: BuildContext) -> str | None:
        if self.deployment.oauth is not None:
            return None  # a bearer token per call (the gateway asks the token source)
        own = super().api_key(context)
        environ = context.environ
        if own:
            key: str | None = own
        elif context.routed:
            key, _ = _first(environ, "AZURE_OPENAI_API_KEY", "AZURE_API_KEY")
            token = None if key else environ.get("AZURE_AD_TOKEN")
            if token:
                self._bearer = token
                return None
        else:
            key, variable = _first(environ, "AZURE_API_KEY", "OPENAI_API_KEY")
            if variable == "OPENAI_API_KEY":
                log.warning(
                    "azure deployment %r: its key comes from OPENAI_API_KEY, which Rasa "
                    "deprecates for Azure; set AZURE_API_KEY",
                    self.name,
                )
        if not key:
            raise ValueError(
                f"azure deployment {self.name!r} needs `api_key`, `oauth`, or the environment "
                "variable AZURE_API_KEY (not set)"
            )
        return key

    def __init__(
        self, deployment: Deployment, params: Mapping[str, Any], context: BuildContext
    ) -> None:
        super().__init__(deployment, params, context)
        # The openai SDK's AzureOpenAI sends a key as `api-key`, a token as Bearer, never both.
        key = self.headers.pop("Authorization", None)
        if key is not None:
            self.headers["api-key"] = key.removeprefix("Bearer ")
        if self._bearer is not None:
            self.headers["Authorization"] = f"Bearer {self._bearer}"
        if deployment.oauth is not None:
            missing = azure_identity_missing()
            if missing is not None:
                raise ValueError(f"azure deployment {self.name!r}: {missing}")
            if context.check_only:
                return
            trust = TlsTrust.from_environment(context.environ).ca_bundle
            self.token = EntraToken(
                deployment.oauth,
                name=self.name,
                connection_verify=trust[1] if trust is not None else None,
                redactor=context.redactor,
            )

    async def close(self) -> None:
        if self.token is not None:
            await self.token.close()

    @property
    def secrets(self) -> list[str]:
        return [*super().secrets, *([self._bearer] if self._bearer else [])]


@register
class SelfHosted(OpenAICompatible):
    """An OpenAI-compatible server (litellm's `hosted_vllm`)."""

    names = ("self-hosted",)
    prefixes = ("hosted_vllm/",)

    def api_key(self, context: BuildContext) -> str | None:
        return super().api_key(context) or context.environ.get("HOSTED_VLLM_API_KEY")


@register
class LitellmProxy(OpenAICompatible):
    names = ("litellm_proxy",)
    prefixes = ("litellm_proxy/",)

    def base_url(self, context: BuildContext) -> str:
        base = self.deployment.api_base or context.environ.get("LITELLM_PROXY_API_BASE")
        if not base:
            raise ValueError(
                f"litellm_proxy deployment {self.name!r} needs `api_base` or the environment "
                "variable LITELLM_PROXY_API_BASE (not set)"
            )
        return base

    def api_key(self, context: BuildContext) -> str | None:
        return super().api_key(context) or context.environ.get("LITELLM_PROXY_API_KEY")


@register
class RasaHosted(OpenAICompatible):
    """Rasa's hosted models: OpenAI-compatible at the required `api_base` (litellm prefix
    `openai`), authenticated with the Rasa license."""

    names = ("rasa",)
    prefixes = ("openai/",)

    def api_key(self, context: BuildContext) -> str | None:
        key = super().api_key(context)
        if not key:
            raise ValueError(f"rasa deployment {self.name!r} needs the Rasa license as its key")
        return key
