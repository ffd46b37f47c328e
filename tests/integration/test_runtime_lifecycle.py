"""A worker process over time: idle sessions expire, and a broker that is not there yet."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.kafka_support import TopicReader, produce, user_message
from tests.worker_processes import (
    Outputs,
    WorkerProcess,
    value,
    wait_for_balanced_group,
    write_bundle,
)
from worker.kafka.broker import EmbeddedBroker, free_loopback_port


async def test_idle_session_expires_with_a_tombstone_and_the_next_message_is_routed_afresh(
    bootstrap: str, tmp_path: Path
) -> None:
    # 0.01 minutes: a session idle for 0.6 s ends.
    bundle = write_bundle(tmp_path, bootstrap, session_expiration_time=0.01)
    worker = await WorkerProcess.start(bundle)
    try:
        await wait_for_balanced_group([worker], 6)
        async with (
            TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox,
            TopicReader(bootstrap, bundle.topics.sessions) as changelog,
        ):
            await produce(
                bootstrap,
                bundle.topics.input,
                [user_message("idle", "send money", "transfer_money")],
            )
            await changelog.wait_until(
                lambda records: any(r.key == b"idle" and r.value is None for r in records),
                "a tombstone for the idle session",
            )
            [opened, ended] = [r for r in changelog.records if r.key == b"idle"]
            assert value(opened)["route"] == "calm" and ended.value is None
            assert ended.partition == opened.partition
            await produce(
                bootstrap, bundle.topics.input, [user_message("idle", "a human", "handoff")]
            )
            records = await inbox.wait_for(2)
        assert await worker.stop() == 0
    finally:
        worker.signal(signal.SIGKILL)
    first, second = sorted(
        Outputs(records).by_id.values(), key=lambda o: o[0]["routing"]["decided_at"]
    )
    assert (first[0]["routing"]["route"], first[0]["routing"]["reason"]) == (
        "calm",
        "listed_intent",
    )
    # The CALM session is gone: the router decides again (handoff is an NLU sticky intent).
    assert (second[0]["routing"]["route"], second[0]["routing"]["reason"]) == (
        "nlu",
        "listed_intent",
    )
    assert "ended 1 idle sessions" in worker.output


async def test_worker_started_before_the_broker_routes_once_it_comes(tmp_path: Path) -> None:
    port = free_loopback_port()
    bootstrap = f"127.0.0.1:{port}"
    bundle = write_bundle(tmp_path, bootstrap)
    worker = await WorkerProcess.start(bundle)
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
    try:
        # It keeps trying, with backoff, and says so; it does not exit.
        await worker.wait_for_line(r"kafka at .* unavailable .* retrying in")
        await worker.wait_for_line(r"retrying in 1\.0s")
        assert not worker.exited
        await broker.start()
        await worker.wait_for_line("connected to kafka")
        await wait_for_balanced_group([worker], 6)
        await produce(
            bootstrap, bundle.topics.input, [user_message("early", "send money", "transfer_money")]
        )
        async with TopicReader(bootstrap, bundle.topics.calm) as inbox:
            [record] = await inbox.wait_for(1)
        assert value(record)["message"]["sender_id"] == "early"
        assert await worker.stop() == 0
    finally:
        worker.signal(signal.SIGKILL)
        await broker.stop()
