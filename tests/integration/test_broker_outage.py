"""The broker goes away mid-run and comes back: the worker recovers, sessions stay sticky.

Tansu keeps everything in memory, so restarting it is no outage test. Instead every client (the
worker, and this test's producer and readers) reaches a dedicated broker through a loopback TCP
proxy (tests/tcp_proxy.py) whose address the broker advertises in its metadata: taking the proxy
down cuts every connection and refuses new ones, while the broker and all it stores live on.
Hence its own broker, even when KAFKA_BOOTSTRAP_SERVERS names a cluster.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from tests.integration.test_intent_routing import make_router, make_settings
from tests.kafka_support import Outgoing, TopicReader, produce, routed, user_message
from tests.log_capture import CapturedLog, captured
from tests.runtime_events import RecordedEvents
from tests.tcp_proxy import TcpProxy
from tests.worker_processes import Outputs, WorkerProcess, wait_for_balanced_group, write_bundle
from worker.kafka.broker import EmbeddedBroker, free_loopback_port
from worker.runtime.settings import RuntimeSettings
from worker.runtime.worker import RoutingWorker

CALM_SENDERS = [f"calm-{i}" for i in range(5)]  # open a CALM session in batch A
NLU_SENDERS = [f"nlu-{i}" for i in range(5)]  # open an NLU session in batch A
NEW_CALM_SENDERS = [f"new-calm-{i}" for i in range(3)]  # first seen in batch B
NEW_NLU_SENDERS = [f"new-nlu-{i}" for i in range(3)]


class Watched:
    """A running worker, its events and log, and bounded steps that end early if the worker
    stops."""

    def __init__(
        self,
        worker: RoutingWorker,
        task: asyncio.Task[None],
        events: RecordedEvents,
        log: CapturedLog,
    ) -> None:
        self.worker, self.task, self.events, self.log = worker, task, events, log

    @asynccontextmanager
    async def step(self, what: str, seconds: float) -> AsyncIterator[None]:
        this = asyncio.current_task()
        assert this is not None

        def worker_stopped(_: object) -> None:
            this.cancel()

        self.task.add_done_callback(worker_stopped)
        try:
            async with asyncio.timeout(seconds):
                yield
        except TimeoutError:
            raise AssertionError(f"{what}: not within {seconds}s\n{self.log.dump()}") from None
        except asyncio.CancelledError:
            if not self.task.done():
                raise
            this.uncancel()
        finally:
            self.task.remove_done_callback(worker_stopped)
        if self.task.done():
            error = None if self.task.cancelled() else self.task.exception()
            raise AssertionError(
                f"the worker stopped ({error!r}) during: {what}\n{self.log.dump()}"
            )


@asynccontextmanager
async def watched_worker(settings: RuntimeSettings) -> AsyncIterator[Watched]:
    """Like tests.kafka_support.running_worker, with the worker's task, events and log (for
    the failure messages) at hand."""
    with captured("worker.runtime") as log:
        events = RecordedEvents()
        worker, stop = RoutingWorker(settings, make_router(), observer=events), asyncio.Event()
        task = asyncio.create_task(worker.run(stop), name="worker")
        try:
            yield Watched(worker, task, events, log)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)  # a clean stop; what the worker crashed with, else


@dataclass
class Traffic:
    """The messages of each batch, and where each must be routed: (route, reason)."""

    batches: dict[str, list[Outgoing]] = field(default_factory=dict)
    expected: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add(
        self, batch: str, sender: str, text: str, intent: str | None, route: str, reason: str
    ) -> None:
        record = user_message(sender, text, intent)
        assert record.value is not None
        self.batches.setdefault(batch, []).append(record)
        self.expected[orjson.loads(record.value)["message_id"]] = (route, reason)

    def ids(self, batch: str) -> set[str]:
        return {orjson.loads(r.value or b"")["message_id"] for r in self.batches[batch]}


def traffic() -> Traffic:
    t = Traffic()
    for sender in CALM_SENDERS:
        t.add("A", sender, "send money", "transfer_money", "calm", "listed_intent")
        t.add("A", sender, "to my landlord", None, "calm", "sticky_session")
    for sender in NLU_SENDERS:
        t.add("A", sender, "a human please", "handoff", "nlu", "listed_intent")
        t.add("A", sender, "now", None, "nlu", "sticky_session")
    # Plain text, no intent: without the sessions opened in A these would go NLU, "no_intent".
    for round_ in range(3):
        for sender in CALM_SENDERS:
            t.add("B", sender, f"plain {round_}", None, "calm", "sticky_session")
        for sender in NLU_SENDERS:
            t.add("B", sender, f"plain {round_}", None, "nlu", "sticky_session")
    for sender in NEW_CALM_SENDERS:
        t.add("B", sender, "send money", "transfer_money", "calm", "listed_intent")
    for sender in NEW_NLU_SENDERS:
        t.add("B", sender, "hello", None, "nlu", "no_intent")
    return t


def outputs_by_id(records: list[ConsumerRecord[bytes, bytes]]) -> dict[str, list[dict[str, Any]]]:
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        out = routed(record) | {"inbox": record.topic}
        by_id.setdefault(out["message"]["message_id"], []).append(out)
    return by_id


async def committed_offsets(bootstrap: str, settings: RuntimeSettings) -> dict[int, int | None]:
    """The group's committed input offsets, asked of the broker (this consumer joins no group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=settings.group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {
            p: await consumer.committed(TopicPartition(settings.topics.input, p))
            for p in range(settings.partitions)
        }
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    "outage",
    [
        # Back as soon as the worker's first reconnection attempt was refused.
        pytest.param(0.0, id="back-once-noticed"),
        # Down for longer than the group's session timeout (1 s): heartbeats fail, aiokafka marks
        # the coordinator dead and retries for seconds. (Kafka would also drop the member, so
        # the worker would rejoin; Tansu 0.6 keeps a lone member whose heartbeats resume.)
        pytest.param(2.5, id="longer-than-the-session-timeout"),
    ],
)
async def test_worker_recovers_from_a_broker_outage_mid_run(tmp_path: Path, outage: float) -> None:
    proxy_port = free_loopback_port()
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", advertised_port=proxy_port)
    proxy = TcpProxy(broker.port, port=proxy_port)
    bootstrap = proxy.address
    settings = make_settings(bootstrap)
    topics = settings.topics
    inbox = {"calm": topics.calm, "nlu": topics.nlu}
    t = traffic()
    ids_a, ids_b = t.ids("A"), t.ids("B")

    async def read_inboxes(ids: set[str]) -> dict[str, list[dict[str, Any]]]:
        """Every inbox record, once the inboxes hold all of `ids` (callers bound the wait)."""
        async with TopicReader(bootstrap, topics.calm, topics.nlu) as reader:
            await reader.wait_until(lambda records: ids <= set(outputs_by_id(records)), "read", 60)
            return outputs_by_id(reader.records)

    async with broker, proxy, watched_worker(settings) as watched:
        step, log = watched.step, watched.log
        # 1. The worker runs through the proxy; batch A opens the sessions.
        async with step("the worker gets its partitions", 30):
            await watched.worker.ready.wait()
        async with step("batch A routed", 20):
            await produce(bootstrap, topics.input, t.batches["A"])
            await read_inboxes(ids_a)

        # 2. The broker goes away. The worker notices: it tries to reconnect and is refused (this
        # test's own clients are closed by now, so every attempt is the worker's).
        async with step("the worker notices the outage", 10 + outage):
            await proxy.down()
            assert proxy.down_at is not None
            await proxy.wait_for_refusal(at_or_after=proxy.down_at + outage)

        # 3. It comes back; batch B, from the same senders (plain text) and new ones.
        proxy.up()
        async with step("every message of A and B routed after the outage", 30):
            await produce(bootstrap, topics.input, t.batches["B"])
            outputs = await read_inboxes(ids_a | ids_b)

        # 4. Every message in the inbox its session (or the rules) says, for that reason; at
        # least once: a duplicate must carry the same route.
        for message_id in ids_a | ids_b:
            route, reason = t.expected[message_id]
            for out in outputs[message_id]:
                got = (out["inbox"], out["routing"]["route"], out["routing"]["reason"])
                assert got == (inbox[route], route, reason), (out, log.dump())

        # ... and the group's commits come to cover every input record.
        async with step("the input offsets committed", 15):
            async with TopicReader(bootstrap, topics.input) as input_reader:
                inputs = await input_reader.wait_for(len(t.expected))
            ends: dict[int, int] = {}
            for record in inputs:
                ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
            await watched.events.committed_to(ends)
            committed = await committed_offsets(bootstrap, settings)
        assert all((committed[p] or 0) >= end for p, end in ends.items()), (committed, ends)


