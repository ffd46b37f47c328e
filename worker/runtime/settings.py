"""What the runtime needs to know, built from the `kafka:` section of endpoints.yml.

Every default lives in `worker.config.endpoints.KafkaSettings`; this class has none of its own,
so a test or the demo that changes one value says so with `from_kafka(kafka, value=...)` or
`dataclasses.replace`, and everything else is what a user would get.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.config.endpoints import KafkaSettings, Topics


@dataclass(frozen=True)
class RuntimeSettings:
    connection: Mapping[str, Any]  # aiokafka connection kwargs (bootstrap servers, security)
    topics: Topics
    group_id: str
    create_topics: bool
    partitions: int  # for the topics the worker creates
    replication_factor: int
    # Router calls (NLU server, LLM) in flight at once; also how many undecided messages one
    # partition may queue before it alone is paused.
    max_in_flight: int
    commit_interval: float  # seconds between commits ...
    commit_count: int  # ... or sooner, once this many offsets were decided since the last
    fetch_max_wait_ms: int
    fetch_min_bytes: int
    session_ttl: float  # seconds of idleness that end a session; 0 = never
    shutdown_timeout: float  # SIGTERM to exit, everything included
    rebalance_timeout: float  # what a revoked partition's lanes get to finish
    # The group coordinator's failure detection; Tansu also delays a join by half of it.
    session_timeout: float

    @classmethod
    def from_kafka(cls, kafka: KafkaSettings, **overrides: Any) -> RuntimeSettings:
        values: dict[str, Any] = {
            "connection": kafka.connection_kwargs(),
            "topics": kafka.topics,
            "group_id": kafka.group_id,
            "create_topics": kafka.create_topics,
            "partitions": kafka.partitions,
            "replication_factor": kafka.replication_factor,
            "max_in_flight": kafka.max_in_flight,
            "commit_interval": kafka.commit_interval,
            "commit_count": kafka.commit_count,
            "fetch_max_wait_ms": kafka.fetch_max_wait_ms,
            "fetch_min_bytes": kafka.fetch_min_bytes,
            # Unset, the idle expiry follows the domain's session_config: the service passes
            # it; without one, Rasa's default session_config keeps the routing (0 = never).
            "session_ttl": kafka.session_ttl if kafka.session_ttl is not None else 0.0,
            "shutdown_timeout": kafka.shutdown_timeout,
            "rebalance_timeout": kafka.rebalance_timeout,
            "session_timeout": kafka.session_timeout,
        }
        values.update(overrides)
        return cls(**values)
