"""The consumer-group worker: one connection after another (worker.runtime.connection), with
backoff between them, until it is told to stop.

Flow of one input record: fetched (worker.runtime.fetch_loop; partitions paused by
worker.runtime.backpressure) -> decoded and decided, at once or in its sender's lane, and
published (worker.runtime.dispatch) -> acknowledged by the broker (worker.kafka.outbox) -> its
offset joins the committable prefix -> committed (worker.runtime.committer). Partitions come and
go through worker.runtime.assignments; what happens is told to a RuntimeObserver
(worker.runtime.observer), and `RoutingWorker.status()` says what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiokafka.errors import KafkaError

from worker.kafka.client_logs import quiet_client_logs
from worker.kafka.connect_errors import describe_connection_failure, scram_refusal
from worker.kafka.topics import TopicLayoutError, ensure_topics
from worker.runtime.clients import unless_stopped
from worker.runtime.coexistence_router import CoexistenceRouter
from worker.runtime.connection import Connection
from worker.runtime.observer import RuntimeObserver, WorkerStatus
from worker.runtime.offsets import DeliveryFailed
from worker.runtime.settings import RuntimeSettings
from worker.runtime.tracing import MessageTracing

log = logging.getLogger(__name__)

# What reconnecting with backoff mends; anything else is a bug and ends the worker.
_BROKER_TROUBLE = (KafkaError, DeliveryFailed, OSError, TimeoutError)

RECONNECT_BACKOFF_MAX = 30.0


class RoutingWorker:
    def __init__(
        self,
        settings: RuntimeSettings,
        router: CoexistenceRouter,
        *,
        clock: Callable[[], float] = time.time,
        observer: RuntimeObserver | None = None,
        tracing: MessageTracing | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self._clock = clock
        self._observer = observer or RuntimeObserver()
        self._tracing = tracing  # None: no tracing work at all (worker.runtime.tracing)
        self._connection: Connection | None = None
        # Set while the member holds partitions and every one is restored.
        self.ready = asyncio.Event()

    def status(self) -> WorkerStatus:
        """What the worker holds now (for health, readiness, gauges); cheap, no I/O."""
        connection = self._connection
        if connection is None:
            return WorkerStatus(connected=False, assigned=False, last_poll=None, partitions=())
        return connection.status()

    async def expire_idle_sessions(self) -> int:
        """One idle-expiry pass now (the expiry loop runs them by itself); how many ended."""
        assert self._connection is not None, "the worker is not connected"
        return await self._connection.expire_idle_sessions()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; broker trouble is retried with backoff, never a crash."""
        quiet_client_logs()
        initial = backoff = 0.5
        settings = self.settings
        while not stop.is_set():
            connected = False
            try:
                # Connecting may hang on an unreachable broker: a stop signal must still win.
                layout = asyncio.ensure_future(
                    ensure_topics(
                        settings.connection,
                        settings.topics,
                        create=settings.create_topics,
                        partitions=settings.partitions,
                        replication_factor=settings.replication_factor,
                    )
                )
                if not await unless_stopped(layout, stop):
                    return
                connection = Connection(
                    settings,
                    self.router,
                    self._observer,
                    self._clock,
                    self.ready,
                    layout.result(),
                    self._tracing,
                )
                self._connection = connection
                try:
                    await connection.run(stop)
                finally:
                    connected = connection.connected
                    self._connection = None
                return
            except TopicLayoutError:
                raise
            except Exception as exc:
                if not isinstance(exc, _BROKER_TROUBLE) and not scram_refusal(exc):
                    raise
                if connected:
                    backoff = initial  # it worked for a while: a fresh failure, not a loop
                log.warning(
                    "kafka at %s unavailable (%s); retrying in %.1fs",
                    settings.connection.get("bootstrap_servers"),
                    describe_connection_failure(exc, settings.connection),
                    backoff,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX)
