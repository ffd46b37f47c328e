"""AWS Bedrock's Converse API, signed with SigV4 by botocore, or with a Bedrock API key.

Authentication, as litellm's Bedrock client does it (llms/bedrock/base_aws_llm.py):
- an `api_key` (worker.config.model_config puts AWS_BEARER_TOKEN_BEDROCK there in the releases
  whose litellm reads it, 1.79.3+) is a Bedrock API key: `Authorization: Bearer`, no SigV4;
- else SigV4 with the credentials the deployment's `aws_*` keys choose, botocore's default
  chain when they choose none (worker.llm.providers.aws_credentials), signed with the cached
  set and refreshed before they expire (never on the event loop).
Region: `aws_region_name`, else AWS_REGION_NAME, AWS_REGION, AWS_DEFAULT_REGION (litellm's
_get_aws_region_name). Base URL: `aws_bedrock_runtime_endpoint`, else
AWS_BEDROCK_RUNTIME_ENDPOINT, else `api_base` (litellm's get_runtime_endpoint sends there:
1.69.3 reads the variable before the key), else the region's endpoint. OpenAI-style sampling
keys go into `inferenceConfig`; other unknown keys of the deployment are model specific and
travel in `additionalModelRequestFields` (Converse rejects unknown top-level keys); an `aws_*`
key that litellm does not have is refused instead (worker.llm.providers.aws_credentials.AwsAuth).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from worker.llm.errors import AttemptError, ErrorKind
from worker.llm.model_group import Deployment
from worker.llm.providers.aws_credentials import (
    AWS_KEYS,
    AwsAuth,
    AwsCredentials,
    CredentialsUnavailable,
)
from worker.llm.providers.base import (
    BuildContext,
    HttpProvider,
    HttpRequest,
    ProviderAnswer,
    register,
)

# Converse's own top-level request fields.
_CONVERSE_FIELDS = frozenset(
    {
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "promptVariables",
        "requestMetadata",
        "performanceConfig",
    }
)
_INFERENCE = {
    "max_tokens": "maxTokens",
    "max_completion_tokens": "maxTokens",
    "temperature": "temperature",
    "top_p": "topP",
    "stop": "stopSequences",
}


@register
class Bedrock(HttpProvider):
    names = ("bedrock",)
    prefixes = ("bedrock/converse/", "bedrock/", "converse/")
    format_name = "bedrock-converse"
    own_params: ClassVar[frozenset[str]] = frozenset(AWS_KEYS)

    def __init__(
        self, deployment: Deployment, params: Mapping[str, Any], context: BuildContext
    ) -> None:
        super().__init__(deployment, params, context)
        env = context.environ
        region = (
            deployment.aws_region_name
            or env.get("AWS_REGION_NAME")
            or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION")
        )
        if not region:
            raise ValueError(
                f"bedrock deployment {self.name!r} needs `aws_region_name` "
                "(or AWS_REGION_NAME / AWS_REGION / AWS_DEFAULT_REGION)"
            )
        secrets = {
            key: value.get_secret_value() if value is not None else None
            for key, value in (
                ("aws_access_key_id", deployment.aws_access_key_id),
                ("aws_secret_access_key", deployment.aws_secret_access_key),
                ("aws_session_token", deployment.aws_session_token),
            )
        }
        try:
            auth = AwsAuth.read(secrets, deployment.model_extra or {}, env)
        except ValueError as exc:
            raise ValueError(f"bedrock deployment {self.name!r}: {exc}") from None
        base = (
            auth.runtime_endpoint
            or env.get("AWS_BEDROCK_RUNTIME_ENDPOINT")
            or deployment.api_base
            or f"https://bedrock-runtime.{region}.amazonaws.com"
        )
        # The model id (ARNs, `…-v1:0`) is one path segment; botocore signs the encoded path.
        self.url = f"{base.rstrip('/')}/model/{quote(self.model or '', safe='')}/converse"
        api_key = deployment.api_key
        if api_key is not None:
            self.headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"
            return
        self.signer = SigV4Signer(
            AwsCredentials(
                name=self.name,
                source=auth.source,
                resolve=auth.resolver(region, env, context.redactor.learn),
                redactor=context.redactor,
                static=auth.static(),
            ),
            region,
        )

    def body(self, prompt: str) -> dict[str, Any]:
        params = dict(self.params)
        params.pop("logit_bias", None)
        inference: dict[str, Any] = {}
        for name, wire in _INFERENCE.items():
            if name in params:
                inference[wire] = params.pop(name)
        body: dict[str, Any] = {"messages": [{"role": "user", "content": [{"text": prompt}]}]}
        additional: dict[str, Any] = {}
        for key, value in params.items():
            if key in _CONVERSE_FIELDS:
                body[key] = value
            else:
                additional[key] = value
        if isinstance(body.get("inferenceConfig"), Mapping):
            inference.update(body["inferenceConfig"])
        if inference:
            body["inferenceConfig"] = inference
        if additional:
            given = body.get("additionalModelRequestFields")
            body["additionalModelRequestFields"] = {
                **additional,
                **(given if isinstance(given, Mapping) else {}),
            }
        return body

    def read_answer(self, payload: Any) -> ProviderAnswer:
        blocks = payload["output"]["message"]["content"]
        text = "".join(b["text"] for b in blocks if isinstance(b, dict) and "text" in b)
        usage = payload.get("usage") or {}
        return ProviderAnswer.read(text, usage.get("inputTokens"), usage.get("outputTokens"))


class SigV4Signer:
    """Signs each request with the deployment's current credentials (worker.llm.providers.
    aws_credentials.AwsCredentials): the frozen set it holds, or, when they must be obtained
    first, after the one resolution or refresh in flight (bounded by the attempt's timeout)."""

    def __init__(self, credentials: AwsCredentials, region: str) -> None:
        self.credentials = credentials
        self._region = region
        self._frozen: ReadOnlyCredentials | None = None
        self._auth: SigV4Auth | None = None

    def __repr__(self) -> str:
        return f"SigV4Signer({self.credentials!r}, {self._region})"

    async def sign(self, request: HttpRequest, timeout: float) -> HttpRequest:
        frozen = self.credentials.ready()
        if frozen is None:
            try:
                async with asyncio.timeout(timeout):
                    frozen = await self.credentials.obtain()
            except CredentialsUnavailable as exc:
                raise AttemptError(str(exc), kind=ErrorKind.AUTHENTICATION) from None
            except TimeoutError:
                raise AttemptError(
                    f"AWS credentials not obtained within {timeout:g} s",
                    kind=ErrorKind.TIMEOUT,
                    elapsed=timeout,
                    timed_out=True,
                ) from None
        auth = self._auth
        if frozen is not self._frozen or auth is None:
            auth = self._auth = SigV4Auth(frozen, "bedrock", self._region)
            self._frozen = frozen
        signed = AWSRequest(
            method="POST", url=request.url, data=request.body, headers=dict(request.headers)
        )
        auth.add_auth(signed)
        return HttpRequest(request.url, dict(signed.headers.items()), request.body)
