"""Bedrock deployments signed with credentials from botocore's own chain and litellm's `aws_*`
keys, against a loopback STS (tests/fake_sts.py) and the fake LLM, which recomputes every SigV4
signature with botocore and accepts only the credentials STS issued (with their session token).

botocore reads its variables and files from the process environment: `aws_environment`
(tests/integration/conftest.py) gives each test its own.
The STS server runs on the test's own event loop: a credential refresh that blocked the loop
could never be answered."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_sts import FakeSts
from worker.config.endpoints import read_endpoints
from worker.fake_llm import FakeLLMServer, FakeRequest
from worker.llm.errors import GatewayError
from worker.llm.gateway import ModelGroupGateway
from worker.llm.model_group import ModelGroup
from worker.rasa.releases import Release

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE = "arn:aws:iam::123456789012:role/bedrock-caller"
WEB_IDENTITY_TOKEN = "eyJhbGciOiJSUzI1NiJ9.irsa-projected-token.c2ln"
BASE_KEY, BASE_SECRET = "AKIDSOURCEPROFILE", "source-profile-secret-7c1e"
OWN_KEY, OWN_SECRET = "AKIDDEPLOYMENTKEYS", "deployment-own-secret-93ab"
# botocore's advisory refresh window is 15 minutes: credentials that live 11 minutes are due
# for a refresh as soon as they are issued, ones that live an hour are not for 45 minutes.
SHORT, LONG = 11 * 60.0, 3600.0


@pytest.fixture
async def sts(fake: FakeLLMServer) -> AsyncIterator[FakeSts]:
    async with FakeSts(fake) as server:
        yield server


def bedrock(fake: FakeLLMServer, **keys: Any) -> ModelGroup:
    deployment = {
        "provider": "bedrock",
        "model": MODEL,
        "aws_region_name": "us-east-1",
        "api_base": fake.url,
        **keys,
    }
    return ModelGroup.model_validate({"id": "g", "models": [deployment]})


def signer_of(request: FakeRequest) -> tuple[str, str | None]:
    """(access key of the signature, session token) of a request the fake LLM received."""
    credential = request.headers["authorization"].split("Credential=")[1].split("/")[0]
    return credential, request.headers.get("x-amz-security-token")


def web_identity(fake: FakeLLMServer, sts: FakeSts, token: str = "OIDC_TOKEN") -> ModelGroup:
    """litellm's keys for AssumeRoleWithWebIdentity at the loopback STS (the token: the
    variable OIDC_TOKEN of the gateway's environment, unless `token` says otherwise)."""
    return bedrock(
        fake,
        aws_web_identity_token=token,
        aws_role_name=ROLE,
        aws_session_name="worker",
        aws_sts_endpoint=sts.url,
    )


OIDC_ENVIRONMENT = {"OIDC_TOKEN": "t0k3n-value"}


async def complete(group: ModelGroup, times: int = 1) -> list[str]:
    async with ModelGroupGateway(group, rng=random.Random(0)) as gateway:
        return [(await gateway.complete("route this")).text for _ in range(times)]


async def test_irsa_web_identity_from_the_environment(
    aws_environment: Path,
    fake: FakeLLMServer,
    sts: FakeSts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token_file = aws_environment / "token"
    token_file.write_text(WEB_IDENTITY_TOKEN)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE)
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "irsa-session")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
    assert await complete(bedrock(fake), times=3) == ["A", "A", "A"]
    [request] = sts.requests  # resolved once, then signed with the cached set
    assert request.action == "AssumeRoleWithWebIdentity" and request.signed_by is None
    assert request.params["RoleArn"] == ROLE
    assert request.params["RoleSessionName"] == "irsa-session"
    assert request.params["WebIdentityToken"] == WEB_IDENTITY_TOKEN
    [issued] = sts.issued
    assert [signer_of(r) for r in fake.requests] == [(issued.access_key, issued.session_token)] * 3


