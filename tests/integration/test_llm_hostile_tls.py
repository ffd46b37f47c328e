"""TLS as deployments in private networks need it, and a deployment that never finishes its TLS
handshake. Certificates are made in the test (trustme): a private CA for the servers, another
for client certificates, and an unrelated one that trusts nothing here.

The variables and their order are Rasa Pro's (rasa/shared/providers/_ssl_verification_utils.py,
3.11.20, unchanged to 3.21): the CA bundle from RASA_CA_BUNDLE, else REQUESTS_CA_BUNDLE
(deprecated), else SSL_VERIFY; the client certificate (a PEM of certificate and key, httpx's
`cert=`) from RASA_SSL_CERTIFICATE, else SSL_CERTIFICATE."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from yarl import URL

from tests.hostile_http import (
    ForwardProxy,
    MiB,
    allocation_peak,
    hostile_first,
    loopback_server,
    on_each_loop,
)
from worker.fake_llm import FakeLLMServer
from worker.llm.errors import AttemptsExhausted, HttpTimeout
from worker.llm.gateway import GroupState, ModelGroupGateway, group_state
from worker.llm.http import HttpClient, Target
from worker.llm.model_group import ModelGroup

KEY = "sk-hostile-tls-0c0ffee1"


@dataclass(frozen=True)
class Pki:
    server_ca: Path  # the CA that issued the servers' certificate
    unrelated_ca: Path  # a CA that issued nothing here
    client: Path  # a client certificate and its key, issued by client_ca
    stranger: Path  # a client certificate and key issued by the unrelated CA
    server: trustme.LeafCert
    client_ca: trustme.CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    server_ca, client_ca, unrelated_ca = trustme.CA(), trustme.CA(), trustme.CA()
    paths = {name: folder / f"{name}.pem" for name in ("server_ca", "unrelated_ca", "client")}
    server_ca.cert_pem.write_to_path(str(paths["server_ca"]))
    unrelated_ca.cert_pem.write_to_path(str(paths["unrelated_ca"]))
    client_ca.issue_cert("router@example.org").private_key_and_cert_chain_pem.write_to_path(
        str(paths["client"])
    )
    stranger = folder / "stranger.pem"
    unrelated_ca.issue_cert("mallory@example.org").private_key_and_cert_chain_pem.write_to_path(
        str(stranger)
    )
    return Pki(
        paths["server_ca"],
        paths["unrelated_ca"],
        paths["client"],
        stranger,
        server_ca.issue_cert("127.0.0.1", "localhost"),
        client_ca,
    )


def server_context(pki: Pki, *, client_certificates: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki.server.configure_cert(context)
    if client_certificates:
        context.verify_mode = ssl.CERT_REQUIRED
        pki.client_ca.configure_trust(context)
    return context


@pytest.fixture
async def private_fake(pki: Pki) -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(seed=5, ssl_context=server_context(pki)) as server:
        yield server


@pytest.fixture
async def mtls_fake(pki: Pki) -> AsyncIterator[FakeLLMServer]:
    context = server_context(pki, client_certificates=True)
    async with FakeLLMServer(seed=6, ssl_context=context) as server:
        yield server


def one_deployment(fake: FakeLLMServer) -> ModelGroup:
    assert fake.url.startswith("https://")
    return ModelGroup.model_validate(
        {
            "id": "private",
            "models": [
                {"provider": "openai", "model": "m", "api_base": f"{fake.url}/v1", "api_key": KEY}
            ],
            "router": {"num_retries": 0},
        }
    )


async def complete_with(fake: FakeLLMServer, environ: dict[str, str]) -> Any:
    async with ModelGroupGateway(one_deployment(fake), environ=environ) as gateway:
        with allocation_peak() as peak:
            completion = await gateway.complete("hi")
    assert peak.bytes < 2 * MiB
    return completion


async def test_a_private_ca_through_rasa_ca_bundle(pki: Pki, private_fake: FakeLLMServer) -> None:
    private_fake.script("m", answer="C")
    completion = await complete_with(private_fake, {"RASA_CA_BUNDLE": str(pki.server_ca)})
    assert completion.text == "C"
    # The system's trust store does not know the private CA.
    with pytest.raises(AttemptsExhausted, match="certificate|CERTIFICATE"):
        await complete_with(private_fake, {})


@pytest.mark.parametrize(
    ("variables", "trusted"),
    [
        # RASA_CA_BUNDLE first, then REQUESTS_CA_BUNDLE, then SSL_VERIFY: the first set decides.
        ({"RASA_CA_BUNDLE": "server_ca", "REQUESTS_CA_BUNDLE": "unrelated_ca"}, True),
        ({"RASA_CA_BUNDLE": "unrelated_ca", "REQUESTS_CA_BUNDLE": "server_ca"}, False),
        ({"REQUESTS_CA_BUNDLE": "server_ca", "SSL_VERIFY": "unrelated_ca"}, True),
        ({"REQUESTS_CA_BUNDLE": "unrelated_ca", "SSL_VERIFY": "server_ca"}, False),
        ({"SSL_VERIFY": "server_ca"}, True),
        # An empty variable is unset (Rasa's `os.environ.get(...) or ...`).
        ({"RASA_CA_BUNDLE": "", "SSL_VERIFY": "server_ca"}, True),
    ],
)
async def test_the_ca_bundle_variables_in_rasas_order(
    pki: Pki, private_fake: FakeLLMServer, variables: dict[str, str], trusted: bool
) -> None:
    environ = {name: str(getattr(pki, value)) if value else "" for name, value in variables.items()}
    if trusted:
        assert (await complete_with(private_fake, environ)).text == "A"
    else:
        with pytest.raises(AttemptsExhausted, match="certificate|CERTIFICATE"):
            await complete_with(private_fake, environ)


async def test_requests_ca_bundle_is_honoured_with_rasas_deprecation_warning(
    pki: Pki, private_fake: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="worker.llm.tls")
    assert (await complete_with(private_fake, {"REQUESTS_CA_BUNDLE": str(pki.server_ca)})).text
    assert "REQUESTS_CA_BUNDLE is deprecated" in caplog.text
    assert "RASA_CA_BUNDLE" in caplog.text


@pytest.mark.parametrize("value", ["false", "False", "0", "/nonexistent/ca.pem"])
def test_a_ca_bundle_variable_that_names_no_file_refuses_the_group(value: str) -> None:
    # httpx reads `verify="false"` as a path and fails when Rasa builds its client: refused here
    # when the group is built, naming the variable (the gateway never turns checks off).
    group = ModelGroup.model_validate(
        {"id": "g", "models": [{"provider": "openai", "model": "m", "api_key": KEY}]}
    )
    with pytest.raises(ValueError, match="SSL_VERIFY") as refused:
        ModelGroupGateway(group, environ={"SSL_VERIFY": value})
    assert "model group 'g'" in str(refused.value)


@pytest.mark.parametrize(
    ("variables", "accepted"),
    [
        ({"RASA_SSL_CERTIFICATE": "client"}, True),
        ({"SSL_CERTIFICATE": "client"}, True),
        ({"RASA_SSL_CERTIFICATE": "client", "SSL_CERTIFICATE": "stranger"}, True),
        ({"RASA_SSL_CERTIFICATE": "stranger", "SSL_CERTIFICATE": "client"}, False),
        ({}, False),
    ],
)
async def test_a_client_certificate_required_by_the_server(
    pki: Pki, mtls_fake: FakeLLMServer, variables: dict[str, str], accepted: bool
) -> None:
    environ = {"RASA_CA_BUNDLE": str(pki.server_ca)}
    environ.update({name: str(getattr(pki, value)) for name, value in variables.items()})
    if accepted:
        assert (await complete_with(mtls_fake, environ)).text == "A"
    else:
        with pytest.raises(AttemptsExhausted):
            await complete_with(mtls_fake, environ)
        assert mtls_fake.requests == []  # the server let nothing through


def test_a_client_certificate_without_its_key_refuses_the_group(pki: Pki) -> None:
    group = ModelGroup.model_validate(
        {"id": "g", "models": [{"provider": "openai", "model": "m", "api_key": KEY}]}
    )
    with pytest.raises(ValueError, match="RASA_SSL_CERTIFICATE.*client certificate"):
        ModelGroupGateway(group, environ={"RASA_SSL_CERTIFICATE": str(pki.server_ca)})


# ---- a black-holed TLS handshake -----------------------------------------------------------------


async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts the connection, reads the ClientHello and everything after it, answers nothing."""
    while await reader.read(4096):
        pass
    writer.close()


