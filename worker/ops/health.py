"""Liveness and readiness: what `/healthz` and `/readyz` answer.

Liveness (`/healthz`, Kubernetes restarts the pod when it fails) says whether the worker's loops
run. The event loop does, or the probe would get no answer at all; the lanes are tasks of that
loop, and every wait of theirs (the NLU server, the LLM) is bounded by the router's timeouts.
What can stall without bound is the fetch loop: its poll returns every 200 ms, except while
aiokafka rebalances the group (then the member holds no assignment), so a member that holds its
partitions and has not polled for `stuck_after` seconds is stuck. A worker waiting for the
broker (disconnected, reconnecting with backoff) or for a rebalance is alive: restarting it
would not help.

Readiness (`/readyz`, what a rollout waits for) holds only while the member is in the group,
every partition assigned to it is restored, and the broker answers: a `BrokerProbe` sends it an
ApiVersions request every `interval` seconds, on a connection of its own with the worker's
connection settings, because the worker's clients keep a stopped broker's connections open for a
long time before they learn of it. (Not a metadata request for the input topic: a broker that
auto-creates topics would create it, with its own partition count, before the worker does.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import ApiVersionRequest

from worker.kafka.connect_errors import describe_connection_failure
from worker.runtime.observer import WorkerStatus

log = logging.getLogger(__name__)

FETCH_STUCK_AFTER = 30.0  # seconds without a poll, while in the group, that count as stuck
PROBE_INTERVAL = 1.0  # seconds between two questions to the broker
PROBE_TIMEOUT = 2.0  # seconds the broker has to answer one


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str

    def body(self) -> dict[str, Any]:
        return {"ok": self.ok, "reason": self.reason}


class BrokerProbe:
    """Whether the broker answered the last question, asked every `interval` seconds."""

    def __init__(
        self,
        connection: Mapping[str, Any],
        *,
        interval: float = PROBE_INTERVAL,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self._connection = connection
        self._interval = interval
        self._timeout = timeout
        self.reachable = False
        self.problem = "the broker has not been asked yet"

    async def run(self) -> None:
        """Ask until cancelled."""
        client: AIOKafkaClient | None = None
        try:
            while True:
                try:
                    if client is None:
                        client = AIOKafkaClient(
                            **self._connection, request_timeout_ms=int(self._timeout * 1000)
                        )
                        await asyncio.wait_for(client.bootstrap(), self._timeout)
                    node = client.get_random_node()
                    if node is None:
                        raise KafkaError("the broker named no broker in its metadata")
                    request = _api_versions()
                    await asyncio.wait_for(client.send(node, request), self._timeout)
                    self._answer(True, "")
                except TimeoutError:
                    self._answer(False, f"the broker did not answer within {self._timeout:g}s")
                except Exception as exc:  # noqa: BLE001 - whatever it is, it is not ready
                    why = describe_connection_failure(exc, self._connection)
                    self._answer(False, f"the broker could not be reached ({why})")
                    if client is not None:
                        await _close(client)
                        client = None
                await asyncio.sleep(self._interval)
        finally:
            if client is not None:
                await _close(client)

    def _answer(self, reachable: bool, problem: str) -> None:
        if reachable != self.reachable:
            if reachable:
                log.info("readiness: the broker answers")
            else:
                log.info("readiness: %s", problem)
        self.reachable = reachable
        self.problem = "" if reachable else problem


def _api_versions() -> Any:
    """An ApiVersions request: aiokafka 0.14 picks its version itself, earlier releases list
    the versions."""
    if isinstance(ApiVersionRequest, list):
        return ApiVersionRequest[0]()
    return ApiVersionRequest()


async def _close(client: AIOKafkaClient) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), 1.0)


class Health:
    """The two verdicts, from the worker's status (and the broker probe, when there is one)."""

    def __init__(
        self,
        status: Callable[[], WorkerStatus],
        broker: BrokerProbe | None = None,
        *,
        stuck_after: float = FETCH_STUCK_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._status = status
        self._broker = broker
        self._stuck_after = stuck_after
        self._clock = clock
        # When the member was first seen in the group with no poll yet (its first poll's start).
        self._waiting_since: float | None = None

    def liveness(self) -> Verdict:
        status = self._status()
        if not (status.connected and status.assigned):
            self._waiting_since = None
            return Verdict(True, "alive: waiting for the broker or a rebalance")
        now = self._clock()
        last = status.last_poll
        if last is None:
            if self._waiting_since is None:
                self._waiting_since = now
            last = self._waiting_since
        else:
            self._waiting_since = None
        idle = now - last
        if idle > self._stuck_after:
            return Verdict(
                False,
                f"stuck: the fetch loop has not polled for {idle:.0f}s while the member "
                f"holds its partitions (bound {self._stuck_after:g}s)",
            )
        return Verdict(True, "alive")

    def readiness(self) -> Verdict:
        status = self._status()
        if not status.connected:
            return Verdict(False, "not ready: not connected to the broker")
        broker = self._broker
        if broker is not None and not broker.reachable:
            return Verdict(False, f"not ready: {broker.problem}")
        if not status.assigned:
            return Verdict(False, "not ready: not in the group (joining or rebalancing)")
        restoring = [p.partition for p in status.partitions if not p.restored]
        if restoring:
            return Verdict(False, f"not ready: restoring input partitions {restoring}")
        held = [p.partition for p in status.partitions]
        return Verdict(True, f"ready: input partitions {held}")
