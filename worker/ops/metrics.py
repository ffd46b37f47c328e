"""The worker's Prometheus metrics, from one place each.

- Runtime events (worker.runtime.observer) feed the counters and histograms: `decided`,
  `dead_lettered`, `restore_progress`, `restored`, `revoked`, `expired`.
- The gateway's attempt seam (worker.llm.observer) feeds the LLM attempt counter and histogram.
- What changes per message (sessions, lag, messages in flight) is pulled from
  `RoutingWorker.status()` when Prometheus scrapes, by a collector: no per-message cost at all.
- Cooldowns are pulled from the gateways before each scrape (`refresh`), from the shared state
  when the group has one.

Per message, `decided` is three lookups in the routing block and one in a dict of plain counts,
which a collector hands to prometheus_client at each scrape (a labelled Counter child's
increment takes a lock: twice the time of the rest of the event). No
label carries a sender id or a secret: labels are the routing enums, error type names, model
group ids, deployment names as configured (`Deployment.name`) and partition numbers. Every
metric lives in this object's own registry: two workers in one process (tests, the demo) never
share counts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from worker.llm.gateway import GatewayRegistry
from worker.llm.observer import AttemptObserver
from worker.runtime.observer import Restored, RuntimeObserver, WorkerStatus

log = logging.getLogger(__name__)

PREFIX = "coexistence_router_"
# An LLM attempt: the router's calls take tens of milliseconds to a few seconds (7 s timeout).
LLM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0)
# A restore: from an empty changelog partition to millions of sessions.
RESTORE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
COOLDOWN_REFRESH_TIMEOUT = 1.0  # seconds a scrape waits for the gateways' cooldown state


class RuntimeMetrics(RuntimeObserver):
    """Counters and histograms fed by the runtime's events."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # Per message: plain counts by the raw label values (see collect).
        self._decisions: dict[tuple[Any, Any, Any], int] = {}
        self._dead_letters: dict[str, int] = {}
        registry.register(self)
        self._restore_duration = Histogram(
            PREFIX + "restore_duration_seconds",
            "Seconds from the start of a partition's restore to its sessions being in memory "
            "(partitions restored together share their time; a partition kept from before a "
            "rebalance is not counted).",
            buckets=RESTORE_BUCKETS,
            registry=registry,
        )
        self._restored_records = Counter(
            PREFIX + "restored_records",
            "Changelog records read by finished restores.",
            registry=registry,
        )
        self._expired = Counter(
            PREFIX + "sessions_expired",
            "Sessions ended by the idle expiry.",
            registry=registry,
        )
        self._revoked = Counter(
            PREFIX + "partitions_revoked",
            "Input partitions given up, cleanly or fenced (lost before the member could finish).",
            ("fenced",),
            registry=registry,
        )
        # Restore progress: the partitions of the restore running now and what it has read.
        self._restoring: set[int] = set()
        self._restore_records = 0

    def collect(self) -> Iterable[Metric]:
        """The per-message counters (called by the registry at each scrape, on the event loop
        that counts them)."""
        decisions = CounterMetricFamily(
            PREFIX + "decisions",
            "Messages routed, by router, route and reason (one per inbox record).",
            labels=("router", "route", "reason"),
        )
        merged: dict[tuple[str, str, str], int] = {}
        for (router, route, reason), count in list(self._decisions.items()):
            # A routing block's enums and a redelivered one's strings name the same series.
            labels = (str(router), str(route), str(reason))
            merged[labels] = merged.get(labels, 0) + count
        for labels, count in sorted(merged.items()):
            decisions.add_metric(labels, count)
        yield decisions
        dead = CounterMetricFamily(
            PREFIX + "dead_letters",
            "Input records sent to the DLQ, by error type.",
            labels=("error_type",),
        )
        for error_type, count in sorted(self._dead_letters.items()):
            dead.add_metric((error_type,), count)
        yield dead

    @property
    def restore_records(self) -> int:
        """Changelog records read so far by the restore running now (0 when none runs)."""
        return self._restore_records if self._restoring else 0

    def decided(self, partition: int, offset: int, routing: Mapping[str, Any]) -> None:
        key = (routing["router"], routing["route"], routing["reason"])
        counts = self._decisions
        counts[key] = counts.get(key, 0) + 1

    def dead_lettered(self, partition: int, offset: int, error_type: str) -> None:
        counts = self._dead_letters
        counts[error_type] = counts.get(error_type, 0) + 1

    def restore_progress(self, partitions: tuple[int, ...], records: int) -> None:
        self._restoring = set(partitions)
        self._restore_records = records

    def restored(self, restore: Restored) -> None:
        self._restoring.discard(restore.partition)
        if not restore.kept:
            self._restore_duration.observe(restore.seconds)
            self._restored_records.inc(restore.records)

    def revoked(self, partitions: tuple[int, ...], *, fenced: bool) -> None:
        self._restoring.difference_update(partitions)
        self._revoked.labels("true" if fenced else "false").inc(len(partitions))

    def disconnected(self, error: BaseException | None) -> None:
        self._restoring.clear()

    def expired(self, partition: int, sessions: int) -> None:
        self._expired.inc(sessions)


