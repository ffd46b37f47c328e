"""The environment a worker runs in: proxy variables as the usual clients read them, and a netrc
file whose `default` entry must never reach an LLM host. Requests go to the fake LLM, directly or
through a loopback forward proxy that records what it was sent."""

from __future__ import annotations

import base64
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.hostile_http import ForwardProxy, MiB, allocation_peak, loopback_server
from worker.fake_llm import FakeLLMServer
from worker.llm.errors import AttemptsExhausted
from worker.llm.gateway import ModelGroupGateway
from worker.llm.model_group import ModelGroup

KEY = "sk-hostile-env-9d8c7b6a"
NETRC_DEFAULT_SECRET = "netrc-default-secret-4711"
PROXY_SECRET = "proxy-secret-0815"


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[ForwardProxy, int]]:
    forward = ForwardProxy()
    async with loopback_server(forward.handle) as port:
        yield forward, port


def group_of(fake: FakeLLMServer, **deployment: Any) -> ModelGroup:
    model = {"provider": "openai", "model": "m", "api_base": f"{fake.url}/v1", "api_key": KEY}
    model.update(deployment)
    return ModelGroup.model_validate(
        {"id": "env", "models": [{k: v for k, v in model.items() if v is not None}]}
    )


async def complete(group: ModelGroup, environ: dict[str, str]) -> Any:
    async with ModelGroupGateway(group, rng=random.Random(3), environ=environ) as gateway:
        with allocation_peak() as peak:
            completion = await gateway.complete("hi")
    assert peak.bytes < 2 * MiB
    return completion


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


# ---- proxies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variables",
    [
        {"ALL_PROXY": "http://{proxy}"},
        {"all_proxy": "{proxy}"},  # scheme-less: an http:// proxy, as httpx, requests, curl
        {"HTTP_PROXY": "{proxy}", "ALL_PROXY": "socks5://127.0.0.1:1"},  # the scheme's wins
        {"HTTP_PROXY": "http://127.0.0.1:1", "http_proxy": "http://{proxy}"},  # lower case wins
    ],
)
async def test_the_proxy_variables_as_the_usual_clients_read_them(
    fake: FakeLLMServer, proxy: tuple[ForwardProxy, int], variables: dict[str, str]
) -> None:
    forward, port = proxy
    environ = {name: value.format(proxy=f"127.0.0.1:{port}") for name, value in variables.items()}
    fake.script("m", answer="C")
    assert (await complete(group_of(fake), environ)).text == "C"
    assert forward.heads[0].startswith(f"POST {fake.url}/v1/chat/completions HTTP/1.1\r\n".encode())
    assert fake.requests[-1].headers["authorization"] == f"Bearer {KEY}"


async def test_no_proxy_still_bypasses_the_proxy(
    fake: FakeLLMServer, proxy: tuple[ForwardProxy, int]
) -> None:
    forward, port = proxy
    environ = {"ALL_PROXY": f"http://127.0.0.1:{port}", "NO_PROXY": "localhost,127.0.0.1"}
    assert (await complete(group_of(fake), environ)).text == "A"
    assert forward.heads == []
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ALL_PROXY", f"socks5://user:{PROXY_SECRET}@127.0.0.1:1080"),
        ("HTTP_PROXY", "socks5h://127.0.0.1:1080"),
        ("http_proxy", "http://"),
    ],
)
def test_a_proxy_that_cannot_be_used_refuses_the_group(
    fake: FakeLLMServer, variable: str, value: str
) -> None:
    with pytest.raises(ValueError, match=variable) as refused:
        ModelGroupGateway(group_of(fake), environ={variable: value})
    assert PROXY_SECRET not in str(refused.value)


async def test_proxy_credentials_go_to_the_proxy_only_and_never_into_errors(
    fake: FakeLLMServer, proxy: tuple[ForwardProxy, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    forward, port = proxy
    environ = {"HTTP_PROXY": f"http://router:{PROXY_SECRET}@127.0.0.1:{port}"}
    assert (await complete(group_of(fake), environ)).text == "A"
    assert f"Proxy-Authorization: {basic('router', PROXY_SECRET)}".encode() in forward.heads[0]
    # A deployment that fails behind the same proxy: nothing of the proxy's password anywhere.
    fake.script("broken", status=500)
    with pytest.raises(AttemptsExhausted) as failed:
        await complete(group_of(fake, model="broken"), environ)
    text = f"{failed.value} {failed.value!r} {caplog.text}"
    assert PROXY_SECRET not in text and basic("router", PROXY_SECRET)[6:] not in text


# ---- netrc ---------------------------------------------------------------------------------------


def netrc_file(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "netrc"
    path.write_text(text)
    path.chmod(0o600)
    return {"NETRC": str(path)}


async def test_a_netrc_default_entry_is_never_sent(fake: FakeLLMServer, tmp_path: Path) -> None:
    environ = netrc_file(
        tmp_path,
        f"machine elsewhere.example login other password other-secret\n"
        f"default login everyone password {NETRC_DEFAULT_SECRET}\n",
    )
    # A deployment with its own key, and one without any (a self-hosted model).
    assert (await complete(group_of(fake), environ)).text == "A"
    assert fake.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    self_hosted = group_of(fake, provider="self-hosted", api_key=None)
    assert (await complete(self_hosted, environ)).text == "A"
    assert "authorization" not in fake.requests[-1].headers


async def test_a_netrc_default_entry_is_never_sent_to_a_proxy(
    fake: FakeLLMServer, proxy: tuple[ForwardProxy, int], tmp_path: Path
) -> None:
    forward, port = proxy
    environ = netrc_file(tmp_path, f"default login everyone password {NETRC_DEFAULT_SECRET}\n")
    environ["HTTP_PROXY"] = f"http://127.0.0.1:{port}"
    assert (await complete(group_of(fake), environ)).text == "A"
    assert b"Proxy-Authorization" not in forward.heads[0]


async def test_a_netrc_machine_entry_for_exactly_the_proxy_host_is_its_credentials(
    fake: FakeLLMServer, proxy: tuple[ForwardProxy, int], tmp_path: Path
) -> None:
    forward, port = proxy
    environ = netrc_file(tmp_path, f"machine 127.0.0.1 login px password {PROXY_SECRET}\n")
    environ["HTTP_PROXY"] = f"http://127.0.0.1:{port}"
    assert (await complete(group_of(fake), environ)).text == "A"
    assert f"Proxy-Authorization: {basic('px', PROXY_SECRET)}".encode() in forward.heads[0]
    # The deployment (the same host here) has its own key: the netrc entry does not replace it.
    assert fake.requests[-1].headers["authorization"] == f"Bearer {KEY}"


async def test_an_unreadable_netrc_file_is_skipped_without_quoting_it(
    fake: FakeLLMServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    environ = netrc_file(tmp_path, f"machine 127.0.0.1 login u password {NETRC_DEFAULT_SECRET} x\n")
    self_hosted = group_of(fake, provider="self-hosted", api_key=None)
    assert (await complete(self_hosted, environ)).text == "A"
    assert "authorization" not in fake.requests[-1].headers
    assert "netrc file" in caplog.text and NETRC_DEFAULT_SECRET not in caplog.text
