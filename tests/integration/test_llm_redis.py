"""Gateway state shared through the real Redis at 127.0.0.1:6379, and its local fallback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from worker.fake_llm import FakeLLMServer
from worker.llm.errors import RateLimitsReached
from worker.llm.gateway import ModelGroupGateway
from worker.llm.model_group import ModelGroup
from worker.llm.usage import RedisUsage, ResilientUsage, prompt_tokens

KEY = "sk-redis-test-not-a-secret"
REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]
WORKER_SCRIPT = Path(__file__).with_name("llm_gateway_worker.py")


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(seed=3) as server:
        yield server


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable Redis
        await client.aclose()
        pytest.skip(f"no Redis at 127.0.0.1:6379 ({type(exc).__name__})")
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    name = f"coexrouter-test-{uuid.uuid4().hex[:10]}"
    yield name
    keys = [key async for key in redis.scan_iter(match=f"{name}:*")]
    if keys:
        await redis.delete(*keys)


def group_dict(fake: FakeLLMServer, *models: dict[str, Any], **router: Any) -> dict[str, Any]:
    return {
        "id": "shared-group",
        "models": [
            {"provider": "openai", "api_base": f"{fake.url}/v1", "api_key": KEY, **m}
            for m in models
        ],
        "router": {"redis_url": REDIS_URL, **router},
    }


def gateway(spec: dict[str, Any], prefix: str, seed: int = 0) -> ModelGroupGateway:
    return ModelGroupGateway(
        ModelGroup.model_validate(spec), key_prefix=prefix, rng=random.Random(seed)
    )


def first_second(fake: FakeLLMServer, prefix_: str, **router: Any) -> dict[str, Any]:
    return group_dict(
        fake,
        {"model": "first", "input_cost_per_token": 1e-9},
        {"model": "second", "input_cost_per_token": 1e-6},
        routing_strategy="cost-based-routing",
        **router,
    )


async def test_a_429_cools_the_deployment_down_for_every_worker(
    fake: FakeLLMServer, redis: Redis, prefix: str
) -> None:
    fake.script("first", status=429, retry_after=30)
    spec = first_second(fake, prefix, cooldown_time=0.5, num_retries=1)
    async with gateway(spec, prefix) as one, gateway(spec, prefix, seed=1) as two:
        assert (await one.complete("hi")).attempts == 2
        completion = await two.complete("hi")
        assert (completion.deployment, completion.attempts) == ("second", 1)
        key = one.deployment_keys["first"]
        pttl = await redis.pttl(f"{prefix}:{{shared-group}}:{key}:cooldown")
        assert 25_000 < pttl <= 30_000  # Retry-After, not cooldown_time
        assert await two.store.cooldown_left(key) > 25
    assert fake.count("first") == 1


async def test_failures_are_counted_across_workers(
    fake: FakeLLMServer, redis: Redis, prefix: str
) -> None:
    fake.script("first", status=500)
    spec = first_second(fake, prefix, allowed_fails=1, cooldown_time=0.3, num_retries=1)
    async with gateway(spec, prefix) as one, gateway(spec, prefix, seed=1) as two:
        await one.complete("hi")  # 1st failure: tolerated
        await two.complete("hi")  # 2nd failure, seen by worker two: cooldown for both
        assert (await one.complete("hi")).attempts == 1
        key = one.deployment_keys["first"]
        assert fake.count("first") == 2
        fake.clear("first")
        for _ in range(100):
            if await two.store.cooldown_left(key) == 0:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the shared cooldown never ended")
        assert (await two.complete("hi")).deployment == "first"


async def test_usage_based_shares_rpm_between_workers_in_one_process(
    fake: FakeLLMServer, redis: Redis, prefix: str
) -> None:
    spec = group_dict(
        fake,
        {"model": "a", "rpm": 4},
        {"model": "b", "rpm": 2},
        routing_strategy="usage-based-routing",
    )
    async with gateway(spec, prefix) as one, gateway(spec, prefix, seed=9) as two:
        results = await asyncio.gather(
            *(gw.complete("hi") for gw in (one, two) * 5), return_exceptions=True
        )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, RateLimitsReached)]
    assert (len(ok), len(refused)) == (6, 4)
    assert (fake.count("a"), fake.count("b")) == (4, 2)


async def test_least_busy_sees_other_workers_calls(
    fake: FakeLLMServer, redis: Redis, prefix: str
) -> None:
    for name in ("a", "b", "c"):
        fake.script(name, latency=0.3)
    spec = group_dict(
        fake, {"model": "a"}, {"model": "b"}, {"model": "c"}, routing_strategy="least-busy"
    )
    async with gateway(spec, prefix) as one, gateway(spec, prefix, seed=4) as two:
        calls = []
        for gw in (one, two) * 3:
            calls.append(asyncio.create_task(gw.complete("hi")))
            await fake.wait_until(lambda: sum(fake.in_flight.values()) == len(calls))
        results = await asyncio.gather(*calls)
        key = one.deployment_keys["a"]
        assert await redis.zcard(f"{prefix}:{{shared-group}}:{key}:inflight") == 0
    assert sorted(r.deployment for r in results) == ["a", "a", "b", "b", "c", "c"]


async def test_every_key_expires(fake: FakeLLMServer, redis: Redis, prefix: str) -> None:
    fake.script("b", status=500)
    fake.script("c", latency=0.2)
    fake.script("d", latency=0.2)
    spec = group_dict(
        fake,
        {"model": "a", "rpm": 100},
        {"model": "b", "rpm": 100},
        routing_strategy="usage-based-routing",
        allowed_fails=0,
        num_retries=1,
    )
    async with gateway(spec, prefix) as gw:
        for _ in range(4):
            await gw.complete("hi")
    busy = group_dict(fake, {"model": "c"}, {"model": "d"}, routing_strategy="least-busy")
    async with gateway(busy, prefix) as gw:
        call = asyncio.create_task(gw.complete("hi"))
        await fake.wait_until(lambda: sum(fake.in_flight.values()) == 1)
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
        await call
    kinds = {
        key.split(":")[-1] if ":rpm:" not in key and ":tpm:" not in key else "minute"
        for key in keys
    }
    assert {"cooldown", "inflight", "minute"} <= kinds
    for key in keys:
        assert await redis.pttl(key) != -1, key  # -1: a key without expiry
        assert "sk-" not in key


@contextlib.contextmanager
def skewed_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> Iterator[None]:
    """This process's wall clock `seconds` off, as another worker's may be (what the minute
    keys and in-flight deadlines were once computed from)."""
    real = time.time
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: real() + seconds)
        yield


async def test_workers_with_skewed_clocks_share_the_minute_and_the_calls_in_flight(
    redis: Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two workers' stores, one clock 5 minutes ahead, the other 5 minutes behind: Redis's TIME
    # decides the minute and the in-flight window for both.
    ahead, behind = (RedisUsage(redis, "skew", prefix=prefix) for _ in range(2))
    with skewed_clock(monkeypatch, +300):
        assert await ahead.reserve("d", rpm_limit=2, tpm_limit=None, tokens=40)
        await ahead.enter("d", "call-ahead", ttl=30)
    with skewed_clock(monkeypatch, -300):
        snapshot = await behind.snapshot(["d"])
        assert (snapshot.usage["d"].rpm, snapshot.usage["d"].tpm) == (1, 40)
        assert snapshot.usage["d"].in_flight == 1
        assert await behind.reserve("d", rpm_limit=2, tpm_limit=None)
        await behind.enter("d", "call-behind", ttl=30)
        await behind.add_tokens("d", 10)
    with skewed_clock(monkeypatch, +300):
        assert not await ahead.reserve("d", rpm_limit=2, tpm_limit=None)  # the same minute: full
        snapshot = await ahead.snapshot(["d"])
        assert (snapshot.usage["d"].rpm, snapshot.usage["d"].tpm) == (2, 50)
        assert snapshot.usage["d"].in_flight == 2  # the other's call is within its deadline
    seconds, _ = await redis.time()
    counters = sorted([key async for key in redis.scan_iter(match=f"{prefix}:{{skew}}:d:*pm:*")])
    minute = seconds // 60
    assert counters in (
        [f"{prefix}:{{skew}}:d:rpm:{minute}", f"{prefix}:{{skew}}:d:tpm:{minute}"],
        # the minute may have turned since the calls
        [f"{prefix}:{{skew}}:d:rpm:{minute - 1}", f"{prefix}:{{skew}}:d:tpm:{minute - 1}"],
    )
    inflight = f"{prefix}:{{skew}}:d:inflight"
    deadlines = [await redis.zscore(inflight, call) for call in ("call-ahead", "call-behind")]
    now_ms = seconds * 1000
    assert all(d is not None and now_ms < d <= now_ms + 31_000 for d in deadlines)


async def test_usage_based_counts_the_requests_own_input_tokens_against_tpm(
    fake: FakeLLMServer, redis: Redis, prefix: str
) -> None:
    # litellm skips a deployment when `tpm_used + input_tokens > tpm` (lowest_tpm_rpm.py). The
    # prompt's estimate just fits deployment a's tpm once; its answer then reports the fake's
    # own count (a word a token, plus one for the answer), which stays on the counter. b has
    # used more this minute, so a is the lowest while its tpm lets it be picked.
    prompt = "word " * 100
    estimate = prompt_tokens(prompt)
    assert estimate > 101
    spec = group_dict(
        fake,
        {"model": "a", "tpm": estimate},
        {"model": "b"},
        routing_strategy="usage-based-routing",
        num_retries=0,
    )
    async with gateway(spec, prefix) as one, gateway(spec, prefix, seed=5) as two:
        keys = one.deployment_keys
        await one.store.add_tokens(keys["b"], 1000)
        picks = [(await gw.complete(prompt)).deployment for gw in (one, two, one, two)]
        usage = (await two.store.snapshot([keys["a"], keys["b"]])).usage
    # The first call fits a (0 + estimate <= tpm); after it, 101 + estimate does not.
    assert picks == ["a", "b", "b", "b"]
    assert (usage[keys["a"]].tpm, usage[keys["b"]].tpm) == (101, 1000 + 3 * 101)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_redis_falls_back_to_local_state_with_one_warning(
    fake: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="worker.llm")
    fake.script("first", status=500)
    spec = first_second(fake, "unused", allowed_fails=0, cooldown_time=60, num_retries=1)
    spec["router"]["redis_url"] = f"redis://:pw-should-not-show@127.0.0.1:{free_port()}/0"
    async with gateway(spec, "unused") as gw:
        results = [await gw.complete("hi") for _ in range(5)]
        assert isinstance(gw.store, ResilientUsage) and gw.store.degraded
    assert all(r.deployment == "second" for r in results)
    assert fake.count("first") == 1  # the local cooldown works while Redis is away
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert "pw-should-not-show" not in caplog.text


async def test_two_worker_processes_share_one_rpm_limit(
    fake: FakeLLMServer, redis: Redis, prefix: str
) -> None:
    fake.script("a", latency=0.01)
    fake.script("b", latency=0.01)
    spec = group_dict(
        fake,
        {"model": "a", "rpm": 7},
        {"model": "b", "rpm": 5},
        routing_strategy="usage-based-routing",
        num_retries=0,
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER_SCRIPT),
            json.dumps(spec),
            prefix,
            "20",
            "4",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outcomes = []
    for process in processes:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, stderr.decode()
        outcomes.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    assert sum(o["ok"] + o["failed"] for o in outcomes) == 40
    assert all(o["ok"] > 0 for o in outcomes) or sum(o["ok"] for o in outcomes) >= 12

    # Redis holds one rpm counter per deployment and minute: every request the fake received
    # was reserved in one of them, and no counter went past its deployment's rpm.
    probe = gateway(spec, prefix)
    keys = probe.deployment_keys
    await probe.close()
    for name, rpm in (("a", 7), ("b", 5)):
        counters = [
            int(await redis.get(key) or 0)
            async for key in redis.scan_iter(match=f"{prefix}:{{shared-group}}:{keys[name]}:rpm:*")
        ]
        assert counters and all(count <= rpm for count in counters)
        assert fake.count(name) == sum(counters)
    served = sum(o["ok"] for o in outcomes)
    assert served == fake.count("a") + fake.count("b")
    if len({int(r.received_at // 60) for r in fake.requests}) == 1:
        assert served == 12  # one minute: exactly the two deployments' rpm together
