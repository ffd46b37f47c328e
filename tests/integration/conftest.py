"""Fixtures shared by the integration tests (a module may define its own of the same name)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from worker.fake_llm import FakeLLMServer


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLMServer]:
    """The fake LLM provider on a loopback port, over plain HTTP."""
    async with FakeLLMServer(seed=3) as server:
        yield server
