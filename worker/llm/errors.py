"""Errors of the model-group gateway and of its HTTP transport. Their text names deployments,
hosts and statuses, never secrets (a request is never part of a message)."""

from __future__ import annotations


class GatewayError(Exception):
    """A completion could not be obtained from the group.

    `attempts` is how many HTTP requests were made, `deployment` the last deployment tried (None
    when no request was made) and `last_error` a redacted, bounded description of the last failure.
    """

    def __init__(
        self,
        message: str,
        *,
        group: str,
        attempts: int,
        last_error: str | None = None,
        deployment: str | None = None,
    ) -> None:
        detail = f"{message} (group {group!r}, {attempts} attempt(s)"
        if last_error:
            detail += f", last error: {last_error}"
        super().__init__(detail + ")")
        self.group = group
        self.attempts = attempts
        self.last_error = last_error
        self.deployment = deployment


class AllDeploymentsCoolingDown(GatewayError):
    """Every deployment of the group is cooling down: the call failed fast, without a request."""


class AttemptsExhausted(GatewayError):
    """`num_retries` further attempts after the first one all failed."""


class RequestRejected(GatewayError):
    """A deployment refused the request itself (a 4xx other than 408/429): not retried."""


class RateLimitsReached(GatewayError):
    """usage-based-routing: every healthy deployment is at its rpm/tpm limit for this minute."""


class AttemptError(Exception):
    """One failed HTTP attempt on one deployment (internal to the gateway).

    `retryable` failures (408, 429, 5xx, timeouts, connection errors, unreadable answers) are
    retried elsewhere; `counts` says whether it counts towards the deployment's cooldown.
    `elapsed` is how long the attempt took until it failed (seconds; None when no request was
    sent), `timed_out` whether it failed by running out of time.
    """

    def __init__(
        self,
        description: str,
        *,
        status: int | None = None,
        retryable: bool,
        counts: bool,
        retry_after: float | None = None,
        elapsed: float | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.status = status
        self.retryable = retryable
        self.counts = counts
        self.retry_after = retry_after
        self.elapsed = elapsed
        self.timed_out = timed_out


# ---- the transport (worker.llm.http) ----------------------------------------------------------


class HttpError(Exception):
    """An exchange failed below HTTP status codes: connect, TLS, a lost connection, a response
    that is not well-formed HTTP/1.x, too large, undecodable, or a redirect not followed.

    `elapsed` is the seconds from the start of the call (connect and redirects included) to the
    failure: a failed call is a latency measurement too. `kind` names the class of failure for
    logs ("connection error", "timeout", "unusable answer").
    """

    kind = "connection error"

    def __init__(self, message: str, *, elapsed: float = 0.0) -> None:
        super().__init__(message)
        self.elapsed = elapsed


class HttpTimeout(HttpError, TimeoutError):
    """The call's deadline passed: while connecting, in the TLS handshake, or waiting for the
    answer (`phase`: "connect", "tls" or "response")."""

    kind = "timeout"

    def __init__(self, message: str, *, phase: str, elapsed: float = 0.0) -> None:
        super().__init__(message, elapsed=elapsed)
        self.phase = phase


class UnusableAnswer(HttpError):
    """The deployment answered, but not with something the client may use: malformed framing,
    a body over the size bound, a content coding it did not ask for, or a redirect it refuses."""

    kind = "unusable answer"
