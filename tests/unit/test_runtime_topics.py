"""What the worker makes of the broker's answers about its topics."""

from __future__ import annotations

import logging

import pytest

from worker.kafka.topics import (
    MIN_COMPACTION_LAG_MS,
    TOPIC_ALREADY_EXISTS,
    TopicLayoutError,
    check_changelog,
    creation_problems,
)

POLICY_VIOLATION = 44  # Kafka's POLICY_VIOLATION
INVALID_REPLICATION_FACTOR = 38


def test_a_topic_another_worker_created_first_is_no_problem() -> None:
    assert creation_problems([("a", 0, None), ("b", TOPIC_ALREADY_EXISTS, "exists")]) == []


def test_every_other_per_topic_error_is_reported_with_the_brokers_words() -> None:
    problems = creation_problems(
        [
            ("input", INVALID_REPLICATION_FACTOR, "Replication factor: 3 larger than brokers: 1"),
            ("sessions", POLICY_VIOLATION, None),  # no message: the error's own description
            ("dlq", 0, None),
        ]
    )
    assert problems[0] == (
        "creating topic 'input' failed: InvalidReplicationFactorError: "
        "Replication factor: 3 larger than brokers: 1"
    )
    assert problems[1].startswith("creating topic 'sessions' failed: PolicyViolationError: ")
    assert len(problems) == 2


def test_a_changelog_that_deletes_is_refused() -> None:
    with pytest.raises(TopicLayoutError, match="cleanup.policy=delete: it must be compact"):
        check_changelog("routing-sessions", {"cleanup.policy": "delete"})


def test_compact_and_delete_together_are_accepted() -> None:
    check_changelog(
        "s",
        {"cleanup.policy": "compact,delete", "min.compaction.lag.ms": str(MIN_COMPACTION_LAG_MS)},
    )


def test_no_compaction_lag_and_an_unreported_policy_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "worker.kafka.topics"):
        check_changelog("s", {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"})
        check_changelog("t", {})
    assert "min.compaction.lag.ms=0" in caplog.text
    assert "does not report cleanup.policy of state topic 't'" in caplog.text
