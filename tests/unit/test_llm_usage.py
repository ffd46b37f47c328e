"""In-process shared state: cooldowns, failure windows, per-minute counters, latency windows."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Sequence

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from worker.llm.gateway import retry_after_seconds
from worker.llm.model_group import Deployment
from worker.llm.usage import (
    LatencyWindows,
    LocalUsage,
    ResilientUsage,
    Snapshot,
    deployment_keys,
)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_failures_beyond_allowed_fails_within_a_minute_cool_down() -> None:
    clock = Clock()
    usage = LocalUsage(clock=clock)
    for _ in range(2):
        assert not await usage.note_failure("d", allowed_fails=2, cooldown=5)
    assert "d" not in (await usage.snapshot(["d"])).cooling
    assert await usage.note_failure("d", allowed_fails=2, cooldown=5)
    assert "d" in (await usage.snapshot(["d"])).cooling
    clock.now += 5.01
    assert "d" not in (await usage.snapshot(["d"])).cooling
    # the counter started afresh after the cooldown
    assert not await usage.note_failure("d", allowed_fails=2, cooldown=5)


async def test_failures_older_than_a_minute_do_not_count() -> None:
    clock = Clock()
    usage = LocalUsage(clock=clock)
    assert not await usage.note_failure("d", allowed_fails=1, cooldown=5)
    clock.now += 61
    assert not await usage.note_failure("d", allowed_fails=1, cooldown=5)
    assert await usage.note_failure("d", allowed_fails=1, cooldown=5)


async def test_allowed_fails_zero_cools_down_at_the_first_failure() -> None:
    usage = LocalUsage(clock=Clock())
    assert await usage.note_failure("d", allowed_fails=0, cooldown=1)


async def test_cool_down_never_shortens_a_longer_one() -> None:
    clock = Clock()
    usage = LocalUsage(clock=clock)
    await usage.cool_down("d", 30)
    await usage.cool_down("d", 1)
    clock.now += 10
    assert (await usage.snapshot(["d"])).cooling == {"d"}


async def test_reserve_respects_rpm_and_tpm_per_minute() -> None:
    wall = Clock(60.0 * 1000)
    usage = LocalUsage(wall=wall)
    assert [await usage.reserve("d", rpm_limit=2, tpm_limit=None) for _ in range(3)] == [
        True,
        True,
        False,
    ]
    wall.now += 60
    assert await usage.reserve("d", rpm_limit=2, tpm_limit=None)
    await usage.add_tokens("d", 100)
    assert not await usage.reserve("d", rpm_limit=None, tpm_limit=100)
    snapshot = await usage.snapshot(["d"])
    assert (snapshot.usage["d"].rpm, snapshot.usage["d"].tpm) == (1, 100)


async def test_in_flight_counts_calls_until_they_leave_or_expire() -> None:
    clock = Clock()
    usage = LocalUsage(clock=clock)
    await usage.enter("d", "c1", ttl=10)
    await usage.enter("d", "c2", ttl=1)
    assert (await usage.snapshot(["d"])).usage["d"].in_flight == 2
    await usage.leave("d", "c1")
    assert (await usage.snapshot(["d"])).usage["d"].in_flight == 1
    clock.now += 2
    assert (await usage.snapshot(["d"])).usage["d"].in_flight == 0
    await usage.leave("d", "unknown")


def test_latency_window_slides_by_count_and_age() -> None:
    clock = Clock()
    windows = LatencyWindows(size=3, max_age=60, clock=clock)
    assert windows.recent("d") is None
    for value in (9.0, 1.0, 2.0, 3.0):
        windows.record("d", value)
    assert windows.recent("d") == pytest.approx(2.0)  # the 9.0 slid out
    clock.now += 61
    assert windows.recent("d") is None  # aged out: unmeasured again, so it gets re-probed


def test_deployment_keys_are_stable_distinct_and_secret_free() -> None:
    secret = "sk-very-secret-value-123"
    models = [
        Deployment.model_validate({"provider": "openai", "model": "gpt-4o", "api_key": secret}),
        Deployment.model_validate(
            {"provider": "openai", "model": "gpt-4o", "api_key": "sk-other-000000"}
        ),
        Deployment(provider="azure", deployment="gpt-4o", api_base="https://a"),
        Deployment(provider="azure", deployment="gpt-4o", api_base="https://b"),
    ]
    keys = deployment_keys(models)
    assert len(set(keys)) == 4
    assert keys == deployment_keys(models)
    assert all(secret not in k and "sk-" not in k for k in keys)
    assert keys[0].startswith("gpt-4o@")
    # a deployment keeps its key when others are added
    assert deployment_keys(models[2:])[0] == keys[2]


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert retry_after_seconds({"Retry-After": when}) == pytest.approx(30, abs=2)
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({"Retry-After": "-5"}) == 0.0
    assert retry_after_seconds({"Retry-After": "999999"}) == 3600.0
    assert retry_after_seconds({}) is None


class FlakyRedis(LocalUsage):
    """A primary store that is down until `up` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.up = False

    async def snapshot(self, keys: Sequence[str]) -> Snapshot:
        if not self.up:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6390. Refused.")
        return await super().snapshot(keys)


async def test_resilient_usage_falls_back_warns_once_and_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker.llm")
    clock = Clock()
    primary, local = FlakyRedis(), LocalUsage()
    store = ResilientUsage(
        primary, local, group="g", location="127.0.0.1:6390", retry_after=5, clock=clock
    )
    await local.cool_down("d", 60)
    for _ in range(3):
        assert (await store.snapshot(["d"])).cooling == {"d"}  # local state answers
        clock.now += 1
    assert store.degraded
    assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1
    primary.up = True
    clock.now += 5
    assert (await store.snapshot(["d"])).cooling == frozenset()  # Redis again
    assert not store.degraded
    assert any("reachable again" in r.getMessage() for r in caplog.records)
