"""Deployments that echo every header they receive in their error bodies (some providers quote
the key they got): whatever secret a deployment resolved — from endpoints.yml, from the
environment (OPENAI_API_KEY, AZURE_API_KEY, HOSTED_VLLM_API_KEY, LITELLM_PROXY_API_KEY, the Rasa
license, AWS_BEARER_TOKEN_BEDROCK, the variables litellm reads itself), from netrc, from a proxy
URL, or obtained while the gateway runs (Entra ID tokens, AWS temporary credentials and their
refreshes) — never appears in the call's error, the logs or a repr.

The whole worker (logs, inbox records, `/metrics`) is tests/integration/test_llm_secrets_run.py.
"""

from __future__ import annotations

import base64
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.fake_entra import FakeEntra
from tests.fake_sts import FakeSts
from tests.loopback_app import LoopbackApp
from worker.config.endpoints import load_endpoints
from worker.fake_llm import FakeLLMServer
from worker.llm.errors import GatewayError
from worker.llm.gateway import ModelGroupGateway
from worker.llm.model_group import ModelGroup
from worker.rasa.releases import Release

RELEASE = Release(3, 15, 36)  # reads AWS_BEARER_TOKEN_BEDROCK (litellm 1.87) and `oauth:`
SECRETS = {
    "OPENAI_API_KEY": "openai-env-key-2b7f41d09c",
    "AZURE_API_KEY": "azure-env-key-5c0e93aa1f",
    "HOSTED_VLLM_API_KEY": "vllm-env-key-8d2c7e6b40",
    "LITELLM_PROXY_API_KEY": "proxy-model-env-key-61fa0c",
    "RASA_LICENSE": "rasa-license-env-value-0c4b9d",
    "AWS_BEARER_TOKEN_BEDROCK": "bedrock-api-key-env-7e3a5f",
    "AZURE_CLIENT_SECRET": "entra-client-secret-4f8e",
    "FILE_KEY": "file-key-of-endpoints-yml-91d3",
}
NETRC_PASSWORD = "netrc-password-3e9b1d"
PROXY_PASSWORD = "proxy-password-0af27c"
ANTHROPIC_ENV_KEY = "anthropic-env-key-a1b2c3d4e5"


def basic(login: str, password: str) -> str:
    return base64.b64encode(f"{login}:{password}".encode()).decode()


class Echo:
    """Answers every POST with 401 and the value of every header it got in the error's
    message."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.port = 0
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._echo)
        self._served = LoopbackApp(app)

    async def _echo(self, request: web.Request) -> web.Response:
        # Values only, without their names (litellm masks the values of headers it knows).
        said = " | ".join(request.headers.values())
        self.received.append(said)
        return web.json_response({"error": {"message": f"rejected, got {said}"}}, status=401)

    async def __aenter__(self) -> Echo:
        self.port = (await self._served.__aenter__()).port
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._served.__aexit__()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    async with Echo() as server:
        yield server


def endpoints(echo: Echo, entra: FakeEntra) -> str:
    base = f"http://127.0.0.1:{echo.port}"
    return f"""
model_groups:
  - id: echo
    models:
      - {{provider: openai, model: echo-openai, api_base: {base}/v1}}
      - {{provider: azure, deployment: echo-azure, api_base: {base}, api_version: "2024-06-01"}}
      - {{provider: self-hosted, model: echo-vllm, api_base: {base}/v1}}
      - {{provider: rasa, model: echo-rasa, api_base: {base}/v1}}
      # netrc: a machine entry for exactly this host (localhost)
      - {{provider: ollama_chat, model: echo-ollama, api_base: "http://localhost:{echo.port}"}}
      # behind HTTP_PROXY (the echo server is the proxy, with the proxy's credentials)
      - {{provider: litellm_proxy, model: echo-proxied, api_base: "http://127.0.0.2:9/v1"}}
      - {{provider: bedrock, model: echo-bedrock, api_base: {base}, aws_region_name: us-east-1}}
      - provider: azure
        deployment: echo-entra
        api_base: {base}
        api_version: "2024-10-21"
        oauth:
          type: azure_entra_id_client_secret
          client_id: worker-app
          client_secret: ${{AZURE_CLIENT_SECRET}}
          tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47
          authority_host: {entra.authority}
          disable_instance_discovery: true
          scopes: https://cognitiveservices.azure.com/.default
      - provider: openai
        model: echo-file-key
        api_base: {base}/v1
        api_key: ${{FILE_KEY}}
    router:
      num_retries: 8
