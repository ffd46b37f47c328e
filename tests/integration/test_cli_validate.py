"""`coexistence-router validate` on model groups Rasa 3.11.20 refuses: one line per problem,
naming file, group and key, every problem of the file in one run; warnings for what Rasa accepts
but that behaves surprisingly."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.integration.test_cli import run_cli
from worker.config.app_config import NO_DOMAIN_WARNING

ENDPOINTS = """
model_groups:
  - id: router-llm
    models:
      - provider: openai
        model: gpt-4o-mini
        api_key: sk-literal-DO-NOT-PRINT
        stream: true
      - provider: openai
        model_name: gpt-4o
        api_key: ${OPENAI_API_KEY}
        rpm: 600
      - provider: anthropic
        model_name: claude-3-5-haiku
        weight: 2
    router:
      routing_strategy: simple-shuffle
      redis_db: 1
      fallbacks:
        - router-llm: [backup-llm]
  - id: other
    models:
      - provider: self-hosted
        model: m
        api_base: http://vllm:8000/v1
        use_chat_completions_endpoint: false
    router:
      num_retries: 1
"""


def router_config(tmp_path: Path) -> Path:
    """config.yml with an LLMBasedRouter of group router-llm."""
    config = tmp_path / "config.yml"
    router = {"name": "LLMBasedRouter", "calm_entry": {"sticky": "money"}}
    config.write_text(json.dumps({"pipeline": [router | {"llm": {"model_group": "router-llm"}}]}))
    return config


async def test_validate_prints_one_line_per_problem_and_the_warnings(tmp_path: Path) -> None:
    config = router_config(tmp_path)
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(ENDPOINTS)
    env = {**os.environ, "OPENAI_API_KEY": "sk-env-DO-NOT-PRINT"}
    code, _, stderr = await run_cli(
        "validate", "--config", str(config), "--endpoints", str(endpoints), env=env
    )
    assert code == 1
    lines = stderr.splitlines()
    *named, summary = [line for line in lines if not line.startswith("warning: ")]
    assert all(line.startswith(f"{endpoints}: ") for line in named)
    problems = [line.split(": ", 1)[1] for line in named] + [summary]
    group = "model_groups[0] (id router-llm)"
    assert problems == [
        f"{group}.models[0].api_key: must be written as ${{VAR}}, a literal secret is refused",
        f"{group}.models[0].stream: is not allowed (Rasa's OpenAIClientConfig refuses it)",
        f"{group}.models[2].model_name: is not read for this provider: write model instead",
        f"{group}.router.redis_db: unknown router key: Rasa passes the router block to "
        "litellm's Router (litellm 1.69.3), which has no such setting",
        "model_groups[1] (id other).models[0].use_chat_completions_endpoint: is a router "
        "setting: Rasa refuses it in a model of a group with a router; write it under the "
        "group's router:",
        f"{group}.router.fallbacks: falls back to model group backup-llm, which is not defined "
        f"in {endpoints}",
        "6 problem(s) found",
    ]
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert warnings == [
        f"warning: {NO_DOMAIN_WARNING}",
        f"warning: {endpoints}: {group}.models[1].model_name: is deprecated (removed in Rasa "
        "4.0.0): write model instead",
    ]
    assert "DO-NOT-PRINT" not in stderr


async def test_rasa_version_selects_the_endpoints_rules_of_that_release(tmp_path: Path) -> None:
    # One version for everything: `--rasa-version 3.21.0` also reads model_groups as 3.21.0 does
    # (shared/providers/model_group_validation.py: a secret must be exactly `${VAR}`), while
    # 3.20.5 (engine/validation.py) accepts a value that starts with the reference.
    config = router_config(tmp_path)
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(
        "model_groups:\n  - id: router-llm\n    models:\n      - provider: openai\n"
        "        model: gpt-4o-mini\n        api_key: ${OPENAI_API_KEY}x\n"
    )
    env = {**os.environ, "OPENAI_API_KEY": "sk-env-DO-NOT-PRINT"}
    args = ("validate", "--config", str(config), "--endpoints", str(endpoints))
    code, stdout, _ = await run_cli(*args, "--rasa-version", "3.20.5", env=env)
    assert (code, stdout.strip()) == (0, f"valid for Rasa Pro 3.20.5: {config} with {endpoints}")
    code, _, stderr = await run_cli(*args, "--rasa-version", "3.21.0", env=env)
    assert code == 1
    assert (
        f"{endpoints}: model_groups[0] (id router-llm).models[0].api_key: must be exactly "
        "${VAR}: Rasa 3.21 refuses text around the reference"
    ) in stderr.splitlines()
    assert "DO-NOT-PRINT" not in stderr
