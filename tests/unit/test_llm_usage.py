"""In-process shared state: cooldowns, failure windows, per-minute counters, latency windows."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Sequence

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from worker.llm.errors import AttemptError, ErrorKind, kind_of_status
from worker.llm.model_group import Deployment
from worker.llm.providers import retry_after_seconds
from worker.llm.strategies import DeploymentUsage
from worker.llm.usage import (
    MESSAGE_TOKENS,
    LatencyWindows,
    LocalUsage,
    ResilientUsage,
    Snapshot,
    deployment_keys,
    prompt_tokens,
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


async def test_reserve_counts_the_requests_own_input_tokens_against_tpm() -> None:
    # litellm's usage-based-routing (lowest_tpm_rpm.py, 1.69.3-1.101) skips a deployment when
    # `tpm_used + input_tokens > tpm`: the request's own tokens count.
    usage = LocalUsage(wall=Clock(60.0 * 1000))
    await usage.add_tokens("d", 90)
    assert not await usage.reserve("d", rpm_limit=None, tpm_limit=100, tokens=11)
    assert await usage.reserve("d", rpm_limit=None, tpm_limit=100, tokens=10)  # exactly fits
    snapshot = await usage.snapshot(["d"])
    assert (snapshot.usage["d"].rpm, snapshot.usage["d"].tpm) == (1, 100)  # reserved: counted
    assert not await usage.reserve("d", rpm_limit=None, tpm_limit=100, tokens=1)
    # A refused reservation counts nothing; without a limit the tokens are counted all the same.
    assert await usage.reserve("e", rpm_limit=None, tpm_limit=None, tokens=500)
    assert (await usage.snapshot(["e"])).usage["e"].tpm == 500


async def test_add_tokens_corrects_an_estimate_and_never_goes_below_zero() -> None:
    usage = LocalUsage(wall=Clock(60.0 * 1000))
    assert await usage.reserve("d", rpm_limit=None, tpm_limit=1000, tokens=300)
    await usage.add_tokens("d", 120 - 300)  # the answer reported 120 tokens in all
    assert (await usage.snapshot(["d"])).usage["d"].tpm == 120
    await usage.add_tokens("d", -500)
    assert (await usage.snapshot(["d"])).usage["d"].tpm == 0


def test_prompt_tokens_estimates_four_bytes_a_token_plus_the_message_framing() -> None:
    assert prompt_tokens("") == MESSAGE_TOKENS
    assert prompt_tokens("abcd" * 100) == MESSAGE_TOKENS + 100
    assert prompt_tokens("abcde") == MESSAGE_TOKENS + 2  # a partial token is a token
    # Other scripts take more bytes a character, and more tokens: counted by UTF-8 bytes.
    assert prompt_tokens("日本語の文" * 4) == MESSAGE_TOKENS + 15  # 60 bytes
    assert prompt_tokens("\ud800abc") == MESSAGE_TOKENS + 2  # a lone surrogate does not raise


def timeout_error(after: float) -> AttemptError:
    return AttemptError("timed out", kind=ErrorKind.TIMEOUT, elapsed=after, timed_out=True)


def status_error(status: int, elapsed: float = 0.002) -> AttemptError:
    return AttemptError("HTTP", kind=kind_of_status(status), status=status, elapsed=elapsed)


@pytest.mark.parametrize(
    ("error", "sample"),
    [
        (timeout_error(0.3012), 0.3),  # connect, TLS or answer: a sample of the whole timeout
        (AttemptError("connection error", kind=ErrorKind.CONNECTION, elapsed=0.001), 0.001),
        (status_error(500), 0.002),  # a fast 5xx: recorded at its own (short) time
        (status_error(503, elapsed=0.2), 0.2),
        (status_error(408), 0.002),
        (status_error(401), 0.002),  # misconfigured: every call would fail
        (AttemptError("HTTP 200: not JSON", kind=ErrorKind.API_ERROR, status=200), 0.0),
    ],
)
def test_failures_that_say_the_deployment_is_unwell_are_penalty_samples(
    error: AttemptError, sample: float
) -> None:
    windows = LatencyWindows(size=3, max_age=60, clock=Clock())
    windows.failed("d", error, timeout=0.3)
    assert windows.recent("d") == pytest.approx(sample)
    assert windows.failures("d") == 1


@pytest.mark.parametrize("error", [status_error(429), status_error(400), status_error(422)])
def test_a_429_and_the_requests_own_4xx_are_no_sample(error: AttemptError) -> None:
    windows = LatencyWindows(size=3, max_age=60, clock=Clock())
    windows.failed("d", error, timeout=1.0)
    assert (windows.recent("d"), windows.failures("d")) == (None, 0)


def test_a_penalty_stays_in_the_window_until_it_slides_or_ages_out() -> None:
    clock = Clock()
    windows = LatencyWindows(size=3, max_age=60, clock=clock)
    windows.record("d", 0.1)
    windows.failed("d", status_error(500), timeout=1.0)
    clock.now += 30
    windows.record("d", 0.1)
    assert windows.failures("d") == 1
    assert windows.recent("d") == pytest.approx((0.1 + 0.002 + 0.1) / 3)
    clock.now += 31  # the failure (and the sample before it) aged out, the last success is kept
    assert windows.recent("d") == pytest.approx(0.1)
    assert windows.failures("d") == 0
    windows.failed("d", status_error(500), timeout=1.0)
    for _ in range(3):
        windows.record("d", 0.1)
    assert windows.failures("d") == 0  # slid out behind three newer samples


def test_an_unmeasured_deployment_has_one_probe_at_a_time() -> None:
    clock = Clock()
    windows = LatencyWindows(size=3, max_age=60, clock=clock)
    idle = {"d": DeploymentUsage(), "m": DeploymentUsage(in_flight=2)}
    windows.record("m", 0.5)
    assert windows.usage(idle) == {
        "d": DeploymentUsage(),
        "m": DeploymentUsage(in_flight=2, latency=0.5),
    }
    windows.probe("d", 7.0)
    assert windows.usage(idle)["d"] == DeploymentUsage(probing=True)
    windows.probe("m", 7.0)  # measured: a call to it is no probe
    assert not windows.usage(idle)["m"].probing
    windows.record("d", 0.2)  # the probe's answer: measured, the claim ends
    assert windows.usage(idle)["d"] == DeploymentUsage(latency=0.2)
    clock.now += 61  # aged out: unmeasured, the next call probes it again
    assert windows.usage(idle)["d"] == DeploymentUsage()
    windows.probe("d", 7.0)
    windows.probe("d", 7.0)  # a second call does not extend the first one's claim
    clock.now += 6.9
    assert windows.usage(idle)["d"].probing
    clock.now += 0.2  # a probe that never reported (cancelled): its claim lapses at its deadline
    assert not windows.usage(idle)["d"].probing


def test_a_probe_that_fails_without_a_sample_ends_its_claim() -> None:
    windows = LatencyWindows(size=3, max_age=60, clock=Clock())
    windows.probe("d", 7.0)
    windows.failed("d", status_error(429), timeout=7.0)
    assert windows.usage({"d": DeploymentUsage()})["d"] == DeploymentUsage()
    windows.probe("d", 7.0)
    windows.failed("d", timeout_error(7.0), timeout=7.0)
    assert windows.usage({"d": DeploymentUsage()})["d"] == DeploymentUsage(latency=7.0, failures=1)


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