async def test_sigterm_while_the_broker_is_away_exits_without_committing(tmp_path: Path) -> None:
    """The drain's commit cannot be answered: the worker still exits within its shutdown
    timeout, and a successor routes everything again (nothing was committed)."""
    proxy_port = free_loopback_port()
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", advertised_port=proxy_port)
    async with broker, TcpProxy(broker.port, port=proxy_port) as proxy:
        bundle = write_bundle(
            tmp_path / "files",
            proxy.address,
            # No commit before the drain: the drain has everything to commit.
            commit_interval_ms=600_000,
            commit_count=1_000_000,
            shutdown_timeout=2,
        )
        messages = [user_message(f"s{i}", "send money", "transfer_money") for i in range(3)]
        worker = await WorkerProcess.start(bundle, "w1")
        workers = [worker]
        try:
            await wait_for_balanced_group([worker], 6)
            await produce(proxy.address, bundle.topics.input, messages)
            async with TopicReader(proxy.address, bundle.topics.calm) as inbox:
                await inbox.wait_for(len(messages))
            await proxy.down()
            await proxy.wait_for_refusal(timeout=30)
            worker.signal(signal.SIGTERM)
            # Bounded by shutdown_timeout (2 s); the generous wait only tells "exits" from "hangs".
            assert await worker.wait(timeout=30) == 0
            assert "not committed; what was not committed is redelivered" in worker.output

            proxy.up()
            successor = await WorkerProcess.start(bundle, "w2")
            workers.append(successor)
            async with TopicReader(proxy.address, bundle.topics.calm) as inbox:
                records = await inbox.wait_for(2 * len(messages))
            assert await successor.stop() == 0
        finally:
            for process in workers:
                process.signal(signal.SIGKILL)
    outputs = Outputs(records)
    assert {mid: len(copies) for mid, copies in outputs.by_id.items()} == {
        orjson.loads(m.value or b"")["message_id"]: 2 for m in messages
    }
