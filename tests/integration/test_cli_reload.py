"""SIGHUP on a real `coexistence-router run`: model groups, flows, the domain and the prompt
reload whole; a change of the router in config.yml, of `kafka:` or of the domain's idle expiry is
refused with a log line and the running configuration keeps routing (never half-applied)."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

from tests.integration.test_cli import start_cli
from tests.kafka_support import TopicReader, produce, routed, user_message
from worker.fake_llm import FakeLLMServer

KEY = "sk-reload-test-DO-NOT-LOG-71b2"


def config_yml(group: str, prompt: str = "prompt.jinja2") -> str:
    return json.dumps(
        {
            "recipe": "default.v1",
            "pipeline": [
                {
                    "name": "LLMBasedRouter",
                    "calm_entry": {"sticky": "handles money transfers"},
                    "llm": {"model_group": group},
                    "prompt": prompt,
                }
            ],
        }
    )


def endpoints_yml(tag: str, deployment: str, *, group_id: str | None = None) -> str:
    def group(group_id: str, model: str) -> str:
        return (
            f"  - id: {group_id}\n    models:\n      - provider: openai\n        model: {model}\n"
            "        api_base: ${FAKE_LLM_BASE}\n        api_key: ${ROUTER_LLM_KEY}\n"
        )

    return (
        f"kafka:\n  group_id: {group_id or f'reload-{tag}'}\n  partitions: 2\n"
        "  session_timeout: 1\n  commit_interval_ms: 100\n  shutdown_timeout: 5\n"
        f"  topics: {{input: in-{tag}, calm: calm-{tag}, nlu: nlu-{tag}, sessions: s-{tag}, "
        f"dlq: dlq-{tag}}}\n"
        "model_groups:\n" + group("router-llm", deployment) + group("other-llm", "other")
    )


def domain_yml(*intents: str, expiration_minutes: int = 60) -> str:
    # A `/name` is an intent payload only when the domain has the intent.
    return json.dumps(
        {
            "intents": list(intents),
            "slots": {"route_session_to_calm": {"type": "bool", "mappings": [{"type": "custom"}]}},
            # Without carry-over Rasa drops the routing at a session expiry: the idle expiry.
            "session_config": {
                "session_expiration_time": expiration_minutes,
                "carry_over_slots_to_new_session": False,
            },
        }
    )


def flows_yml(*intents: str) -> str:
    flows: dict[str, Any] = {
        f"flow_{intent}": {
            "description": intent,
            "nlu_trigger": [{"intent": intent}],
            "steps": [{"action": f"action_{intent}"}],
        }
        for intent in intents
    }
    return json.dumps({"flows": flows or {"noop": {"description": "x", "steps": []}}})


async def test_sighup_applies_groups_flows_domain_and_prompt_and_refuses_what_is_not_live(
    bootstrap: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    names = ("config.yml", "endpoints.yml", "flows.yml", "domain.yml")
    files = {name: tmp_path / name for name in names}
    files["config.yml"].write_text(config_yml("router-llm"))
    files["endpoints.yml"].write_text(endpoints_yml(tag, "alpha"))
    files["flows.yml"].write_text(flows_yml("transfer_money"))
    files["domain.yml"].write_text(domain_yml("transfer_money"))
    (tmp_path / "prompt.jinja2").write_text("first prompt: {{ user_message }}")
    env = dict(os.environ)
    async with FakeLLMServer() as llm:
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            FAKE_LLM_BASE=f"{llm.url}/v1",
            ROUTER_LLM_KEY=KEY,
            PYTHONUNBUFFERED="1",
        )
        worker = await start_cli(
            "run",
            "--config", str(files["config.yml"]),
            "--endpoints", str(files["endpoints.yml"]),
            "--flows", str(files["flows.yml"]),
            "--domain", str(files["domain.yml"]),
            env=env,
        )  # fmt: skip
        worker_cwd_prompt = tmp_path / "prompt.jinja2"
        try:
            await worker.wait_for_line("assigned input partitions")
            async with TopicReader(bootstrap, f"calm-{tag}", f"nlu-{tag}") as reader:

                async def route(sender: str, text: str, count: int) -> dict[str, Any]:
                    await produce(bootstrap, f"in-{tag}", [user_message(sender, text)])
                    routing: dict[str, Any] = routed((await reader.wait_for(count))[-1])["routing"]
                    return routing

                assert (await route("r0", "hello", 1))["llm"]["deployment"] == "alpha"

                # A router change (its model group) cannot be applied live: refused, whole.
                files["config.yml"].write_text(config_yml("other-llm"))
                files["endpoints.yml"].write_text(endpoints_yml(tag, "beta"))
                worker.signal(signal.SIGHUP)
                await worker.wait_for_line(
                    "reload refused, keeping the running configuration: the router in .*"
                    "config.yml changed"
                )
                after_refusal = await route("r1", "hello", 2)
                assert (after_refusal["reason"], after_refusal["llm"]["model_group"]) == (
                    "llm_answer",
                    "router-llm",
                )
                assert after_refusal["llm"]["deployment"] == "alpha"  # not beta: nothing applied

                # Groups, flows, the domain and the prompt's text reload together.
                files["config.yml"].write_text(config_yml("router-llm"))
                files["flows.yml"].write_text(flows_yml("transfer_money", "block_card"))
                files["domain.yml"].write_text(domain_yml("transfer_money", "block_card"))
                worker_cwd_prompt.write_text("second prompt: {{ user_message }}")
                worker.signal(signal.SIGHUP)
                await worker.wait_for_line("reloaded .*endpoints.yml")
                applied = await route("r2", "hello", 3)
                assert applied["llm"]["deployment"] == "beta"
                assert llm.requests[-1].body["messages"][0]["content"] == "second prompt: hello"
                # The new flow's trigger, a payload only because the new domain has the intent.
                payload = await route("r3", "/block_card", 4)
                assert (payload["route"], payload["reason"]) == ("calm", "intent_payload")

                # The idle expiry (the domain's session_config) needs a restart: refused, whole.
                files["domain.yml"].write_text(
                    domain_yml("transfer_money", "block_card", "greet", expiration_minutes=30)
                )
                worker.signal(signal.SIGHUP)
                await worker.wait_for_line("reload refused.*session_config in .*domain.yml")
                text = await route("r5", "/greet", 5)  # the refused domain's intent: text
                assert (text["reason"], text["llm"]["deployment"]) == ("llm_answer", "beta")
                files["domain.yml"].write_text(domain_yml("transfer_money", "block_card"))

                # A kafka: change needs a restart: refused, whole.
                files["endpoints.yml"].write_text(
                    endpoints_yml(tag, "gamma", group_id=f"moved-{tag}")
                )
                worker.signal(signal.SIGHUP)
                await worker.wait_for_line("reload refused.*kafka: in .*endpoints.yml changed")
                assert (await route("r4", "hello", 6))["llm"]["deployment"] == "beta"
        finally:
            code = await worker.stop()
    assert code == 0
    assert llm.count("other") == 0 and llm.count("gamma") == 0
    assert KEY not in worker.output