async def test_litellm_web_identity_keys_read_the_token_where_they_say(
    aws_environment: Path, fake: FakeLLMServer, sts: FakeSts
) -> None:
    token_file = aws_environment / "projected-token"
    token_file.write_text(WEB_IDENTITY_TOKEN + "\n")
    keys = {
        "aws_role_name": ROLE,
        "aws_session_name": "litellm-session",
        "aws_sts_endpoint": sts.url,
    }
    # litellm's get_secret: `oidc/file/<path>`, or the name of an environment variable.
    assert await complete(bedrock(fake, aws_web_identity_token=f"oidc/file/{token_file}", **keys))
    environ = {"OIDC_TOKEN": "from-the-environment-token"}
    group = bedrock(fake, aws_web_identity_token="os.environ/OIDC_TOKEN", **keys)
    async with ModelGroupGateway(group, environ=environ) as gateway:
        assert (await gateway.complete("route this")).text == "A"
    assert [r.params["WebIdentityToken"] for r in sts.requests] == [
        WEB_IDENTITY_TOKEN,
        "from-the-environment-token",
    ]
    for request in sts.requests:
        assert request.action == "AssumeRoleWithWebIdentity"
        assert request.params["RoleSessionName"] == "litellm-session"
        assert request.params["DurationSeconds"] == "3600"  # litellm's
    assert [signer_of(r) for r in fake.requests] == [
        (issued.access_key, issued.session_token) for issued in sts.issued
    ]


async def test_one_resolution_off_the_event_loop_however_many_calls_wait(
    aws_environment: Path, fake: FakeLLMServer, sts: FakeSts
) -> None:
    group = web_identity(fake, sts, "oidc/env/OIDC_TOKEN")
    sts.hold()
    async with ModelGroupGateway(group, environ=OIDC_ENVIRONMENT) as gateway:
        calls = [asyncio.create_task(gateway.complete("route this")) for _ in range(20)]
        # STS, served by this event loop, got the request: botocore's blocking call runs in a
        # worker thread, and the loop is free meanwhile.
        async with asyncio.timeout(30):
            await sts.arrived.wait()
        assert not any(call.done() for call in calls)
        sts.release()
        answers = await asyncio.gather(*calls)
    assert [a.text for a in answers] == ["A"] * 20
    assert len(sts.requests) == 1
    [issued] = sts.issued
    assert {signer_of(r) for r in fake.requests} == {(issued.access_key, issued.session_token)}


@pytest.mark.parametrize(("lifetime", "sts_requests"), [(SHORT, 3), (LONG, 1)])
async def test_credentials_are_refreshed_when_botocore_says_they_are_due(
    aws_environment: Path, fake: FakeLLMServer, sts: FakeSts, lifetime: float, sts_requests: int
) -> None:
    sts.lifetime = lifetime
    group = web_identity(fake, sts)
    async with ModelGroupGateway(group, environ=OIDC_ENVIRONMENT) as gateway:
        for _ in range(3):
            assert (await gateway.complete("route this")).text == "A"
    # Due at once: every call refreshes first (botocore's advisory window), and signs with the
    # new set; not due: one resolution for every call.
    assert len(sts.requests) == sts_requests
    used = [signer_of(r) for r in fake.requests]
    issued = [(i.access_key, i.session_token) for i in sts.issued]
    assert used == (issued if lifetime == SHORT else issued * 3)


