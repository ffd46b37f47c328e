"""SPEC §5 failure semantics through the real worker (real broker, the fake LLM over HTTP):
in a group of several deployments one bad deployment never turns a sender NLU sticky, and a
group that is down hands its calls to its `fallbacks`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_intent_routing import make_settings
from tests.integration.test_llm_routing import ROUTER, route
from tests.integration.test_llm_routing import llm as llm  # noqa: F401 - the fixture
from tests.kafka_support import TopicReader, produce, routed, running_worker, user_message
from worker.config.endpoints import load_endpoints
from worker.fake_llm import FakeLLMServer
from worker.llm.gateway import GatewayRegistry
from worker.llm.model_group import ModelGroup
from worker.routing.rules import Assistant
from worker.runtime.coexistence_router import CoexistenceRouter

KEY = "sk-failover-test-0c1d"


def three(base: str, **router: Any) -> ModelGroup:
    return ModelGroup.model_validate(
        {
            "id": "router-llm",
            "models": [
                {"provider": "openai", "model": m, "api_base": f"{base}/v1", "api_key": KEY}
                for m in ("bad", "good-1", "good-2")
            ],
            # litellm's defaults: num_retries 2, allowed_fails 3, cooldown 5 s
            "router": {"routing_strategy": "simple-shuffle", **router},
        }
    )


async def route_in_waves(
    bootstrap: str, registry: GatewayRegistry, waves: list[list[str]]
) -> list[list[dict[str, Any]]]:
    """Route each wave of senders (one message each) after the previous one was published."""
    settings = make_settings(bootstrap)
    router = CoexistenceRouter(Assistant(ROUTER), gateways=registry, model_group="router-llm")
    results: list[list[dict[str, Any]]] = []
    topics = settings.topics
    try:
        async with (
            running_worker(settings, router),
            TopicReader(bootstrap, topics.calm, topics.nlu) as reader,
        ):
            total = 0
            for wave in waves:
                await produce(bootstrap, topics.input, [user_message(s, "money") for s in wave])
                total += len(wave)
                records = await reader.wait_for(total)
                results.append([routed(r) | {"topic": r.topic} for r in records[-len(wave) :]])
    finally:
        await registry.close()
    return results


@pytest.mark.parametrize("status", [401, 403, 404, 400, 500, 503, 429])
async def test_one_bad_deployment_of_three_never_fails_a_routing(
    bootstrap: str, llm: FakeLLMServer, status: int
) -> None:
    llm.script("bad", status=status)
    registry = GatewayRegistry({"router-llm": three(llm.url)})
    # The shuffle must pick the bad deployment more than allowed_fails (3) times in the first
    # wave for it to cool down: with 60 picks at a third each, it fails to about once in 10^7
    # (with 24 it was about once in 50).
    first, second = await route_in_waves(
        bootstrap,
        registry,
        [[f"s{status}-{i}" for i in range(60)], [f"t{status}-{i}" for i in range(12)]],
    )
    for result in first + second:
        assert result["routing"]["reason"] == "llm_answer"  # zero llm_failure routes
        assert result["routing"]["llm"]["deployment"] != "bad"
        assert "calm-inbox" in result["topic"]
    # The failures counted towards its cooldown (allowed_fails 3 within the minute, at once on
    # 429; a 400 once another deployment answered the same request): in the second wave it is
    # cooling down and gets no call.
    before = llm.count("bad")
    assert before >= 1
    assert all(r["routing"]["llm"]["attempts"] == 1 for r in second)
    assert llm.count("bad") == before


def groups_file(tmp_path: Path, base: str) -> Path:
    path = tmp_path / "endpoints.yml"
    path.write_text(
        f"""
model_groups:
  - id: router-llm
    models:
      - {{provider: openai, model: primary-1, api_base: "{base}/v1", api_key: "${{KEY}}"}}
      - {{provider: openai, model: primary-2, api_base: "{base}/v1", api_key: "${{KEY}}"}}
    router:
      num_retries: 1
      allowed_fails: 0
      cooldown_time: 60
      fallbacks:
        - router-llm: [backup-llm]
  - id: backup-llm
    models:
      - {{provider: openai, model: backup, api_base: "{base}/v1", api_key: "${{KEY}}"}}
"""
    )
    return path


async def test_fallbacks_to_a_second_group_when_the_first_is_all_down(
    bootstrap: str, llm: FakeLLMServer, tmp_path: Path
) -> None:
    for model in ("primary-1", "primary-2"):
        llm.script(model, status=503)
    endpoints = load_endpoints(groups_file(tmp_path, llm.url), {"KEY": KEY})
    groups = endpoints.model_groups
    registry = GatewayRegistry(
        {"router-llm": groups["router-llm"], "backup-llm": groups["backup-llm"]}
    )
    first, rest = await route_in_waves(
        bootstrap, registry, [["fb-first"], [f"fb-{i}" for i in range(9)]]
    )
    for result in first + rest:
        assert result["routing"]["reason"] == "llm_answer"
        call = result["routing"]["llm"]
        assert (call["model_group"], call["deployment"]) == ("backup-llm", "backup")
    # both primaries (first try + one retry), then the backup
    assert first[0]["routing"]["llm"]["attempts"] == 3
    # both primaries cooled down after their first failure: every later call fails fast, with
    # no request, to the backup
    assert llm.count("primary-1") + llm.count("primary-2") == 2
    assert all(r["routing"]["llm"]["attempts"] == 1 for r in rest)
    assert llm.count("backup") == 10


async def test_the_whole_chain_down_is_an_llm_failure_naming_the_last_group(
    bootstrap: str, llm: FakeLLMServer, tmp_path: Path
) -> None:
    for model in ("primary-1", "primary-2", "backup"):
        llm.script(model, status=500)
    groups = load_endpoints(groups_file(tmp_path, llm.url), {"KEY": KEY}).model_groups
    registry = GatewayRegistry(dict(groups))
    results = await route(bootstrap, registry, [user_message("all-down", "money please")], 1)
    [result] = results
    assert (result["topic"], result["routing"]["reason"]) == ("nlu-inbox", "llm_failure")
    call = result["routing"]["llm"]
    assert call["model_group"] == "backup-llm" and call["attempts"] == 2 + 3
