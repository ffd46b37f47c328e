"""The gateway's seam: what metrics and traces see of its calls, one HTTP attempt at a time.

The gateway tells an `AttemptObserver` about every attempt it makes (the model group, the
deployment's name as configured, how it ended and how long it took), on its event loop, right
after the attempt; an observer must return at once and never raise. Cooldown state is pulled
instead, when wanted: `ModelGroupGateway.cooling_down()`.
"""

from __future__ import annotations

import logging

from worker.llm.errors import AttemptError

log = logging.getLogger(__name__)

# How an attempt ended: a small, fixed set of label values.
SUCCESS = "success"
TIMEOUT = "timeout"  # no answer in time (connect, TLS or the answer), or HTTP 408
RATE_LIMITED = "rate_limited"  # HTTP 429
SERVER_ERROR = "server_error"  # HTTP 5xx
CLIENT_ERROR = "client_error"  # another 4xx (400, 401, 403, 404, …), or a 3xx not followed
CONNECTION_ERROR = "connection_error"  # refused, reset, TLS failure, a broken answer's framing
INVALID_ANSWER = "invalid_answer"  # a 2xx whose body is not this provider's answer
NOT_SENT = "not_sent"  # the request could not be sent at all
OUTCOMES = (
    SUCCESS,
    TIMEOUT,
    RATE_LIMITED,
    SERVER_ERROR,
    CLIENT_ERROR,
    CONNECTION_ERROR,
    INVALID_ANSWER,
    NOT_SENT,
)


def outcome_of(error: AttemptError) -> str:
    """The outcome of a failed attempt."""
    status = error.status
    if error.timed_out or status == 408:
        return TIMEOUT
    if status is None:
        return NOT_SENT if error.elapsed is None else CONNECTION_ERROR
    if status == 429:
        return RATE_LIMITED
    if status >= 500:
        return SERVER_ERROR
    if 200 <= status < 300:
        return INVALID_ANSWER
    return CLIENT_ERROR


class AttemptObserver:
    """Override `attempt`; this one does nothing."""

    def attempt(self, group: str, deployment: str, outcome: str, seconds: float) -> None:
        """One HTTP attempt of `group` on `deployment` ended with `outcome` after `seconds`."""


class AttemptObservers(AttemptObserver):
    """Several observers as one; one that raises is logged, never the gateway's problem."""

    def __init__(self, *observers: AttemptObserver) -> None:
        self._observers = observers

    def attempt(self, group: str, deployment: str, outcome: str, seconds: float) -> None:
        for observer in self._observers:
            try:
                observer.attempt(group, deployment, outcome, seconds)
            except Exception:  # noqa: BLE001 - metrics and traces must never fail a call
                log.exception("attempt observer %s failed", type(observer).__name__)
