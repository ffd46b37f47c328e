"""AWS Bedrock's Converse API, signed with SigV4 by botocore.

Credentials: the deployment's `aws_access_key_id`/`aws_secret_access_key`/`aws_session_token`,
else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN. Region: `aws_region_name`, else
AWS_REGION_NAME, AWS_REGION, AWS_DEFAULT_REGION (litellm's _get_aws_region_name). OpenAI-style
sampling keys go into `inferenceConfig`; other unknown keys of the deployment are model specific
and travel in `additionalModelRequestFields` (Converse rejects unknown top-level keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from worker.llm.model_group import Deployment
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
        self._region = region
        base = deployment.api_base or f"https://bedrock-runtime.{region}.amazonaws.com"
        # The model id (ARNs, `…-v1:0`) is one path segment; botocore signs the encoded path.
        self.url = f"{base.rstrip('/')}/model/{quote(self.model or '', safe='')}/converse"
        self._credentials = _credentials(deployment, env, self.name)

    @property
    def secrets(self) -> list[str]:
        own = [self._credentials.secret_key]
        if self._credentials.token:
            own.append(self._credentials.token)
        return [*super().secrets, *own]

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

    def request(self, prompt: str) -> HttpRequest:
        data = self.encoded_body(prompt)
        signed = AWSRequest(method="POST", url=self.url, data=data, headers=dict(self.headers))
        SigV4Auth(self._credentials, "bedrock", self._region).add_auth(signed)
        return HttpRequest(self.url, dict(signed.headers.items()), data)

    def read_answer(self, payload: Any) -> ProviderAnswer:
        blocks = payload["output"]["message"]["content"]
        text = "".join(b["text"] for b in blocks if isinstance(b, dict) and "text" in b)
        usage = payload.get("usage") or {}
        return ProviderAnswer.read(text, usage.get("inputTokens"), usage.get("outputTokens"))


def _credentials(deployment: Deployment, env: Mapping[str, str], name: str) -> Credentials:
    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    access = secret(deployment.aws_access_key_id)
    key = secret(deployment.aws_secret_access_key)
    token = secret(deployment.aws_session_token)
    if access is None and key is None:
        access = env.get("AWS_ACCESS_KEY_ID")
        key = env.get("AWS_SECRET_ACCESS_KEY")
        token = token or env.get("AWS_SESSION_TOKEN")
    if not access or not key:
        raise ValueError(
            f"bedrock deployment {name!r} needs aws_access_key_id and aws_secret_access_key "
            "(or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        )
    return Credentials(access, key, token)
