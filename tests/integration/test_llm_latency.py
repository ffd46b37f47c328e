"""latency-based-routing over real loopback HTTP: failed attempts are penalty samples, and an
aged-out deployment is probed by one call at a time while the others keep to the fast one.

The latency windows run on an injected clock, so "the samples aged out" is a step of that
clock, not a wait; the deployments' latencies are the fake servers' own (real) delays.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from worker.fake_llm import FakeLLMServer
from worker.llm.gateway import GroupState, ModelGroupGateway
from worker.llm.model_group import ModelGroup
from worker.llm.usage import LatencyWindows, LocalUsage

KEY = "sk-latency-test-4b1d"
MAX_AGE = 60.0


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def deployment(base: str, name: str, **keys: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": name, "api_base": f"{base}/v1", "api_key": KEY, **keys}


def latency_group(*models: dict[str, Any], **router: Any) -> ModelGroup:
    return ModelGroup.model_validate(
        {
            "id": "latency",
            "models": list(models),
            "router": {"routing_strategy": "latency-based-routing", **router},
        }
    )


def windows(clock: Clock) -> GroupState:
    return GroupState(LocalUsage(), LatencyWindows(size=10, max_age=MAX_AGE, clock=clock))


def gateway(group: ModelGroup, state: GroupState, seed: int = 3) -> ModelGroupGateway:
    return ModelGroupGateway(group, rng=random.Random(seed), state=state, environ={})


def refused_url() -> str:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def fast(fake: FakeLLMServer) -> FakeLLMServer:
    return fake  # the integration tests' fake LLM (conftest.py)


@pytest.fixture
async def slow() -> AsyncIterator[FakeLLMServer]:
    """A second fake LLM server: the slow deployment has a server of its own."""
    async with FakeLLMServer(seed=12) as server:
        yield server


async def test_failed_attempts_rank_behind_a_slower_healthy_deployment(
    fast: FakeLLMServer,
) -> None:
    # A refused connection and a 500 fail faster than the healthy deployment answers; the
    # third one times out. litellm records only the timeout; here each is a penalty sample.
    fast.script("healthy", latency=0.05)
    fast.script("broken", status=500)
    fast.script("hanging", hang=True)
    clock = Clock()
    state = windows(clock)
    group = latency_group(
        deployment(refused_url(), "refused"),
        deployment(fast.url, "broken"),
        deployment(fast.url, "hanging", timeout=0.2),
        deployment(fast.url, "healthy"),
        num_retries=3,
        allowed_fails=100,  # no cooldown: the latency window alone keeps calls away
    )
    async with gateway(group, state) as gw:
        keys = gw.deployment_keys
        # Unmeasured deployments first: within four calls each has been tried once.
        for _ in range(4):
            assert (await gw.complete("hi")).deployment == "healthy"
        assert fast.count("broken") == fast.count("hanging") == 1
        failing = ("refused", "broken", "hanging")
        assert [state.latency.failures(keys[name]) for name in failing] == [1, 1, 1]
        assert state.latency.recent(keys["hanging"]) == 0.2  # a timeout: its whole timeout
        for _ in range(20):
            completion = await gw.complete("hi")
            assert (completion.deployment, completion.attempts) == ("healthy", 1)
        assert fast.count("broken") == fast.count("hanging") == 1

        # Half the window's age later the healthy one has fresh samples; the failures age
        # out a little after that, and each failing deployment is probed once more.
        clock.now += MAX_AGE / 2
        for _ in range(10):
            await gw.complete("hi")
        clock.now += MAX_AGE / 2 + 1
        assert state.latency.recent(keys["broken"]) is None
        assert state.latency.recent(keys["healthy"]) is not None
        reprobe = await gw.complete("hi")
        assert (reprobe.deployment, reprobe.attempts) == ("healthy", 4)
        for _ in range(10):
            assert (await gw.complete("hi")).attempts == 1
    assert fast.count("broken") == fast.count("hanging") == 2


async def test_an_aged_out_deployment_is_probed_by_one_call_while_the_fast_one_serves(
    fast: FakeLLMServer, slow: FakeLLMServer
) -> None:
    """50 callers in a loop over two loopback servers. Before the fix, every call that came
    while the slow deployment's samples had aged out went to it, all at once."""
    slow.script("slow", latency=0.5)
    clock = Clock()
    state = windows(clock)
    group = latency_group(deployment(fast.url, "fast"), deployment(slow.url, "slow"), num_retries=0)
    done = asyncio.Event()
    answered: Counter[str] = Counter()  # completions returned to the callers, by deployment
    cleared = 0  # slow completions before the slow server's requests were cleared

    async def caller(gw: ModelGroupGateway) -> None:
        for _ in range(5000):  # bounded: stops by itself even if `done` never comes
            if done.is_set():
                return
            answered[(await gw.complete("hi")).deployment] += 1

    def slow_all_answered() -> bool:
        # Every request the slow server got has come back to its caller, so its latency is
        # recorded. Re-checked at each request of the fast server, whose traffic never stops.
        return answered["slow"] - cleared == slow.count("slow") > 0

    async with gateway(group, state) as gw:
        callers = [asyncio.create_task(caller(gw)) for _ in range(50)]
        try:
            # The start: both unmeasured, each probed, the other calls spread at random. Then
            # the slow one is measured and left alone.
            await fast.wait_until(slow_all_answered)
            # The fast one's window fills with samples newer than the slow one's...
            clock.now += MAX_AGE / 2
            await fast.wait_for_requests(fast.count("fast") + 60)  # at most 50 unanswered
            slow.clear_requests()
            cleared = answered["slow"]
            # ...so this step ages out the slow one's samples only.
            clock.now += MAX_AGE / 2 + 1
            await slow.wait_until(lambda: slow.in_flight["slow"] >= 1)
            during = fast.count("fast")
            await fast.wait_until(slow_all_answered)
            during = fast.count("fast") - during
            # The probe's answer measured it: slow again, so left alone again.
            await fast.wait_for_requests(fast.count("fast") + 200)
        finally:
            done.set()
            await asyncio.gather(*callers)
    assert slow.max_in_flight["slow"] == 1  # one probe at a time, never the herd
    assert slow.count("slow") == 1
    # While the probe took its 0.5 s, the other 49 callers kept cycling on the fast one.
    assert during >= 2 * 49
