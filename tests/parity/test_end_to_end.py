"""A sample of the parity cases end to end: `coexistence-router run --domain --flows
--rasa-version` as a process, the real broker, the routed records read back; and the command
line refusing what Rasa refuses."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

import orjson

from tests.integration.test_cli import run_cli
from tests.kafka_support import Outgoing, TopicReader, produce, user_message
from tests.parity.assistant import DOMAIN, FLOWS
from tests.worker_processes import (
    COMMAND,
    Bundle,
    Outputs,
    WorkerProcess,
    value,
    wait_for_balanced_group,
    write_bundle,
)

CONFIG = """
pipeline:
  - name: IntentBasedRouter
    nlu_entry: {sticky: [handoff], non_sticky: [chitchat]}
    calm_entry: {sticky: [open_account]}
"""


def assistant_bundle(directory: Path, bootstrap: str, domain: str = DOMAIN) -> Bundle:
    bundle = write_bundle(directory, bootstrap)
    bundle.config.write_text(CONFIG)
    bundle.flows.write_text(FLOWS)
    (directory / "domain.yml").write_text(domain)
    return bundle


async def start(bundle: Bundle, *extra: str) -> WorkerProcess:
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "run",
        "--config", str(bundle.config),
        "--endpoints", str(bundle.endpoints),
        "--flows", str(bundle.flows),
        "--domain", str(bundle.directory / "domain.yml"),
        *extra,
        env=bundle.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    return WorkerProcess("parity", process)


def said(sender: str, text: str, intent: str | None = None, **parse: Any) -> Outgoing:
    record = user_message(sender, text, message_id=f"{sender}-{uuid.uuid4().hex[:6]}")
    if intent is None:
        return record
    assert record.value is not None
    body = orjson.loads(record.value)
    body["parse_data"] = {"intent": {"name": intent, "confidence": 0.95}, **parse}
    return Outgoing(orjson.dumps(body), record.key)


async def test_parity_cases_through_kafka(bootstrap: str, tmp_path: Path) -> None:
    bundle = assistant_bundle(tmp_path, bootstrap)
    worker = await start(bundle, "--rasa-version", "3.11.20")
    sent = [
        said("pattern", "start over", "restart"),  # pattern_restart's trigger: CALM
        said("payload-slot", '/inform{"city": "Berlin"}'),  # a collected slot: CALM
        said("nlu-entity", "Berlin", "inform", entities=[{"entity": "city", "value": "Berlin"}]),
        said("set-slots", "/SetSlots(note=hi)"),  # NLU, the routing stays unset ...
        said("set-slots", "/block_card@0.85"),  # ... so the next payload is routed afresh
        said("unknown-name", "/help_me", "transfer_money"),  # text for the router
        said("bad-confidence", "/block_card@1.2.3"),  # confidence 0.0 < 0.8
    ]
    try:
        await wait_for_balanced_group([worker], 6)
        async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox:
            await produce(bootstrap, bundle.topics.input, sent)
            records = await inbox.wait_for(len(sent))
        assert await worker.stop() == 0
    finally:
        worker.signal(signal.SIGKILL)
    decided = {}
    for [out] in Outputs(records).by_id.values():
        routing = out["routing"]
        decided[out["message"]["message_id"].rsplit("-", 1)[0], out["message"]["text"]] = (
            routing["route"],
            routing["sticky"],
            routing["reason"],
        )
    assert decided == {
        ("pattern", "start over"): ("calm", True, "nlu_trigger"),
        ("payload-slot", '/inform{"city": "Berlin"}'): ("calm", True, "intent_payload"),
        ("nlu-entity", "Berlin"): ("nlu", True, "unlisted_intent"),
        ("set-slots", "/SetSlots(note=hi)"): ("nlu", False, "intent_payload"),
        ("set-slots", "/block_card@0.85"): ("calm", True, "intent_payload"),
        ("unknown-name", "/help_me"): ("calm", True, "nlu_trigger"),
        ("bad-confidence", "/block_card@1.2.3"): ("nlu", True, "intent_payload"),
    }
    assert "routing as Rasa Pro 3.11.20" in worker.output


async def test_session_config_without_carry_over_ends_idle_sessions(
    bootstrap: str, tmp_path: Path
) -> None:
    # Rasa drops the routing slot at a session expiry only when slots are not carried over
    # (core/actions/action.py ActionSessionStart); 0.01 minutes: 0.6 s.
    domain = DOMAIN + (
        "session_config:\n  session_expiration_time: 0.01\n"
        "  carry_over_slots_to_new_session: false\n"
    )
    bundle = assistant_bundle(tmp_path, bootstrap, domain)
    worker = await start(bundle)
    try:
        await wait_for_balanced_group([worker], 6)
        async with TopicReader(bootstrap, bundle.topics.sessions) as changelog:
            await produce(bootstrap, bundle.topics.input, [said("idle", "pay", "transfer_money")])
            await changelog.wait_until(
                lambda records: any(r.key == b"idle" and r.value is None for r in records),
                "a tombstone for the idle session",
            )
            [opened, ended] = [r for r in changelog.records if r.key == b"idle"]
            assert value(opened)["route"] == "calm" and ended.value is None
        assert await worker.stop() == 0
    finally:
        worker.signal(signal.SIGKILL)


async def test_validate_refuses_what_rasa_refuses_one_line_each(tmp_path: Path) -> None:
    bundle = assistant_bundle(tmp_path, "127.0.0.1:9")
    bundle.flows.write_text(
        FLOWS + "  pay_bill:\n    description: p\n    nlu_trigger: [{intent: transfer_money}]\n"
        "    steps: [{action: a}]\n  empty:\n    description: e\n    nlu_trigger: []\n"
        "    steps: [{action: a}]\n"
    )
    (tmp_path / "domain.yml").write_text(
        DOMAIN.replace("type: from_entity\n        entity: city", "type: from_nowhere")
    )
    base = ["validate", "--config", str(bundle.config), "--endpoints", str(bundle.endpoints)]
    files = ["--flows", str(bundle.flows), "--domain", str(tmp_path / "domain.yml")]
    code, _, stderr = await run_cli(*base, *files, env=bundle.env)
    assert code == 1
    lines = stderr.splitlines()
    assert "3 problem(s) found" in lines
    assert any("flows.yml: flows.pay_bill.nlu_trigger: intent transfer_money already" in line
               for line in lines), stderr  # fmt: skip
    assert any("flows.yml: flows.empty.nlu_trigger: must be a non-empty list" in line
               for line in lines), stderr  # fmt: skip
    assert any("domain.yml: slots.city.mappings[0].type: not a slot mapping type" in line
               for line in lines), stderr  # fmt: skip


async def test_unknown_rasa_version_is_refused_listing_the_supported_ones(
    tmp_path: Path,
) -> None:
    bundle = assistant_bundle(tmp_path, "127.0.0.1:9")
    env = bundle.env | {"COEXISTENCE_ROUTER_RASA_VERSION": "3.10"}
    base = ["--config", str(bundle.config), "--endpoints", str(bundle.endpoints)]
    for command in ("run", "validate"):
        code, _, stderr = await run_cli(command, *base, env=env)
        assert code == 1
        assert "Rasa Pro '3.10' is not supported; supported releases: 3.11.0–3.11.20" in stderr


async def test_validate_warns_without_a_domain_and_about_a_foreign_bias(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "127.0.0.1:9", router="llm", llm_url="http://127.0.0.1:9")
    base = ["validate", "--config", str(bundle.config), "--endpoints", str(bundle.endpoints)]
    code, stdout, stderr = await run_cli(*base, env=bundle.env)
    assert code == 0, stderr
    assert "valid for Rasa Pro 3.11.20" in stdout
    assert "warning: no --domain given" in stderr
    assert "warning:" not in stderr.replace("warning: no --domain given", "")  # router-fake
    bundle.endpoints.write_text(bundle.endpoints.read_text().replace("router-fake", "gpt-4o"))
    code, _, stderr = await run_cli(*base, env=bundle.env)
    assert code == 0
    assert "Override it on the model: logit_bias: {" in stderr
