"""One connection to the broker: its clients and the pieces that run on them, from start to
close.

It ends with a stop (SIGTERM: drain within `shutdown_timeout`, commit, leave) or a failure (a
record not acknowledged, the membership lost, a restore that failed, the broker gone): then
nothing waits, nothing more is written, and `run` raises what ended it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from worker.kafka.topics import TopicLayout
from worker.runtime.assignments import Assignments, Budget, Rebalance
from worker.runtime.clients import COMMIT_TIMEOUT, PRODUCE_TIMEOUT, KafkaClients
from worker.runtime.coexistence_router import CoexistenceRouter
from worker.runtime.committer import Committer
from worker.runtime.dispatch import Dispatcher
from worker.runtime.expiry import Expiry
from worker.runtime.fetch_loop import FetchLoop
from worker.runtime.liveness import Liveness
from worker.runtime.observer import PartitionStatus, RuntimeObserver, WorkerStatus
from worker.runtime.offsets import DeliveryFailed
from worker.runtime.partition import AssignedPartition
from worker.runtime.publisher import Publisher
from worker.runtime.settings import RuntimeSettings
from worker.runtime.tracing import MessageTracing

log = logging.getLogger(__name__)


class Connection:
    def __init__(
        self,
        settings: RuntimeSettings,
        router: CoexistenceRouter,
        observer: RuntimeObserver,
        clock: Callable[[], float],
        ready: asyncio.Event,
        layout: TopicLayout,
        tracing: MessageTracing | None = None,
    ) -> None:
        self._settings = settings
        self._observer = observer
        self._ready = ready
        self.connected = False
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._close_timeout = settings.shutdown_timeout
        self._clients = clients = KafkaClients(settings, layout)
        publisher = Publisher(clients.outbox, settings.topics, tracing)
        self._committer = Committer(
            clients.consumer,
            settings.topics.input,
            observer,
            interval=settings.commit_interval,
            count=settings.commit_count,
        )
        self._liveness = Liveness(settings.session_timeout, self.fail)
        dispatcher = Dispatcher(
            router,
            publisher,
            observer,
            max_in_flight=settings.max_in_flight,
            session_ttl=settings.session_ttl,
            clock=clock,
            on_decided=self._committer.decided,
            on_fetchable=self._wake_fetch_loop,
            alive=self._liveness.alive,
            on_failure=self.fail,
            tracing=tracing,
        )
        self._assignments = Assignments(
            clients.consumer,
            clients.restorer,
            self._committer,
            observer,
            settings.topics,
            handle=dispatcher.handle,
            metadata_timeout=settings.rebalance_timeout,
            on_failure=self.fail,
            on_restored=self._wake_fetch_loop,
            ready=ready,
        )
        self._fetch_loop = FetchLoop(
            clients.consumer,
            self._assignments,
            dispatcher,
            clients.outbox,
            limit=settings.max_in_flight,
            alive=self._liveness.alive,
        )
        self._expiry = Expiry(
            publisher, clients.outbox, observer, ttl=settings.session_ttl, clock=clock
        )

    def _wake_fetch_loop(self) -> None:
        self._fetch_loop.wake()  # built after what calls this, which never calls it before

    def fail(self, error: BaseException) -> None:
        """End this connection (the first error is the one reported)."""
        if self._failure is None:
            self._failure = error
        self._failed.set()

    async def run(self, stop: asyncio.Event) -> None:
        topics = self._settings.topics
        try:
            if not await self._clients.start(stop, [topics.calm, topics.nlu, topics.dlq]):
                return
            self.connected = True
            log.info("connected to kafka at %s", self._settings.connection.get("bootstrap_servers"))
            self._observer.connected()
            await self._serve(stop)
        finally:
            self._ready.clear()
            await self._clients.close(self._close_timeout)
            if self.connected:
                self._observer.disconnected(self._failure)
        if self._failure is not None:
            raise self._failure

    async def _serve(self, stop: asyncio.Event) -> None:
        settings = self._settings
        revocation = Budget(
            lanes=settings.rebalance_timeout, writes=PRODUCE_TIMEOUT + 1, commit=COMMIT_TIMEOUT
        )
        self._clients.consumer.subscribe(
            [settings.topics.input],
            listener=Rebalance(self._assignments, settings.topics.input, revocation),
        )
        background = [
            asyncio.create_task(self._commits(), name="commits"),
            asyncio.create_task(self._expiry.run(self._owned), name="expiry"),
            asyncio.create_task(self._liveness.run(), name="liveness"),
            asyncio.create_task(self._watch(self._clients.outbox.failed()), name="outbox"),
        ]
        fetching = asyncio.create_task(
            self._fetch_loop.run(lambda: not stop.is_set() and self._failure is None),
            name="fetch-loop",
        )
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(self._failed.wait())
        try:
            await asyncio.wait({fetching, stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
            if fetching.done() and not fetching.cancelled():
                error = fetching.exception()
                if error is not None:
                    self.fail(error)
        finally:
            for task in (fetching, stopped, failed, *background):
                task.cancel()
            await asyncio.gather(fetching, stopped, failed, *background, return_exceptions=True)
        await self._wind_down()

    async def _wind_down(self) -> None:
        """Stop: drain within shutdown_timeout and commit. Failure: abandon at once."""
        timeout = self._settings.shutdown_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._failure is None:
            # Most of the time for the lanes, the rest for the broker's answers, the commit and
            # leaving the group (which take milliseconds with a broker that answers).
            reserve = min(timeout / 2, 2.0)
            commit = max(0.5, reserve / 4)
            budget = Budget(lanes=timeout - reserve, writes=reserve / 4, commit=commit)
            try:
                await asyncio.wait_for(self._assignments.close(budget), timeout)
            except TimeoutError:
                log.warning(
                    "shutdown: not drained within %.1fs; what is not committed is redelivered",
                    timeout,
                )
        else:
            await self._assignments.close(None)  # no waiting: lanes cancelled, nothing committed
        self._close_timeout = max(0.5, deadline - loop.time())

    async def _commits(self) -> None:
        try:
            await self._committer.run(self._owned)
        except (KafkaError, DeliveryFailed) as exc:
            log.error("%s; reconnecting", exc)
            self.fail(exc)

    async def _watch(self, failure: Coroutine[Any, Any, BaseException]) -> None:
        error = await failure
        log.error("a record was not acknowledged (%r); reconnecting", error)
        self.fail(DeliveryFailed(f"a record was not acknowledged: {error!r}"))

    def _owned(self) -> list[AssignedPartition]:
        return [p for p in self._assignments if p.owned]

    async def expire_idle_sessions(self) -> int:
        return await self._expiry.expire(self._owned())

    def status(self) -> WorkerStatus:
        consumer, topic = self._clients.consumer, self._settings.topics.input
        assigned = consumer.assignment()
        partitions = []
        for part in self._assignments:
            offsets, tp = part.offsets, TopicPartition(topic, part.number)
            partitions.append(
                PartitionStatus(
                    partition=part.number,
                    restored=part.owned,
                    sessions=len(part.state.sessions) if part.owned else 0,
                    replaying=len(part.state.replay) if part.owned else 0,
                    undecided=part.undecided,
                    fetched=offsets.fetched,
                    committed=offsets.committed,
                    highwater=consumer.highwater(tp) if tp in assigned else None,
                )
            )
        return WorkerStatus(
            connected=self.connected,
            assigned=self._assignments.in_group,
            last_poll=self._fetch_loop.last_poll,
            partitions=tuple(partitions),
        )
