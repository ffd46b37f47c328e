"""The `coexistence-router` command as users run it: real processes, signals, files, broker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.kafka_support import TopicReader, produce, routed, user_message
from tests.worker_processes import COMMAND, WorkerProcess
from worker.config.examples import bundled_example
from worker.fake_llm import FakeLLMServer
from worker.kafka.broker import free_loopback_port

SECRET = "sk-live-DO-NOT-LOG-4f9a"


def endpoints_yaml(tag: str, model: str, *, api_key: str = "${ROUTER_LLM_KEY}") -> str:
    return f"""
kafka:
  group_id: cli-{tag}
  partitions: 2
  session_timeout: 1
  commit_interval_ms: 100
  shutdown_timeout: 5
  topics:
    input: in-{tag}
    calm: calm-{tag}
    nlu: nlu-{tag}
    sessions: sessions-{tag}
    dlq: dlq-{tag}
model_groups:
  - id: router-llm
    models:
      - provider: openai
        model: {model}
        api_base: ${{FAKE_LLM_BASE}}
        api_key: {api_key}
  - id: command-generator-llm
    models:
      - provider: openai
        model: gpt-4o
        api_base: ${{FAKE_LLM_BASE}}
        api_key: ${{ROUTER_LLM_KEY}}
"""


async def start_cli(*args: str, env: dict[str, str]) -> WorkerProcess:
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return WorkerProcess("cli", process)


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *COMMAND, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(120):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


def environment(bootstrap: str, llm_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        FAKE_LLM_BASE=f"{llm_url}/v1",
        ROUTER_LLM_KEY=SECRET,
        PYTHONUNBUFFERED="1",
        COEXISTENCE_ROUTER_HTTP_PORT="0",  # no HTTP server: the ops tests cover it
    )
    return env


async def test_hot_reload_sigterm_and_no_secret_in_logs(
    bootstrap: str, llm: FakeLLMServer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(endpoints_yaml(tag, "alpha"))
    example = bundled_example("llm")
    env = environment(bootstrap, llm.url)
    llm.script("alpha", status=401)  # a rejected key: errors are logged, the key must not be
    worker = await start_cli(
        "--log-level", "DEBUG",  # the secret must stay out of debug logs too
        "run",
        "--config", str(example.config),
        "--endpoints", str(endpoints),
        "--flows", str(example.flows),
        env=env,
    )  # fmt: skip
    try:
        await worker.wait_for_line("assigned input partitions")
        async with TopicReader(bootstrap, f"calm-{tag}", f"nlu-{tag}") as reader:
            await produce(bootstrap, f"in-{tag}", [user_message("r0", "hello")])
            await reader.wait_for(1)
            llm.clear("alpha")

            endpoints.write_text(endpoints_yaml(tag, "beta"))
            worker.signal(signal.SIGHUP)
            await worker.wait_for_line("reloaded .*endpoints.yml")
            await produce(bootstrap, f"in-{tag}", [user_message("r1", "hello")])
            await reader.wait_for(2)

            endpoints.write_text(endpoints_yaml(tag, "gamma", api_key="sk-literal-key"))
            worker.signal(signal.SIGHUP)
            await worker.wait_for_line("reload refused.*api_key")
            await produce(bootstrap, f"in-{tag}", [user_message("r2", "hello")])
            records = await reader.wait_for(3)
    finally:
        code = await worker.stop()
    deployments = {routed(r)["message"]["sender_id"]: routed(r)["routing"]["llm"] for r in records}
    assert deployments["r0"]["deployment"] == "alpha"
    assert routed(records[0])["routing"]["reason"] == "llm_failure"
    assert deployments["r1"]["deployment"] == "beta"  # the reloaded group
    assert deployments["r2"]["deployment"] == "beta"  # the invalid file was refused
    assert llm.count("gamma") == 0
    assert code == 0
    assert "draining in-flight messages" in worker.output
    assert SECRET not in worker.output
    assert "sk-literal-key" not in worker.output


async def test_run_refuses_a_bad_config_before_touching_kafka(
    llm: FakeLLMServer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(endpoints_yaml(tag, "alpha"))
    example = bundled_example("llm")
    env = environment(f"127.0.0.1:{free_loopback_port()}", llm.url)
    del env["ROUTER_LLM_KEY"]
    code, _, stderr = await run_cli(
        "run", "--config", str(example.config), "--endpoints", str(endpoints), env=env
    )
    assert code == 1
    assert "endpoints.yml: model_groups[0] (id router-llm).models[0].api_key" in stderr
    assert "ROUTER_LLM_KEY" in stderr
    assert "refusing to start" in stderr
    assert "unavailable" not in stderr  # it never tried to reach the (absent) broker


async def test_validate_lists_every_problem_across_environments(
    llm: FakeLLMServer, tmp_path: Path
) -> None:
    example = bundled_example("llm")
    env = environment("127.0.0.1:9", llm.url)
    dev = tmp_path / "endpoints.dev.yml"
    prod = tmp_path / "endpoints.prod.yml"
    dev.write_text(endpoints_yaml("dev", "alpha"))
    prod.write_text(endpoints_yaml("prod", "alpha"))
    code, stdout, _ = await run_cli(
        "validate", "--config", str(example.config),
        "--endpoints", str(dev), "--endpoints", str(prod), env=env,
    )  # fmt: skip
    assert code == 0, stdout
    assert "valid" in stdout
    prod.write_text(
        endpoints_yaml("prod", "alpha").replace("id: router-llm", "id: other-llm")
        + "\n  - id: broken\n    models: []\n"
    )
    code, _, stderr = await run_cli(
        "validate", "--config", str(example.config),
        "--endpoints", str(dev), "--endpoints", str(prod), env=env,
    )  # fmt: skip
    assert code == 1
    problems = stderr.splitlines()
    assert "5 problem(s) found" in problems
    assert any(
        "pipeline[0] (LLMBasedRouter).llm.model_group" in p and "endpoints.prod.yml" in p
        for p in problems
    ), stderr
    assert any("(id broken).models" in p for p in problems), stderr
    assert any(
        p.endswith(f"endpoints.dev.yml: model_groups: lacks group id other-llm, defined in {prod}")
        for p in problems
    ), stderr


async def test_demo_shows_both_routers() -> None:
    env = dict(os.environ)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    code, stdout, stderr = await run_cli("demo", env=env)
    assert code == 0, stderr
    assert "IntentBasedRouter" in stdout and "LLMBasedRouter" in stdout
    rows = [line.split() for line in stdout.splitlines()]
    assert (rows[[r[:1] for r in rows].index(["cara"])][:9]) == [
        "cara",
        "how",
        "much",
        "money",
        "is",
        "left?",
        "how_much_money",
        "calm",
        "yes",
    ]
    assert any(r[:1] == ["gil"] and "sticky_session" in r for r in rows)
    assert any(r[:1] == ["jo"] and "llm_invalid_answer" in r for r in rows)
    # Where each worker served its metrics, and what they counted (read back from /metrics):
    # as many decisions as its table has rows.
    blocks = stdout.split("\n\n")
    for router, title in (("intent", "IntentBasedRouter"), ("llm", "LLMBasedRouter")):
        [at] = [n for n, block in enumerate(blocks) if block.startswith(f"{router} worker:")]
        served, counts = blocks[at].splitlines()
        assert re.fullmatch(
            rf"{router} worker: metrics at http://127\.0\.0\.1:\d+/metrics \(also /healthz, "
            r"/readyz\)",
            served,
        ), served
        counted = {k: int(v) for k, v in (c.rsplit(" ", 1) for c in counts.strip().split(", "))}
        table = blocks[at + 1].splitlines()
        assert table[0].startswith(title)
        decided = counted.get("calm decisions", 0) + counted.get("nlu decisions", 0)
        assert decided == len(table) - 3  # title, header, rule
        if router == "llm":
            assert counted["LLM attempts"] == 6  # the turns routed by the LLM, one attempt each