# botocore's advisory window (a failed refresh is logged and the credentials kept by botocore)
# and its mandatory one (10 minutes before expiry: botocore raises; the worker keeps them).
@pytest.mark.parametrize("lifetime", [SHORT, 5 * 60.0])
async def test_a_failed_refresh_keeps_the_credentials_while_they_hold(
    aws_environment: Path,
    fake: FakeLLMServer,
    sts: FakeSts,
    lifetime: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sts.lifetime = lifetime
    group = web_identity(fake, sts)
    async with ModelGroupGateway(group, environ=OIDC_ENVIRONMENT) as gateway:
        assert (await gateway.complete("route this")).text == "A"
        sts.status = 503
        assert (await gateway.complete("route this")).text == "A"
    assert len(sts.requests) == 2 and len(sts.issued) == 1
    [issued] = sts.issued
    assert [signer_of(r) for r in fake.requests] == [(issued.access_key, issued.session_token)] * 2
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Refreshing temporary credentials failed" in m for m in warned)
    if lifetime < 10 * 60:
        assert any("the current ones hold until they expire" in m for m in warned), warned
    # botocore's own warning comes without its traceback (it may quote a process's output).
    assert all(r.exc_info is None for r in caplog.records if r.name.startswith("botocore"))


def write_profiles(home: Path, config: str, credentials: str = "") -> None:
    (home / "config").write_text(config)
    (home / "credentials").write_text(credentials)


async def test_a_profile_with_credential_process_is_refreshed_by_running_it_again(
    aws_environment: Path, fake: FakeLLMServer, tmp_path: Path
) -> None:
    # The process prints the n-th set of credentials each time it runs (AWS's credential_process
    # format), expiring in 11 minutes: due for a refresh on the next call.
    script = tmp_path / "credentials_process.py"
    script.write_text(
        "import json, sys, datetime, pathlib\n"
        "state = pathlib.Path(sys.argv[1])\n"
        "n = int(state.read_text()) + 1 if state.exists() else 1\n"
        "state.write_text(str(n))\n"
        "expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=11)\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': f'ASIAPROCESS{n:04d}',\n"
        "    'SecretAccessKey': f'process-secret-{n}', 'SessionToken': f'process-token-{n}',\n"
        "    'Expiration': expires.strftime('%Y-%m-%dT%H:%M:%SZ')}))\n"
    )
    state = tmp_path / "runs"
    write_profiles(
        aws_environment,
        f"[profile bedrock]\ncredential_process = {sys.executable} {script} {state}\n",
    )
    for n in (1, 2, 3):
        fake.add_bedrock_credentials(
            f"ASIAPROCESS{n:04d}", f"process-secret-{n}", f"process-token-{n}"
        )
    assert await complete(bedrock(fake, aws_profile_name="bedrock"), times=2) == ["A", "A"]
    # botocore runs the process to find the credentials, finds them due already and runs it
    # again before the first signature; the second call finds them due and refreshes too.
    assert state.read_text() == "3"
    assert [signer_of(r) for r in fake.requests] == [
        ("ASIAPROCESS0002", "process-token-2"),
        ("ASIAPROCESS0003", "process-token-3"),
    ]


async def test_a_profile_assuming_a_role_with_its_source_profile(
    aws_environment: Path, fake: FakeLLMServer, sts: FakeSts, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_profiles(
        aws_environment,
        f"[profile bedrock]\nrole_arn = {ROLE}\nsource_profile = base\n"
        "role_session_name = from-profile\n",
        f"[base]\naws_access_key_id = {BASE_KEY}\naws_secret_access_key = {BASE_SECRET}\n",
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
    assert await complete(bedrock(fake, aws_profile_name="bedrock")) == ["A"]
    [request] = sts.requests
    assert (request.action, request.signed_by) == ("AssumeRole", BASE_KEY)
    assert (request.params["RoleArn"], request.params["RoleSessionName"]) == (ROLE, "from-profile")
    [issued] = sts.issued
    assert [signer_of(r) for r in fake.requests] == [(issued.access_key, issued.session_token)]


async def test_aws_role_name_is_assumed_with_the_deployments_keys(
    aws_environment: Path, fake: FakeLLMServer, sts: FakeSts, tmp_path: Path
) -> None:
    path = tmp_path / "endpoints.yml"
    path.write_text(
        f"""
model_groups:
  - id: router-llm
    models:
      - provider: bedrock
        model: {MODEL}
        api_base: {fake.url}
        aws_region_name: us-east-1
        aws_access_key_id: ${{BEDROCK_KEY_ID}}
        aws_secret_access_key: ${{BEDROCK_SECRET}}
        aws_role_name: {ROLE}
        aws_session_name: worker
        aws_external_id: shared-external-id
        aws_sts_endpoint: {sts.url}
"""
    )
    environ = {"BEDROCK_KEY_ID": OWN_KEY, "BEDROCK_SECRET": OWN_SECRET}
    read = read_endpoints(path, environ, release=Release(3, 15, 36))
    assert read.endpoints is not None, read.problems
    assert read.warnings == []
    group = read.endpoints.model_groups["router-llm"]
    async with ModelGroupGateway(group, environ=environ) as gateway:
        assert (await gateway.complete("route this")).text == "A"
    [request] = sts.requests
    assert (request.action, request.signed_by) == ("AssumeRole", OWN_KEY)
    assert request.params["ExternalId"] == "shared-external-id"
    assert request.params["RoleSessionName"] == "worker"
    [issued] = sts.issued
    assert [signer_of(r) for r in fake.requests] == [(issued.access_key, issued.session_token)]


async def test_keys_in_the_environment_are_botocores_first_link(
    aws_environment: Path, fake: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAENVIRONMENT01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "environment-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "environment-session-token")
    fake.add_bedrock_credentials(
        "ASIAENVIRONMENT01", "environment-secret", "environment-session-token"
    )
    assert await complete(bedrock(fake)) == ["A"]
    assert signer_of(fake.requests[0]) == ("ASIAENVIRONMENT01", "environment-session-token")


async def test_no_credentials_anywhere_fails_the_call_without_a_request(
    aws_environment: Path, fake: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(GatewayError) as raised:
        await complete(bedrock(fake))
    assert "no AWS credentials" in str(raised.value)
    assert "botocore's default chain" in str(raised.value)
    assert fake.requests == []
    # Looked for once (then once per MIN_RETRY), however many attempts the call makes.
    looked = [r for r in caplog.records if r.name == "worker.llm.providers.aws_credentials"]
    assert len(looked) == 1
