"""`Retry-After` in a group of one deployment (SPEC §5: never cooled down, its 429 retried on
it): the call waits as long as the deployment asks, within the call's own deadline, and ends at
once when asked to wait past it. The waits are the gateway's injected sleep, recorded, so no
test waits for real; the deployment is the fake LLM, answering 429 with `Retry-After` (and
`retry-after-ms`) until the sleep is over."""

from __future__ import annotations

import random
from typing import Any

import pytest

from worker.fake_llm import FakeLLMServer
from worker.llm.errors import AllDeploymentsCoolingDown, AttemptsExhausted
from worker.llm.gateway import ModelGroupGateway
from worker.llm.model_group import ModelGroup

KEY = "sk-retry-after-test-5e1d"


def one(fake: FakeLLMServer, *, router: bool, call_timeout: float | None) -> ModelGroup:
    model = {"provider": "openai", "model": "only", "api_base": f"{fake.url}/v1", "api_key": KEY}
    return ModelGroup.model_validate(
        {
            "id": "g",
            "models": [model],
            "router": {"num_retries": 2} if router else None,
            "call_timeout": call_timeout,
        }
    )


class Waits:
    """The gateway's sleep: records each wait, and the deployment recovers meanwhile."""

    def __init__(self, fake: FakeLLMServer) -> None:
        self.fake = fake
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.fake.script("only", answer="C")


async def call(group: ModelGroup, waits: Waits) -> Any:
    async with ModelGroupGateway(group, rng=random.Random(0), sleep=waits) as gateway:
        return await gateway.complete("hi")


@pytest.mark.parametrize("router", [True, False])
@pytest.mark.parametrize(("call_timeout", "retry_after"), [(300.0, 42.0), (None, 7.5)])
async def test_a_group_of_one_waits_as_long_as_retry_after_asks(
    fake: FakeLLMServer, router: bool, call_timeout: float | None, retry_after: float
) -> None:
    fake.script("only", status=429, retry_after=retry_after)
    waits = Waits(fake)
    completion = await call(one(fake, router=router, call_timeout=call_timeout), waits)
    assert (completion.text, completion.attempts) == ("C", 2)
    # The whole Retry-After (the backoff of a group of several is at most 1 s).
    assert waits.slept == [retry_after]
    assert fake.count("only") == 2


async def test_a_retry_after_past_the_call_deadline_ends_the_call_at_once(
    fake: FakeLLMServer,
) -> None:
    fake.script("only", status=429, retry_after=120)
    waits = Waits(fake)
    with pytest.raises(AttemptsExhausted) as raised:
        await call(one(fake, router=True, call_timeout=30.0), waits)
    assert "asks to wait 120 s (Retry-After), past the group's call timeout of 30 s" in str(
        raised.value
    )
    assert waits.slept == [] and fake.count("only") == 1


async def test_without_a_call_deadline_a_call_waits_at_most_a_minute(fake: FakeLLMServer) -> None:
    # litellm's _calculate_retry_after honours a Retry-After of up to 60 s (1.69.3-1.101.0).
    fake.script("only", status=429, retry_after=90)
    waits = Waits(fake)
    with pytest.raises(AttemptsExhausted) as raised:
        await call(one(fake, router=False, call_timeout=None), waits)
    assert "asks to wait 90 s (Retry-After), longer than" in str(raised.value)
    assert waits.slept == [] and fake.count("only") == 1


async def test_a_group_of_several_moves_on_instead_of_waiting(fake: FakeLLMServer) -> None:
    for name in ("first", "second"):
        fake.script(name, status=429, retry_after=120)
    models = [
        {"provider": "openai", "model": name, "api_base": f"{fake.url}/v1", "api_key": KEY}
        for name in ("first", "second")
    ]
    group = ModelGroup.model_validate(
        {"id": "g", "models": models, "router": {"num_retries": 3}, "call_timeout": 300.0}
    )
    waits = Waits(fake)
    async with ModelGroupGateway(group, rng=random.Random(0), sleep=waits) as gateway:
        # Each 429 cools its deployment down for its Retry-After; with both cooling, the call
        # fails at once (then fallbacks) rather than waiting two minutes.
        with pytest.raises(AllDeploymentsCoolingDown):
            await gateway.complete("hi")
    assert waits.slept == []
    assert fake.count("first") == fake.count("second") == 1
