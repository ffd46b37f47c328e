"""The metrics of worker.ops.metrics: what each event and each status counts, in a registry of
its own, exposed by prometheus_client and read back with its parser (no sockets here: the
scrape of a real run is tests/integration/test_ops_metrics.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from contracts.models import Reason, Route, RouterName, routing_block
from worker.llm.errors import AttemptError, ErrorKind
from worker.llm.observer import (
    CLIENT_ERROR,
    CONNECTION_ERROR,
    INVALID_ANSWER,
    NOT_SENT,
    RATE_LIMITED,
    SERVER_ERROR,
    TIMEOUT,
    outcome_of,
)
from worker.ops.metrics import RouterMetrics
from worker.runtime.observer import PartitionStatus, Restored, WorkerStatus

Sample = tuple[str, dict[str, str], float]


def status(*partitions: PartitionStatus, assigned: bool = True) -> WorkerStatus:
    return WorkerStatus(connected=True, assigned=assigned, last_poll=1.0, partitions=partitions)


def partition(
    number: int,
    *,
    restored: bool = True,
    sessions: int = 0,
    undecided: int = 0,
    committed: int | None = None,
    highwater: int | None = None,
) -> PartitionStatus:
    return PartitionStatus(
        partition=number,
        restored=restored,
        sessions=sessions,
        replaying=0,
        undecided=undecided,
        fetched=highwater,
        committed=committed,
        highwater=highwater,
    )


def samples(metrics: RouterMetrics) -> Iterator[Sample]:
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, dict(sample.labels), sample.value


def value(metrics: RouterMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def routing(
    route: Route, reason: Reason, router: RouterName = RouterName.INTENT
) -> dict[str, object]:
    return routing_block(
        route=route,
        sticky=True,
        router=router,
        reason=reason,
        intent=None,
        llm=None,
        decided_at=1.0,
    )


def test_decisions_are_counted_by_router_route_and_reason() -> None:
    metrics = RouterMetrics(lambda: status())
    for _ in range(3):
        metrics.runtime.decided(0, 1, routing(Route.CALM, Reason.LISTED_INTENT))
    metrics.runtime.decided(1, 2, routing(Route.NLU, Reason.NO_INTENT))
    # A redelivered decision comes back from the changelog as plain strings: the same series.
    metrics.runtime.decided(
        0, 3, {"router": "IntentBasedRouter", "route": "calm", "reason": "listed_intent"}
    )
    total = "coexistence_router_decisions_total"
    labels = {"router": "IntentBasedRouter", "route": "calm", "reason": "listed_intent"}
    assert value(metrics, total, **labels) == 4
    assert value(metrics, total, router="IntentBasedRouter", route="nlu", reason="no_intent") == 1
    assert {tuple(sorted(s[1])) for s in samples(metrics) if s[0] == total} == {
        ("reason", "route", "router")
    }


def test_dead_letters_are_counted_by_error_type() -> None:
    metrics = RouterMetrics(lambda: status())
    metrics.runtime.dead_lettered(0, 1, "ValidationError")
    metrics.runtime.dead_lettered(0, 2, "ValidationError")
    metrics.runtime.dead_lettered(1, 3, "BadRecord")
    assert (
        value(metrics, "coexistence_router_dead_letters_total", error_type="ValidationError") == 2
    )
    assert value(metrics, "coexistence_router_dead_letters_total", error_type="BadRecord") == 1


def test_llm_attempts_are_counted_and_timed_per_deployment() -> None:
    metrics = RouterMetrics(lambda: status())
    metrics.gateways.attempt("router-llm", "gpt-4o-mini", "success", 0.08)
    metrics.gateways.attempt("router-llm", "gpt-4o-mini", "server_error", 0.02)
    metrics.gateways.attempt("router-llm", "fr", "success", 0.3)
    where = {"model_group": "router-llm", "deployment": "gpt-4o-mini"}
    requests = "coexistence_router_llm_requests_total"
    assert value(metrics, requests, **where, outcome="success") == 1
    assert value(metrics, requests, **where, outcome="server_error") == 1
    duration = "coexistence_router_llm_request_duration_seconds"
    assert value(metrics, f"{duration}_count", **where) == 2
    assert value(metrics, f"{duration}_sum", **where) == pytest.approx(0.1)
    assert value(metrics, f"{duration}_bucket", **where, le="0.025") == 1


def test_gauges_are_read_from_the_status_at_each_scrape() -> None:
    current = status(
        partition(0, sessions=120, undecided=3, committed=900, highwater=1000),
        partition(1, restored=False),
        partition(2, sessions=7, committed=None, highwater=50),  # nothing committed yet
    )
    metrics = RouterMetrics(lambda: current)
    assert value(metrics, "coexistence_router_sessions", partition="0") == 120
    assert value(metrics, "coexistence_router_sessions", partition="1") == 0
    assert value(metrics, "coexistence_router_consumer_lag", partition="0") == 100
    assert value(metrics, "coexistence_router_consumer_lag", partition="2") is None
    assert value(metrics, "coexistence_router_messages_in_flight") == 3
    assert value(metrics, "coexistence_router_partitions_restoring") == 1
    assert value(metrics, "coexistence_router_in_group") == 1
    current = status(assigned=False)  # rebalancing: nothing held
    assert value(metrics, "coexistence_router_sessions", partition="0") is None
    assert value(metrics, "coexistence_router_messages_in_flight") == 0
    assert value(metrics, "coexistence_router_in_group") == 0


def test_restore_progress_while_it_runs_then_its_duration() -> None:
    metrics = RouterMetrics(lambda: status(partition(0, restored=False)))
    assert value(metrics, "coexistence_router_restore_records") == 0
    metrics.runtime.restore_progress((0, 1), 500)
    metrics.runtime.restore_progress((0, 1), 1500)
    assert value(metrics, "coexistence_router_restore_records") == 1500
    metrics.runtime.restored(
        Restored(0, sessions=10, replaying=0, records=2000, seconds=1.5, kept=False)
    )
    assert value(metrics, "coexistence_router_restore_records") == 1500  # 1 still restoring
    metrics.runtime.restored(
        Restored(1, sessions=10, replaying=0, records=2000, seconds=1.5, kept=False)
    )
    assert value(metrics, "coexistence_router_restore_records") == 0
    assert value(metrics, "coexistence_router_restore_duration_seconds_count") == 2
    assert value(metrics, "coexistence_router_restore_duration_seconds_bucket", le="2.5") == 2
    # A partition kept from before a rebalance was not restored: not a restore's duration.
    metrics.runtime.restored(
        Restored(2, sessions=10, replaying=0, records=0, seconds=0.01, kept=True)
    )
    assert value(metrics, "coexistence_router_restore_duration_seconds_count") == 2


def test_two_workers_never_share_counts() -> None:
    one, other = RouterMetrics(lambda: status()), RouterMetrics(lambda: status())
    one.runtime.dead_lettered(0, 1, "ValidationError")
    assert value(one, "coexistence_router_dead_letters_total", error_type="ValidationError") == 1
    assert (
        value(other, "coexistence_router_dead_letters_total", error_type="ValidationError") is None
    )


def test_every_spec_metric_is_exposed_with_its_labels() -> None:
    """SPEC §8's names and label sets, as the Grafana dashboard's test allows them."""
    from tests.metric_names import SPEC_COUNTERS_AND_GAUGES, SPEC_HISTOGRAMS

    metrics = RouterMetrics(lambda: status(partition(0, sessions=1, committed=1, highwater=2)))
    metrics.runtime.decided(0, 1, routing(Route.CALM, Reason.LISTED_INTENT))
    metrics.runtime.dead_lettered(0, 2, "ValidationError")
    metrics.runtime.restored(
        Restored(0, sessions=1, replaying=0, records=1, seconds=0.1, kept=False)
    )
    metrics.gateways.attempt("g", "d", "success", 0.1)
    metrics.gateways.cooling = {("g", "d"): False}
    found: dict[str, set[str]] = {}
    for name, labels, _ in samples(metrics):
        found.setdefault(name, set()).update(labels)
    for name, required in SPEC_COUNTERS_AND_GAUGES.items():
        assert found.get(name) == required, name
    for name, required in SPEC_HISTOGRAMS.items():
        assert found[f"{name}_bucket"] == required | {"le"}, name
        assert found[f"{name}_count"] == required, name


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (AttemptError("x", kind=ErrorKind.TIMEOUT, elapsed=7.0, timed_out=True), TIMEOUT),
        (AttemptError("x", kind=ErrorKind.TIMEOUT, status=408, elapsed=1.0), TIMEOUT),
        (AttemptError("x", kind=ErrorKind.RATE_LIMIT, status=429, elapsed=0.1), RATE_LIMITED),
        (
            AttemptError("x", kind=ErrorKind.SERVICE_UNAVAILABLE, status=503, elapsed=0.1),
            SERVER_ERROR,
        ),
        (
            AttemptError("x", kind=ErrorKind.AUTHENTICATION, status=401, elapsed=0.1),
            CLIENT_ERROR,
        ),
        (AttemptError("x", kind=ErrorKind.API_ERROR, status=302, elapsed=0.1), CLIENT_ERROR),
        (AttemptError("x", kind=ErrorKind.API_ERROR, status=200, elapsed=0.1), INVALID_ANSWER),
        (AttemptError("x", kind=ErrorKind.CONNECTION, elapsed=0.01), CONNECTION_ERROR),
        (AttemptError("x", kind=ErrorKind.API_ERROR), NOT_SENT),
    ],
)
def test_an_attempts_outcome_names_how_it_failed(error: AttemptError, outcome: str) -> None:
    assert outcome_of(error) == outcome
