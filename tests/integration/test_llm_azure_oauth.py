"""Azure Entra ID (`oauth:` of an azure deployment) through azure-identity, against a loopback
token endpoint over HTTPS: the schema of Rasa 3.12.0's shared/providers/_configs/
azure_entra_id_config.py, a bearer token on every call, never the block in the body, the token
cached and refreshed, no secret in logs or errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from tests.fake_entra import FakeEntra
from worker.config.endpoints import load_endpoints, read_endpoints
from worker.fake_llm import FakeLLMServer
from worker.llm.errors import AttemptsExhausted
from worker.llm.gateway import ModelGroupGateway
from worker.llm.model_group import AzureOAuth, ModelGroup
from worker.llm.providers.azure_oauth import EntraToken, TokenUnavailable
from worker.llm.redaction import Redactor
from worker.rasa.releases import Release

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_SECRET = "entra-client-secret-9d1f"
SCOPE = "https://cognitiveservices.azure.com/.default"


@pytest.fixture
async def entra(tmp_path: Path) -> AsyncIterator[FakeEntra]:
    async with FakeEntra(tmp_path) as server:
        yield server


def endpoints_yml(fake: FakeLLMServer, entra: FakeEntra) -> str:
    return f"""
model_groups:
  - id: router-llm
    models:
      - provider: azure
        deployment: gpt-4o-mini-eu
        api_base: {fake.url}
        api_version: "2024-10-21"
        oauth:
          type: azure_entra_id_client_secret
          client_id: worker-app
          client_secret: ${{AZURE_CLIENT_SECRET}}
          tenant_id: {TENANT}
          authority_host: {entra.authority}
          disable_instance_discovery: true
          scopes: {SCOPE}
"""


async def test_a_bearer_token_on_every_call_and_nothing_of_oauth_in_the_body(
    fake: FakeLLMServer, entra: FakeEntra, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "endpoints.yml"
    path.write_text(endpoints_yml(fake, entra))
    # The token endpoint is trusted through the CA bundle the gateway trusts (RASA_CA_BUNDLE).
    environ = {"AZURE_CLIENT_SECRET": CLIENT_SECRET, "RASA_CA_BUNDLE": str(entra.ca_path)}
    read = read_endpoints(path, environ, release=Release(3, 12, 42))
    assert read.endpoints is not None and read.warnings == []
    group = read.endpoints.model_groups["router-llm"]
    oauth = group.models[0].oauth
    assert oauth is not None and oauth.scopes == (SCOPE,)
    async with ModelGroupGateway(group, environ=environ) as gateway:
        for _ in range(3):
            assert (await gateway.complete("hi")).text == "A"
    [token] = entra.issued  # one token, cached for the next calls
    assert len(entra.requests) == 1
    assert entra.requests[0]["client_secret"] == CLIENT_SECRET
    assert entra.requests[0]["tenant"] == TENANT and entra.requests[0]["scope"] == SCOPE
    for request in fake.requests:
        assert request.headers["authorization"] == f"Bearer {token}"
        assert "api-key" not in request.headers
        assert "oauth" not in request.body and CLIENT_SECRET not in str(request.body)
    assert CLIENT_SECRET not in caplog.text and token not in caplog.text


async def test_rasa_3_11_has_no_oauth_and_the_worker_says_so(
    fake: FakeLLMServer, entra: FakeEntra, tmp_path: Path
) -> None:
    # Rasa 3.11.20 sends `oauth:` in the request body (an unknown key); SPEC §5 wants bearer
    # tokens: the worker reads it as 3.12+ does, with a warning naming the difference.
    path = tmp_path / "endpoints.yml"
    path.write_text(endpoints_yml(fake, entra))
    read = read_endpoints(path, {"AZURE_CLIENT_SECRET": CLIENT_SECRET})
    assert read.endpoints is not None
    [warning] = read.warnings
    assert "models[0].oauth: this Rasa release has no Entra ID support" in warning


async def test_a_refused_token_is_a_failed_attempt_without_the_secret(
    fake: FakeLLMServer, entra: FakeEntra, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    entra.status = 401
    path = tmp_path / "endpoints.yml"
    path.write_text(endpoints_yml(fake, entra))
    environ = {"AZURE_CLIENT_SECRET": CLIENT_SECRET, "RASA_CA_BUNDLE": str(entra.ca_path)}
    group = load_endpoints(path, environ).model_groups["router-llm"]
    async with ModelGroupGateway(group, environ=environ) as gateway:
        with pytest.raises(AttemptsExhausted) as raised:
            await gateway.complete("hi")
    assert "no Entra ID token" in str(raised.value)
    assert fake.requests == []  # nothing sent without a token
    assert CLIENT_SECRET not in caplog.text + str(raised.value)


def test_oauth_schema_as_rasa_3_12_has_it(tmp_path: Path) -> None:
    text = """
