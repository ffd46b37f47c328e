from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from worker.kafka.broker import EmbeddedBroker


@pytest.fixture(scope="session")
async def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A real Kafka-protocol broker: KAFKA_BOOTSTRAP_SERVERS, else Tansu on a loopback port."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "tansu.log")
    await broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        await broker.stop()
