"""Errors of the model-group gateway. Their text names deployments and statuses, never secrets."""

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
    """

    def __init__(
        self,
        description: str,
        *,
        status: int | None = None,
        retryable: bool,
        counts: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.status = status
        self.retryable = retryable
        self.counts = counts
        self.retry_after = retry_after