model_groups:
  - id: g
    models:
      - provider: azure
        deployment: d
        api_base: https://a
        api_version: v
        api_key: ${KEY}
        oauth: {type: azure_entra_id_client_certificate, client_id: c, tenant_id: t, scopes: s}
  - id: h
    models:
      - provider: azure
        deployment: d
        api_base: https://a
        api_version: v
        oauth: {type: azure_entra_id_client_secret, client_id: c, client_secret: literal,
                tenant_id: t, scopes: s}
"""
    path = tmp_path / "endpoints.yml"
    path.write_text(text)
    problems = read_endpoints(path, {"KEY": "k"}, release=Release(3, 12, 42)).problems
    assert [line.split(": ", 1)[1] for line in problems] == [
        "model_groups[0] (id g).models[0].oauth: oauth type azure_entra_id_client_certificate "
        "needs certificate_path",
        # SPEC §5 (Rasa refuses a literal client secret only from 3.21.0)
        "model_groups[1] (id h).models[0].oauth.client_secret: must be written as ${VAR}, a "
        "literal secret is refused",
    ]


class CountingCredential:
    """An azure-identity async credential stand-in: one token per request, each request held
    until `release` is set (to show that concurrent calls share one refresh)."""

    def __init__(self, lifetime: float, clock: list[float]) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self.requests = 0
        self.release = asyncio.Event()
        self.release.set()
        self.failing = False

    async def get_token(self, *scopes: str) -> AccessToken:
        self.requests += 1
        await self.release.wait()
        if self.failing:
            raise ClientAuthenticationError(f"AADSTS7000215: invalid secret {CLIENT_SECRET}")
        return AccessToken(f"token-{self.requests}", int(self.clock[0] + self.lifetime))

    async def close(self) -> None:
        return None


def oauth_block() -> AzureOAuth:
    return AzureOAuth.model_validate(
        {
            "type": "azure_entra_id_client_secret",
            "scopes": SCOPE,
            "client_id": "worker-app",
            "client_secret": CLIENT_SECRET,
            "tenant_id": TENANT,
        }
    )


async def test_the_token_is_cached_and_refreshed_once_for_concurrent_calls() -> None:
    now = [1000.0]
    credential = CountingCredential(3600, now)
    token = EntraToken(oauth_block(), name="d", clock=lambda: now[0], credential=credential)
    assert await token.header() == "Bearer token-1"
    now[0] += 3000  # still more than REFRESH_MARGIN before expiry: cached
    assert await token.header() == "Bearer token-1" and credential.requests == 1
    now[0] += 400  # within REFRESH_MARGIN: renewed, once for every call waiting
    credential.release.clear()
    waiting = [asyncio.ensure_future(token.header()) for _ in range(5)]
    await asyncio.sleep(0)  # let them all reach the refresh
    credential.release.set()
    assert set(await asyncio.gather(*waiting)) == {"Bearer token-2"}
    assert credential.requests == 2


async def test_every_token_is_known_to_the_redactor_before_it_is_sent() -> None:
    now = [1000.0]
    credential = CountingCredential(3600, now)
    redactor = Redactor()
    token = EntraToken(
        oauth_block(), name="d", clock=lambda: now[0], credential=credential, redactor=redactor
    )
    assert redactor.knows(CLIENT_SECRET)
    assert await token.header() == "Bearer token-1" and redactor.knows("token-1")
    now[0] += 3400  # renewed
    assert await token.header() == "Bearer token-2" and redactor.knows("token-2")
    assert redactor("echo token-1 token-2") == "echo *** ***"


async def test_a_failed_refresh_keeps_a_token_that_still_holds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    credential = CountingCredential(3600, now)
    token = EntraToken(oauth_block(), name="d", clock=lambda: now[0], credential=credential)
    assert await token.header() == "Bearer token-1"
    now[0] += 3400
    credential.failing = True
    assert await token.header() == "Bearer token-1"  # logged, the old token used
    assert "no Entra ID token" in caplog.text
    assert CLIENT_SECRET not in caplog.text
    now[0] += 300  # expired: no token left
    with pytest.raises(TokenUnavailable):
        await token.header()


def test_a_group_with_oauth_is_no_secret_in_its_repr() -> None:
    group = ModelGroup.model_validate(
        {
            "id": "g",
            "models": [
                {
                    "provider": "azure",
                    "deployment": "d",
                    "oauth": {
                        "type": "azure_entra_id_client_secret",
                        "scopes": [SCOPE],
                        "client_id": "c",
                        "client_secret": CLIENT_SECRET,
                        "tenant_id": TENANT,
                    },
                }
            ],
        }
    )
    assert CLIENT_SECRET not in repr(group) + str(group)
    assert CLIENT_SECRET in group.secrets()