class GatewayMetrics(AttemptObserver):
    """LLM attempts (fed by the gateways' attempt seam) and cooldowns (pulled from them)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._gateways: GatewayRegistry | None = None
        self._requests = Counter(
            PREFIX + "llm_requests",
            "LLM attempts (HTTP requests to a deployment), by model group, deployment and outcome.",
            ("model_group", "deployment", "outcome"),
            registry=registry,
        )
        self._duration = Histogram(
            PREFIX + "llm_request_duration_seconds",
            "Seconds an LLM attempt took, failed ones included.",
            ("model_group", "deployment"),
            buckets=LLM_BUCKETS,
            registry=registry,
        )
        self._attempts: dict[tuple[str, str, str], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}
        # (model group, deployment) -> cooling down, as of the last refresh.
        self.cooling: dict[tuple[str, str], bool] = {}

    def attempt(self, group: str, deployment: str, outcome: str, seconds: float) -> None:
        key = (group, deployment, outcome)
        child = self._attempts.get(key)
        if child is None:
            child = self._attempts[key] = self._requests.labels(*key)
        child.inc()
        where = (group, deployment)
        duration = self._durations.get(where)
        if duration is None:
            duration = self._durations[where] = self._duration.labels(*where)
        duration.observe(seconds)

    def watch(self, gateways: GatewayRegistry | None) -> None:
        """The gateways whose cooldowns to read (their attempts come through `attempt`)."""
        self._gateways = gateways

    async def refresh(self) -> None:
        """Read every current deployment's cooldown state; a group whose state does not come
        within the bound keeps its last known one."""
        if self._gateways is None:
            return
        gateways = self._gateways
        fresh: dict[tuple[str, str], bool] = {}
        for group_id in gateways.group_ids:
            gateway = gateways.get(group_id)
            try:
                state = await asyncio.wait_for(gateway.cooling_down(), COOLDOWN_REFRESH_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - a scrape never fails for one group
                log.warning("cooldown state of model group %r not read: %r", group_id, exc)
                state = {d: c for (g, d), c in self.cooling.items() if g == group_id}
            fresh.update(((group_id, name), cooling) for name, cooling in state.items())
        self.cooling = fresh


class StatusCollector:
    """Gauges pulled from `RoutingWorker.status()` (and the restore's progress) per scrape."""

    def __init__(
        self,
        status: Callable[[], WorkerStatus],
        runtime: RuntimeMetrics,
        gateways: GatewayMetrics,
    ) -> None:
        self._status = status
        self._runtime = runtime
        self._gateways = gateways

    def collect(self) -> Iterable[Metric]:
        status = self._status()
        sessions = GaugeMetricFamily(
            PREFIX + "sessions",
            "Sticky sessions held, per assigned input partition (0 while it is restored).",
            labels=("partition",),
        )
        lag = GaugeMetricFamily(
            PREFIX + "consumer_lag",
            "Messages of an assigned input partition not committed yet: its high watermark at "
            "the last fetch minus this member's last commit (shown once both are known).",
            labels=("partition",),
        )
        for part in status.partitions:
            label = [str(part.partition)]
            sessions.add_metric(label, part.sessions)
            if part.highwater is not None and part.committed is not None:
                lag.add_metric(label, max(0, part.highwater - part.committed))
        yield sessions
        yield lag
        yield GaugeMetricFamily(
            PREFIX + "messages_in_flight",
            "Messages waiting in their senders' lanes (for the NLU server or the LLM, or behind "
            "such a message of the same sender).",
            value=status.in_flight,
        )
        yield GaugeMetricFamily(
            PREFIX + "partitions_restoring",
            "Assigned input partitions whose sessions are being restored.",
            value=sum(1 for p in status.partitions if not p.restored),
        )
        yield GaugeMetricFamily(
            PREFIX + "restore_records",
            "Changelog records read so far by the restore running now (0 when none runs).",
            value=self._runtime.restore_records if status.connected else 0,
        )
        yield GaugeMetricFamily(
            PREFIX + "connected",
            "1 while the worker's Kafka clients are started, else 0.",
            value=int(status.connected),
        )
        yield GaugeMetricFamily(
            PREFIX + "in_group",
            "1 while the member holds an assignment of the group, else 0 (rebalancing or "
            "disconnected).",
            value=int(status.assigned),
        )
        cooling = GaugeMetricFamily(
            PREFIX + "deployment_cooling_down",
            "1 while a deployment of a model group is cooling down (skipped by the gateway), "
            "else 0.",
            labels=("model_group", "deployment"),
        )
        for (group, deployment), value in sorted(self._gateways.cooling.items()):
            cooling.add_metric([group, deployment], int(value))
        yield cooling


class RouterMetrics:
    """Every metric of one worker in a registry of its own: `runtime` observes the runtime,
    `gateways` the gateways' attempts (and, once told to `watch` them, their cooldowns);
    `refresh()` before each exposition."""

    def __init__(
        self,
        status: Callable[[], WorkerStatus],
        runtime: Callable[[CollectorRegistry], RuntimeMetrics] = RuntimeMetrics,
    ) -> None:
        """`runtime`: the runtime's observer (a harness may hear more through a subclass,
        the worker having one observer)."""
        self.registry = CollectorRegistry()
        self.runtime = runtime(self.registry)
        self.gateways = GatewayMetrics(self.registry)
        self.registry.register(StatusCollector(status, self.runtime, self.gateways))
        # The process (CPU, memory, file descriptors), the interpreter and its garbage collector.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def watch(self, gateways: GatewayRegistry | None) -> None:
        self.gateways.watch(gateways)

    async def refresh(self) -> None:
        await self.gateways.refresh()