async def _a_black_holed_tls_handshake_times_out_as_a_timeout() -> None:
    timeout = 0.3
    async with loopback_server(black_hole) as port:
        client = HttpClient()
        try:
            with allocation_peak() as peak, pytest.raises(HttpTimeout) as raised:
                await client.post(
                    Target(URL(f"https://127.0.0.1:{port}/v1")), {}, b"{}", timeout=timeout
                )
        finally:
            await client.close()
    assert isinstance(raised.value, TimeoutError)
    assert raised.value.phase == "tls"
    assert f"in the TLS handshake with 127.0.0.1:{port}" in str(raised.value)
    # The deadline is on the loop's clock, the elapsed time on time.monotonic: allow a tick.
    assert raised.value.elapsed >= timeout - 0.01
    assert client.open_connections == 0
    assert peak.bytes < MiB


test_a_black_holed_tls_handshake_times_out_as_a_timeout = on_each_loop(
    _a_black_holed_tls_handshake_times_out_as_a_timeout
)


async def test_the_gateway_counts_a_black_holed_handshake_as_a_timeout_and_as_latency(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker.llm.gateway")
    async with FakeLLMServer(seed=7) as fake, loopback_server(black_hole) as port:
        fake.script("healthy", answer="B")
        group = hostile_first(f"https://127.0.0.1:{port}/v1", fake, KEY, timeout=0.3)
        state: GroupState = group_state(group)
        gateway = ModelGroupGateway(group, rng=random.Random(2), state=state, environ={})
        async with gateway:
            completion = await gateway.complete("hi")
            holed = gateway.deployment_keys["hostile"]
    assert (completion.text, completion.deployment, completion.attempts) == ("B", "healthy", 2)
    assert f"timed out in the TLS handshake with 127.0.0.1:{port} after 0.3 s" in caplog.text
    assert "connection error" not in caplog.text
    assert state.latency.recent(holed) == 0.3  # a timeout is a latency sample of its timeout
    assert state.latency.failures(holed) == 1  # and a failure: ranked behind healthy ones


async def test_a_scheme_less_https_proxy_tunnels_to_a_private_ca_deployment(
    pki: Pki, private_fake: FakeLLMServer
) -> None:
    # HTTPS_PROXY=host:port, as httpx, requests and curl take it: an http:// proxy, asked to
    # CONNECT; the TLS inside the tunnel is the deployment's, checked against RASA_CA_BUNDLE.
    forward = ForwardProxy()
    async with loopback_server(forward.handle) as port:
        environ = {"HTTPS_PROXY": f"127.0.0.1:{port}", "RASA_CA_BUNDLE": str(pki.server_ca)}
        assert (await complete_with(private_fake, environ)).text == "A"
    assert forward.heads[0].startswith(f"CONNECT 127.0.0.1:{private_fake.port} ".encode())
    assert private_fake.requests[-1].headers["authorization"] == f"Bearer {KEY}"
