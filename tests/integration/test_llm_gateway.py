"""The model-group gateway over real HTTP against the fake LLM server (in-process state)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from contracts.models import Reason, Route
from worker.fake_llm import FakeLLMServer
from worker.llm.errors import (
    AllDeploymentsCoolingDown,
    AttemptsExhausted,
    RateLimitsReached,
    RequestRejected,
)
from worker.llm.gateway import GatewayRegistry, GroupState, ModelGroupGateway
from worker.llm.model_group import ModelGroup
from worker.llm.router_call import ask_router
from worker.routing.rules import decide_by_llm

KEY = "sk-gateway-test-7f3a9c1e5b2d"


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(seed=1) as server:
        yield server


def model(fake: FakeLLMServer, name: str, **keys: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": name,
        "api_base": f"{fake.url}/v1",
        "api_key": KEY,
        **keys,
    }


def group(*models: dict[str, Any], group_id: str = "router-llm", **router: Any) -> ModelGroup:
    return ModelGroup.model_validate(
        {"id": group_id, "models": list(models), "router": router if router else None}
    )


def gateway(g: ModelGroup, seed: int = 5) -> ModelGroupGateway:
    return ModelGroupGateway(g, rng=random.Random(seed))


async def test_simple_shuffle_spreads_by_weight(fake: FakeLLMServer) -> None:
    g = group(model(fake, "a", weight=1), model(fake, "b", weight=2), num_retries=0)
    async with gateway(g) as gw:
        for _ in range(300):
            completion = await gw.complete("hi")
            assert completion.text == "A" and completion.attempts == 1
    assert fake.count("a") / 300 == pytest.approx(1 / 3, abs=0.07)
    assert fake.count("b") / 300 == pytest.approx(2 / 3, abs=0.07)


async def test_least_busy_spreads_concurrent_calls(fake: FakeLLMServer) -> None:
    for name in ("a", "b", "c"):
        fake.script(name, latency=0.2)
    g = group(model(fake, "a"), model(fake, "b"), model(fake, "c"), routing_strategy="least-busy")
    async with gateway(g) as gw:
        results = await asyncio.gather(*(gw.complete("hi") for _ in range(9)))
    assert {r.deployment for r in results} == {"a", "b", "c"}
    assert [fake.count(n) for n in "abc"] == [3, 3, 3]
    assert [fake.max_in_flight[n] for n in "abc"] == [3, 3, 3]


async def test_latency_based_prefers_the_fast_deployment(fake: FakeLLMServer) -> None:
    fake.script("slow", latency=0.08)
    g = group(
        model(fake, "fast"),
        model(fake, "slow"),
        routing_strategy="latency-based-routing",
        routing_strategy_args={"lowest_latency_buffer": 0.1},
    )
    async with gateway(g) as gw:
        for _ in range(25):
            await gw.complete("hi")
    assert fake.count("slow") <= 2  # at most its first probe (or one re-probe)
    assert fake.count("fast") >= 23


async def test_usage_based_respects_rpm_and_spreads(fake: FakeLLMServer) -> None:
    g = group(
        model(fake, "a", rpm=3),
        model(fake, "b", rpm=3),
        routing_strategy="usage-based-routing",
    )
    async with gateway(g) as gw:
        picks = [(await gw.complete("hi")).deployment for _ in range(6)]
        with pytest.raises(RateLimitsReached) as raised:
            await gw.complete("hi")
    assert sorted(picks) == ["a", "a", "a", "b", "b", "b"]
    assert raised.value.attempts == 0
    assert len(fake.requests) == 6


async def test_cost_based_picks_cheapest_randomly_among_equal_prices(fake: FakeLLMServer) -> None:
    g = group(
        model(fake, "dear", input_cost_per_token=5e-6, output_cost_per_token=1e-5),
        model(fake, "cheap1", input_cost_per_token=1e-7, output_cost_per_token=2e-7),
        model(fake, "cheap2", input_cost_per_token=1e-7, output_cost_per_token=2e-7),
        routing_strategy="cost-based-routing",
    )
    async with gateway(g) as gw:
        for _ in range(60):
            await gw.complete("hi")
    assert fake.count("dear") == 0
    assert fake.count("cheap1") >= 15 and fake.count("cheap2") >= 15


async def test_cost_based_prices_known_models_and_tries_unpriced_ones_last(
    fake: FakeLLMServer,
) -> None:
    # No prices written: litellm's table prices gpt-4o-mini below gpt-4o; a self-hosted model
    # has no price, so it is tried only after both (never as free, never before a priced one).
    own = {"provider": "self-hosted", "model": "our-llama", "api_base": f"{fake.url}/v1"}
    g = group(
        model(fake, "gpt-4o"),
        own,
        model(fake, "gpt-4o-mini"),
        routing_strategy="cost-based-routing",
        num_retries=2,
        allowed_fails=0,
        cooldown_time=60,
    )
    async with gateway(g) as gw:
        assert {(await gw.complete("hi")).deployment for _ in range(10)} == {"gpt-4o-mini"}
        fake.script("gpt-4o-mini", status=500)
        completion = await gw.complete("hi")
        assert (completion.deployment, completion.attempts) == ("gpt-4o", 2)
        fake.script("gpt-4o", status=500)
        completion = await gw.complete("hi")
        assert (completion.deployment, completion.attempts) == ("our-llama", 2)
    assert fake.count("our-llama") == 1
    # A deployment's own prices win over the table.
    fake.clear()
    g = group(
        model(fake, "gpt-4o", input_cost_per_token=1e-9, output_cost_per_token=1e-9),
        model(fake, "gpt-4o-mini"),
        routing_strategy="cost-based-routing",
    )
    async with gateway(g) as gw:
        assert {(await gw.complete("hi")).deployment for _ in range(10)} == {"gpt-4o"}


async def test_failover_when_a_deployment_returns_500(fake: FakeLLMServer) -> None:
    fake.script("bad", status=500)
    g = group(model(fake, "bad"), model(fake, "good"), num_retries=2, allowed_fails=1000)
    async with gateway(g) as gw:
        results = [await gw.complete("hi") for _ in range(20)]
    assert all(r.deployment == "good" and r.text == "A" for r in results)
    assert all(r.attempts == (2 if r.attempts > 1 else 1) for r in results)
    assert sum(r.attempts for r in results) == 20 + fake.count("bad")
    assert fake.count("bad") > 0


async def cheap_first(fake: FakeLLMServer, *, num_retries: int = 1, **router: Any) -> ModelGroup:
    """`first` is always preferred (cheapest), so tests know where a call goes first."""
    return group(
        model(fake, "first", input_cost_per_token=1e-9),
        model(fake, "second", input_cost_per_token=1e-6),
        routing_strategy="cost-based-routing",
        num_retries=num_retries,
        **router,
    )


async def test_cooldown_after_allowed_fails_and_recovery(fake: FakeLLMServer) -> None:
    fake.script("first", status=500)
    g = await cheap_first(fake, allowed_fails=2, cooldown_time=0.2)
    async with gateway(g) as gw:
        key = gw.deployment_keys["first"]
        for expected in (1, 2):  # tolerated failures: still in rotation
            assert (await gw.complete("hi")).deployment == "second"
            assert fake.count("first") == expected
            assert await gw.store.cooldown_left(key) == 0
        assert (await gw.complete("hi")).attempts == 2  # the third failure cools it down
        assert await gw.store.cooldown_left(key) > 0
        completion = await gw.complete("hi")
        assert (completion.deployment, completion.attempts) == ("second", 1)
        assert fake.count("first") == 3

        fake.clear("first")  # healthy again
        for _ in range(100):
            if await gw.store.cooldown_left(key) == 0:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("cooldown never ended")
        assert (await gw.complete("hi")).deployment == "first"


async def test_429_cools_down_at_once_honouring_retry_after(fake: FakeLLMServer) -> None:
    fake.script("first", status=429, retry_after=30)
    g = await cheap_first(fake, allowed_fails=5, cooldown_time=0.1)
    async with gateway(g) as gw:
        completion = await gw.complete("hi")
        assert (completion.deployment, completion.attempts) == ("second", 2)
        left = await gw.store.cooldown_left(gw.deployment_keys["first"])
        assert 25 < left <= 30  # Retry-After, not the shorter cooldown_time
        assert (await gw.complete("hi")).attempts == 1
    assert fake.count("first") == 1


async def test_timeout_moves_on_to_the_next_deployment(fake: FakeLLMServer) -> None:
    fake.script("first", hang=True)
    g = group(
        model(fake, "first", input_cost_per_token=1e-9, timeout=0.2),
        model(fake, "second", input_cost_per_token=1e-6),
        routing_strategy="cost-based-routing",
        num_retries=1,
    )
    async with gateway(g) as gw:
        completion = await gw.complete("hi")
    assert (completion.deployment, completion.attempts) == ("second", 2)
    assert fake.count("first") == 1


async def test_every_deployment_cooling_down_fails_fast_without_http(fake: FakeLLMServer) -> None:
    fake.script("first", status=503)
    fake.script("second", status=500)
    g = await cheap_first(fake, allowed_fails=0, cooldown_time=60)
    async with gateway(g) as gw:
        with pytest.raises(AttemptsExhausted) as exhausted:
            await gw.complete("hi")
        assert exhausted.value.attempts == 2
        assert "HTTP 500" in str(exhausted.value)
        made = len(fake.requests)
        with pytest.raises(AllDeploymentsCoolingDown) as cooling:
            await gw.complete("hi")
    assert cooling.value.attempts == 0
    assert len(fake.requests) == made


async def test_a_group_of_one_is_never_cooled_down(fake: FakeLLMServer) -> None:
    fake.script("only", status=429, retry_after=0.01)
    g = group(model(fake, "only"), num_retries=2, allowed_fails=0, cooldown_time=60)
    async with gateway(g) as gw:
        with pytest.raises(AttemptsExhausted) as raised:
            await gw.complete("hi")
        assert raised.value.attempts == 3  # retried on the same deployment, after backoff
        assert await gw.store.cooldown_left(gw.deployment_keys["only"]) == 0
        fake.clear("only")
        assert (await gw.complete("hi")).text == "A"
    assert fake.count("only") == 4


async def test_a_400_of_one_deployment_fails_over_and_counts_once_another_answers(
    fake: FakeLLMServer,
) -> None:
    # SPEC §5: a 400 that the others do not return fails over and counts toward the cooldown.
    fake.script("first", status=400)
    g = await cheap_first(fake, num_retries=3, allowed_fails=0, cooldown_time=60)
    async with gateway(g) as gw:
        completion = await gw.complete("hi")
        assert (completion.deployment, completion.attempts) == ("second", 2)
        # another deployment answered the same request: the 400 was first's own
        assert await gw.store.cooldown_left(gw.deployment_keys["first"]) > 0
    assert fake.count("first") == 1


async def test_a_400_every_deployment_returns_is_final_and_counts_nowhere(
    fake: FakeLLMServer,
) -> None:
    fake.script("first", status=400)
    fake.script("second", status=400)
    g = await cheap_first(fake, num_retries=5, allowed_fails=0)
    async with gateway(g) as gw:
        with pytest.raises(RequestRejected) as raised:
            await gw.complete("hi")
        assert raised.value.attempts == 2  # each once, then the request itself is at fault
        for name in ("first", "second"):
            assert await gw.store.cooldown_left(gw.deployment_keys[name]) == 0


async def test_a_400_of_the_only_deployment_is_final(fake: FakeLLMServer) -> None:
    fake.script("only", status=400)
    async with gateway(group(model(fake, "only"), num_retries=3)) as gw:
        with pytest.raises(RequestRejected) as raised:
            await gw.complete("hi")
        assert raised.value.attempts == 1


async def test_401_fails_over_and_counts_towards_cooldown(fake: FakeLLMServer) -> None:
    fake.script("first", status=401)
    g = await cheap_first(fake, allowed_fails=0, cooldown_time=60)
    async with gateway(g) as gw:
        completion = await gw.complete("hi")
        assert (completion.deployment, completion.attempts) == ("second", 2)
        assert (await gw.complete("hi")).attempts == 1  # first is cooling down now
    assert fake.count("first") == 1


async def test_secrets_never_reach_logs_or_errors(
    fake: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    aws_secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzzSECRET"
    redis_password = "hunter2-redis-pass"
    fake.script("first", status=500)
    fake.script("azure-dep", status=429)
    fake.script("anthropic.claude-v2", status=500)
    g = ModelGroup.model_validate(
        {
            "id": "secretive",
            "models": [
                model(fake, "first"),
                {
                    "provider": "azure",
                    "deployment": "azure-dep",
                    "api_base": fake.url,
                    "api_version": "2024-06-01",
                    "api_key": "azure-key-5c1d2e3f4a",
                },
                {
                    "provider": "bedrock",
                    "model": "anthropic.claude-v2",
                    "api_base": fake.url,
                    "aws_access_key_id": "AKIDSECRETACCESS01",
                    "aws_secret_access_key": aws_secret,
                    "aws_region_name": "us-east-1",
                },
                # nothing listens there: a connection error
                {**model(fake, "nowhere"), "api_base": "http://127.0.0.1:9/v1"},
            ],
            "router": {
                "num_retries": 5,
                "allowed_fails": 0,
                "redis_url": f"redis://:{redis_password}@127.0.0.1:9/0",
            },
        }
    )
    errors: list[str] = []
    async with ModelGroupGateway(g, rng=random.Random(1)) as gw:
        for _ in range(3):
            try:
                await gw.complete("hi")
            except Exception as exc:  # noqa: BLE001 - collecting every error text
                errors.append(f"{exc!s} {exc!r} {exc.__cause__!r}")
        answer, call, failed = await ask_router(gw, "hi")
        assert failed and answer is None
        errors.append(repr(gw))
    assert errors
    text = "\n".join(errors) + "\n" + caplog.text + "\n" + call.model_dump_json()
    for secret in (KEY, "azure-key-5c1d2e3f4a", aws_secret, "AKIDSECRETACCESS01", redis_password):
        assert secret not in text
    assert "unreachable" in caplog.text  # the redis warning was logged, without its password


async def test_ask_router_returns_answer_and_call_block(fake: FakeLLMServer) -> None:
    fake.script("gpt-4o-mini", answer="B")
    g = group(model(fake, "gpt-4o-mini"))
    async with gateway(g) as gw:
        answer, call, failed = await ask_router(gw, "I want to chat")
    assert (answer, failed) == ("B", False)
    assert (call.model_group, call.deployment, call.answer, call.attempts) == (
        "router-llm",
        "gpt-4o-mini",
        "B",
        1,
    )
    decision = decide_by_llm(answer, call, failed=failed)
    assert decision.route is Route.NLU and decision.sticky is False


async def test_ask_router_turns_failures_into_nlu_sticky(fake: FakeLLMServer) -> None:
    fake.script("only", status=500)
    g = group(model(fake, "only"), num_retries=1)
    async with gateway(g) as gw:
        answer, call, failed = await ask_router(gw, "hi")
    assert (answer, failed, call.attempts, call.deployment) == (None, True, 2, "only")
    decision = decide_by_llm(answer, call, failed=failed)
    assert (decision.route, decision.sticky, decision.reason) == (
        Route.NLU,
        True,
        Reason.LLM_FAILURE,
    )


async def test_registry_hot_reload_lets_calls_in_flight_finish(fake: FakeLLMServer) -> None:
    fake.script("old", latency=0.3)
    registry = GatewayRegistry({"router-llm": group(model(fake, "old"))})
    old = registry.get("router-llm")
    in_flight = [asyncio.create_task(old.complete("hi")) for _ in range(4)]
    await fake.wait_until(lambda: fake.in_flight["old"] == 4)

    registry.replace({"router-llm": group(model(fake, "new"))})
    new = registry.get("router-llm")
    assert new is not old
    assert (await new.complete("hi")).deployment == "new"
    assert not old.closed  # its calls are still running

    results = await asyncio.gather(*in_flight)
    assert [r.deployment for r in results] == ["old"] * 4
    for _ in range(50):
        if old.closed:
            break
        await asyncio.sleep(0.01)
    assert old.closed
    await registry.close()
    assert new.closed


async def test_registry_keeps_unchanged_groups_and_refuses_broken_ones(
    fake: FakeLLMServer,
) -> None:
    first = group(model(fake, "a"), group_id="one")
    second = group(model(fake, "b"), group_id="two")
    registry = GatewayRegistry({"one": first, "two": second})
    one = registry.get("one")
    broken = ModelGroup.model_validate(
        {"id": "two", "models": [{"provider": "self-hosted", "model": "m"}]}  # no api_base
    )
    with pytest.raises(ValueError, match="api_base"):
        registry.replace({"one": first, "two": broken})
    assert registry.get("two").group == second  # nothing was swapped
    registry.replace({"one": first.model_copy(deep=True)})
    assert registry.get("one") is one
    assert "two" not in registry
    with pytest.raises(KeyError, match="two"):
        registry.get("two")
    await registry.close()


async def test_registry_carries_local_cooldowns_across_a_reload(fake: FakeLLMServer) -> None:
    fake.script("first", status=500)
    g = await cheap_first(fake, allowed_fails=0, cooldown_time=60)
    states: list[GroupState] = []

    def build(gr: ModelGroup, state: GroupState) -> ModelGroupGateway:
        states.append(state)
        return ModelGroupGateway(gr, state=state, rng=random.Random(0))

    registry = GatewayRegistry({"router-llm": g}, factory=build)
    await registry.get("router-llm").complete("hi")  # first fails and cools down
    changed = g.model_copy(update={"router": g.settings.model_copy(update={"num_retries": 2})})
    registry.replace({"router-llm": changed})
    assert (await registry.get("router-llm").complete("hi")).attempts == 1
    assert fake.count("first") == 1
    assert states[0] is states[1]
    await registry.close()


async def test_a_deployment_behind_http_proxy_goes_through_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # HTTP(S)_PROXY is honoured (read once, as the openai SDK does): the request goes to the
    # proxy in absolute form; deployments without a proxy use the gateway's own client.
    seen: list[bytes] = []
    body = (
        b'{"choices":[{"index":0,"message":{"role":"assistant","content":"C"}}],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":1}}'
    )

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        seen.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
    g = group(
        {"provider": "openai", "model": "m", "api_base": "http://llm.invalid/v1", "api_key": KEY}
    )
    try:
        async with gateway(g) as gw:
            completion = await gw.complete("hi")
    finally:
        server.close()
    assert completion.text == "C"
    assert seen[0].startswith(b"POST http://llm.invalid/v1/chat/completions HTTP/1.1\r\n")
    assert f"Authorization: Bearer {KEY}".encode() in seen[0]


async def test_netrc_credentials_for_a_deployment_without_a_key(
    fake: FakeLLMServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login router password s3cret-netrc\n")
    monkeypatch.setenv("NETRC", str(netrc))
    fake.script("vllm", answer="B")
    g = group({"provider": "self-hosted", "model": "vllm", "api_base": f"{fake.url}/v1"})
    async with gateway(g) as gw:
        assert (await gw.complete("hi")).text == "B"
    assert fake.requests[-1].headers["authorization"] == "Basic cm91dGVyOnMzY3JldC1uZXRyYw=="


async def test_a_reload_keeps_in_flight_calls_on_the_fallbacks_they_were_linked_to(
    fake: FakeLLMServer,
) -> None:
    # A falls back to B; B is changed by a reload while a call of A is still in flight: that call
    # falls back to the old B, new calls to the new one. A itself is rebuilt (its fallback
    # changed), an unchanged group without changed fallbacks is kept.
    fake.script("a", latency=0.2, status=500)
    primary = ModelGroup.model_validate(
        {
            "id": "A",
            "models": [model(fake, "a")],
            "router": {"num_retries": 0, "fallbacks": ["B"]},
        }
    )
    registry = GatewayRegistry(
        {
            "A": primary,
            "B": group(model(fake, "b-old"), group_id="B"),
            "C": group(model(fake, "c"), group_id="C"),
        }
    )
    kept = registry.get("C")
    in_flight = asyncio.create_task(registry.get("A").complete("hi"))
    await fake.wait_until(lambda: fake.in_flight["a"] == 1)
    registry.replace(
        {"A": primary, "B": group(model(fake, "b-new"), group_id="B"), "C": kept.group}
    )
    assert registry.get("C") is kept
    fake.clear("a")
    fake.script("a", status=500)
    completion = await in_flight
    assert (completion.group, completion.deployment, completion.attempts) == ("B", "b-old", 2)
    completion = await registry.get("A").complete("hi")
    assert (completion.group, completion.deployment) == ("B", "b-new")
    await registry.close()


async def test_a_reloaded_routing_strategy_args_applies_to_the_kept_history(
    fake: FakeLLMServer,
) -> None:
    # The reload bug: a changed routing_strategy_args was silently not applied (the
    # group's latency window kept the first file's size).
    def latency_group(size: int) -> ModelGroup:
        return group(
            model(fake, "a"),
            routing_strategy="latency-based-routing",
            routing_strategy_args={"max_latency_list_size": size},
        )

    states: list[GroupState] = []

    def build(gr: ModelGroup, state: GroupState) -> ModelGroupGateway:
        states.append(state)
        return ModelGroupGateway(gr, state=state)

    registry = GatewayRegistry({"router-llm": latency_group(10)}, factory=build)
    window = states[0].latency
    key = registry.get("router-llm").deployment_keys["a"]
    for seconds in (1.0, 2.0, 3.0):
        window.record(key, seconds)
    assert window.recent(key) == 2.0
    registry.replace({"router-llm": latency_group(1)})
    assert states[1] is states[0]  # the same history …
    assert window.recent(key) == 3.0  # … under the new window: only the newest sample
    await registry.close()
