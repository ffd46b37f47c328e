"""`/readyz` and `/healthz` of a real worker and its HTTP server, on a real broker.

Readiness: 503 while a large changelog is restored (asked right after the restore reported its
first progress, while most of the changelog is still to be read) and while the broker is stopped
(SIGSTOP of a dedicated Tansu: it keeps every connection open and answers nothing), 200 after
each. Liveness: 200 while the fetch loop polls, also while the broker is stopped; 503 once the
fetch loop's last poll is older than the bound, which the test reaches with the health check's
injected clock rather than by waiting.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.benchmarks.bench_restore import changelog_records
from tests.benchmarks.common import produce_all
from tests.integration.test_intent_routing import make_router, make_settings
from tests.kafka_support import produce, user_message
from tests.runtime_events import RecordedEvents
from worker.kafka.broker import EmbeddedBroker
from worker.kafka.topics import ensure_topics
from worker.ops.health import FETCH_STUCK_AFTER, BrokerProbe, Health
from worker.ops.metrics import RouterMetrics
from worker.ops.server import OpsServer
from worker.runtime.observer import Observers
from worker.runtime.settings import RuntimeSettings
from worker.runtime.worker import RoutingWorker

CHANGELOG_RECORDS = 60_000


@dataclass
class Served:
    worker: RoutingWorker
    url: str
    events: RecordedEvents

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as response:
            return response.status, json.loads(await response.text())

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as http, http.get(self.url + "/metrics") as response:
            return await response.text()

    async def until(self, path: str, status: int, timeout: float) -> dict[str, Any]:
        """Ask `path` every 50 ms until it answers `status`; the last answer's body."""
        seen: list[tuple[int, dict[str, Any]]] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    seen.append(await self.get(path))
                    if seen[-1][0] == status:
                        return seen[-1][1]
                    await asyncio.sleep(0.05)  # polling an HTTP endpoint; bounded by timeout
        except TimeoutError:
            raise AssertionError(
                f"{path} did not answer {status} in {timeout}s: {seen[-3:]}"
            ) from None


@asynccontextmanager
async def served(
    settings: RuntimeSettings, clock: Callable[[], float] = time.monotonic
) -> AsyncIterator[Served]:
    """A worker with its metrics, health and readiness on a free loopback port, the way
    RouterService assembles them, with a quicker broker probe and the given clock."""
    events = RecordedEvents()
    worker: RoutingWorker | None = None
    metrics = RouterMetrics(lambda: worker.status() if worker else _nothing())
    worker = RoutingWorker(settings, make_router(), observer=Observers(metrics.runtime, events))
    probe = BrokerProbe(settings.connection, interval=0.2, timeout=1.0)
    server = OpsServer("127.0.0.1", 0, Health(worker.status, probe, clock=clock), metrics, probe)
    await server.start()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield Served(worker, server.url, events)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await server.stop()


def _nothing() -> Any:
    raise AssertionError("status asked before the worker exists")


async def test_not_ready_while_a_large_changelog_is_restored_then_ready(bootstrap: str) -> None:
    settings = make_settings(bootstrap, partitions=1)
    await ensure_topics(
        settings.connection, settings.topics, create=True, partitions=1, replication_factor=1
    )
    records = changelog_records(CHANGELOG_RECORDS, 1)
    await produce_all(bootstrap, settings.topics.sessions, records, partition_of=lambda i: 0)
    async with served(settings) as worker:
        await worker.events.wait_until(
            lambda: bool(worker.events.named("restore_progress")), "restore progress", 60
        )
        (status, body), scrape = await asyncio.gather(worker.get("/readyz"), worker.metrics())
        assert not worker.events.named("restored"), "the restore ended before the check"
        assert status == 503 and "restoring input partitions [0]" in body["reason"], body
        assert "coexistence_router_partitions_restoring 1.0" in scrape
        progress = [
            line
            for line in scrape.splitlines()
            if line.startswith("coexistence_router_restore_records ")
        ]
        assert progress and 0 < float(progress[0].split()[1]) < CHANGELOG_RECORDS, progress
        await asyncio.wait_for(worker.worker.ready.wait(), 60)
        status, body = await worker.get("/readyz")
        assert status == 200 and body == {"ok": True, "reason": "ready: input partitions [0]"}
        [restored] = worker.events.named("restored")
        assert restored.args[0].records == CHANGELOG_RECORDS
        scrape = await worker.metrics()
        assert "coexistence_router_restore_duration_seconds_count 1.0" in scrape
        assert f"coexistence_router_restored_records_total {CHANGELOG_RECORDS:.1f}" in scrape


async def test_not_ready_while_the_broker_is_stopped_then_ready(tmp_path: Path) -> None:
    """Its own broker: SIGSTOP would stop every other test's traffic too."""
    async with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        settings = make_settings(broker.bootstrap_servers)
        try:
            async with served(settings) as worker:
                await asyncio.wait_for(worker.worker.ready.wait(), 30)
                await worker.until("/readyz", 200, 10)
                broker.signal(signal.SIGSTOP)
                body = await worker.until("/readyz", 503, 15)
                assert "broker did not answer" in body["reason"], body
                status, alive = await worker.get("/healthz")  # waiting for a broker is alive
                assert status == 200, alive
                broker.signal(signal.SIGCONT)
                body = await worker.until("/readyz", 200, 60)
                assert body["reason"].startswith("ready: input partitions")
        finally:
            broker.signal(signal.SIGCONT)


async def test_alive_while_the_fetch_loop_polls_and_503_once_it_has_not_for_too_long(
    bootstrap: str,
) -> None:
    ahead = [0.0]
    settings = make_settings(bootstrap)
    async with served(settings, clock=lambda: time.monotonic() + ahead[0]) as worker:
        await asyncio.wait_for(worker.worker.ready.wait(), 30)
        # A message decided: the fetch loop has polled since it joined.
        await produce(bootstrap, settings.topics.input, [user_message("u", "hi", "handoff")])
        await worker.events.wait_until(lambda: bool(worker.events.named("decided")), "routed", 30)
        status, body = await worker.get("/healthz")
        assert (status, body) == (200, {"ok": True, "reason": "alive"})
        last_poll = worker.worker.status().last_poll
        assert last_poll is not None and time.monotonic() - last_poll < FETCH_STUCK_AFTER
        ahead[0] = FETCH_STUCK_AFTER + 5  # as if the loop had not polled for that long
        status, body = await worker.get("/healthz")
        assert status == 503, body
        assert "the fetch loop has not polled for 3" in body["reason"]
        ahead[0] = 0.0
        status, body = await worker.get("/healthz")
        assert status == 200, body
