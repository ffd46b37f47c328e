"""Fixtures shared by the integration tests (a module may define its own of the same name)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from worker.fake_llm import FakeLLMServer


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLMServer]:
    """The fake LLM provider on a loopback port, over plain HTTP."""
    async with FakeLLMServer(seed=3) as server:
        yield server


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty AWS environment of the test's own: botocore finds nothing the test did not
    put there, and never asks the EC2 instance metadata service."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    home = tmp_path / "aws"
    home.mkdir()
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # a failing STS fails at once (no retries)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield home
