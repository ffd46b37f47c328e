"""`run --log-format json` (here through COEXISTENCE_ROUTER_LOG_FORMAT): every line of a real
process is one JSON object; a line about a record carries its topic, partition and offset; no
secret appears, at DEBUG level, with a Kafka password and an LLM api key in use.

The worker logs in to a SASL PLAIN listener (tests/kafka_relay.py, see test_kafka_security.py)
and routes with the LLMBasedRouter through the fake LLM, whose key is an api key like any other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiokafka import ConsumerRecord

from tests.kafka_relay import KafkaRelay
from tests.kafka_support import Outgoing, TopicReader, produce, routed, user_message
from tests.worker_processes import LLM_KEY, WorkerProcess, wait_for_balanced_group, write_bundle
from worker.config.endpoints import KafkaSettings
from worker.fake_llm import FakeLLMServer
from worker.kafka.broker import EmbeddedBroker, free_loopback_port

KAFKA_PASSWORD = "kafka-pw-0b7e44d1"  # noqa: S105 - looked for in the logs


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


def header(record: ConsumerRecord[bytes, bytes], name: str) -> bytes:
    value: bytes = dict(record.headers)[name]
    return value


async def test_json_logs_of_a_run_parse_line_by_line_without_secrets(
    tmp_path: Path, llm: FakeLLMServer
) -> None:
    port = free_loopback_port()
    users = {"router": KAFKA_PASSWORD, "tester": "tester-pw"}
    async with (
        EmbeddedBroker(advertised_port=port, log_path=tmp_path / "tansu.log") as broker,
        KafkaRelay(broker.port, users=users, port=port) as relay,
    ):
        sasl = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}
        bundle = write_bundle(
            tmp_path,
            relay.address,
            router="llm",
            llm_url=llm.url,
            **sasl,
            sasl_username="router",
            sasl_password=KAFKA_PASSWORD,
        )
        bundle.env["COEXISTENCE_ROUTER_LOG_FORMAT"] = "json"
        tester = KafkaSettings.model_validate(
            {"url": relay.address, **sasl, "sasl_username": "tester", "sasl_password": "tester-pw"}
        ).connection_kwargs()
        worker = await WorkerProcess.start(bundle, args=["--log-level", "DEBUG"])
        try:
            await wait_for_balanced_group([worker], 6)
            await produce(
                relay.address,
                bundle.topics.input,
                [user_message("alice", "I want to send money"), Outgoing(b"{not json", b"bob")],
                connection=tester,
            )
            async with (
                TopicReader(relay.address, bundle.topics.calm, connection=tester) as inbox,
                TopicReader(relay.address, bundle.topics.dlq, connection=tester) as dlq,
            ):
                [inboxed] = await inbox.wait_for(1)
                [dead] = await dlq.wait_for(1)
            await worker.wait_for_line("dead-lettered")
        finally:
            assert await worker.stop() == 0, worker.output
    assert routed(inboxed)["routing"]["router"] == "LLMBasedRouter"
    assert ("router", "PLAIN") in relay.seen.logins

    lines = [orjson.loads(line) for line in worker.lines]  # each line is one object
    for fields in lines:
        assert {"time", "level", "logger", "message"} <= set(fields), fields
        assert fields["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    [letter] = [f for f in lines if f["message"].startswith("dead-lettered")]
    assert letter["logger"] == "worker.runtime.publisher"
    assert (letter["topic"], letter["partition"], letter["offset"]) == (
        bundle.topics.input,
        int(header(dead, "x-source-partition")),
        int(header(dead, "x-source-offset")),
    )
    messages = [f["message"] for f in lines]
    for expected in ("connected to kafka", "assigned input partitions", "released input"):
        assert any(m.startswith(expected) for m in messages), messages
    assert any(f["level"] == "DEBUG" for f in lines)  # DEBUG was on: the most it ever says

    output = worker.output
    assert KAFKA_PASSWORD not in output
    assert LLM_KEY not in output


async def test_a_refused_start_is_json_too(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, "127.0.0.1:9", partitions=0)  # refused before any broker
    bundle.env["COEXISTENCE_ROUTER_LOG_FORMAT"] = "json"
    worker = await WorkerProcess.start(bundle)
    assert await worker.wait() == 1
    lines = [orjson.loads(line) for line in worker.lines]
    assert [f["message"] for f in lines if f["level"] == "ERROR"] == [
        f"{bundle.endpoints}: kafka.partitions: Input should be greater than or equal to 1",
        "refusing to start: the configuration is invalid",
    ]