"""


async def test_an_echoing_deployment_never_gets_a_secret_into_errors_logs_or_reprs(
    echo: Echo,
    tmp_path: Path,
    aws_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine localhost login worker password {NETRC_PASSWORD}\n")
    # Opaque tokens: redacted because the redactor was told them, not by their shape.
    async with FakeEntra(tmp_path, opaque=True) as entra:
        environ = {
            **SECRETS,
            "NETRC": str(netrc),
            "HTTP_PROXY": f"http://proxyuser:{PROXY_PASSWORD}@127.0.0.1:{echo.port}",
            "NO_PROXY": "127.0.0.1,localhost",
            "RASA_CA_BUNDLE": str(entra.ca_path),
        }
        path = tmp_path / "endpoints.yml"
        path.write_text(endpoints(echo, entra))
        group = load_endpoints(path, environ, release=RELEASE).model_groups["echo"]
        async with ModelGroupGateway(group, environ=environ, rng=random.Random(3)) as gateway:
            with pytest.raises(GatewayError) as raised:
                await gateway.complete("hi")
            described = repr(gateway) + repr(group) + str(group)
        tokens = list(entra.issued)
    error = str(raised.value) + repr(raised.value) + str(raised.value.last_error)
    assert raised.value.attempts == 9 == len(echo.received)
    sent = [
        *(v for k, v in SECRETS.items() if k != "AZURE_CLIENT_SECRET"),  # that one to Entra ID
        basic("worker", NETRC_PASSWORD),  # netrc's and the proxy's: as Basic credentials
        basic("proxyuser", PROXY_PASSWORD),
        *tokens,
    ]
    received = " ".join(echo.received)
    for secret in sent:
        assert secret in received, secret  # every one reached a deployment, and came back
    assert "***" in caplog.text and "***" in error
    said = caplog.text + error + described
    for secret in [*sent, SECRETS["AZURE_CLIENT_SECRET"], NETRC_PASSWORD, PROXY_PASSWORD]:
        assert secret not in said, secret


async def test_aws_temporary_credentials_and_their_refreshes_are_redacted(
    echo: Echo,
    fake: FakeLLMServer,
    aws_environment: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeSts(fake, lifetime=11 * 60) as sts:  # due again at every call
        group = ModelGroup.model_validate(
            {
                "id": "g",
                "models": [
                    {
                        "provider": "bedrock",
                        "model": "echo-bedrock-sigv4",
                        "api_base": f"http://127.0.0.1:{echo.port}",
                        "aws_region_name": "us-east-1",
                        "aws_role_name": "arn:aws:iam::123456789012:role/r",
                        "aws_session_name": "worker",
                        "aws_web_identity_token": "OIDC_TOKEN",
                        "aws_sts_endpoint": sts.url,
                    }
                ],
            }
        )
        environ = {"OIDC_TOKEN": "web-identity-token-5d1c0e"}
        errors = []
        async with ModelGroupGateway(group, environ=environ, rng=random.Random(0)) as gateway:
            for _ in range(2):
                with pytest.raises(GatewayError) as raised:
                    await gateway.complete("hi")
                errors.append(str(raised.value))
            described = repr(gateway)
    assert len(sts.issued) >= 2  # refreshed between the calls
    secrets = [s for i in sts.issued for s in (i.secret_key, i.session_token)]
    received = " ".join(echo.received)
    assert all(issued.session_token in received for issued in sts.issued[-2:])
    said = caplog.text + " ".join(errors) + described
    assert "***" in said
    for secret in [*secrets, "web-identity-token-5d1c0e"]:
        assert secret not in said, secret


async def test_keys_litellm_reads_from_the_environment_are_redacted(
    echo: Echo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_ENV_KEY)  # litellm reads os.environ
    group = ModelGroup.model_validate(
        {
            "id": "g",
            "models": [
                {
                    "provider": "anthropic",
                    "model": "claude-3-5-haiku",
                    "api_base": f"http://127.0.0.1:{echo.port}",
                    "max_tokens": 1,
                }
            ],
        }
    )
    async with ModelGroupGateway(group, rng=random.Random(0)) as gateway:
        with pytest.raises(GatewayError) as raised:
            await gateway.complete("hi")
    assert ANTHROPIC_ENV_KEY in " ".join(echo.received)
    assert "***" in str(raised.value)
    assert ANTHROPIC_ENV_KEY not in caplog.text + str(raised.value)
