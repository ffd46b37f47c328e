"""Errors of the model-group gateway and of its HTTP transport. Their text names deployments,
hosts and statuses, never secrets (a request is never part of a message)."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """A failed attempt as litellm's exception classes name it: what `retry_policy` and
    `allowed_fails_policy` key on (litellm/litellm_core_utils/exception_mapping_utils.py, the
    OpenAI-compatible branch, read in litellm 1.69.3 and 1.101.0)."""

    BAD_REQUEST = "BadRequestError"  # 400, 413, 422
    AUTHENTICATION = "AuthenticationError"  # 401
    PERMISSION_DENIED = "PermissionDeniedError"  # 403
    NOT_FOUND = "NotFoundError"  # 404
    TIMEOUT = "Timeout"  # 408, 504, and the connect / TLS / answer deadlines
    RATE_LIMIT = "RateLimitError"  # 429
    INTERNAL_SERVER = "InternalServerError"  # 500 and the 5xx not named here
    BAD_GATEWAY = "BadGatewayError"  # 502
    SERVICE_UNAVAILABLE = "ServiceUnavailableError"  # 503
    CONNECTION = "APIConnectionError"  # refused, reset, TLS failures
    API_ERROR = "APIError"  # an unreadable answer, a redirect not followed, other statuses


_KIND_BY_STATUS = {
    400: ErrorKind.BAD_REQUEST,
    401: ErrorKind.AUTHENTICATION,
    403: ErrorKind.PERMISSION_DENIED,
    404: ErrorKind.NOT_FOUND,
    408: ErrorKind.TIMEOUT,
    413: ErrorKind.BAD_REQUEST,
    422: ErrorKind.BAD_REQUEST,
    429: ErrorKind.RATE_LIMIT,
    502: ErrorKind.BAD_GATEWAY,
    503: ErrorKind.SERVICE_UNAVAILABLE,
    504: ErrorKind.TIMEOUT,
}
# A request error: the request itself may be at fault, so it is final once every deployment
# tried returned one (a deployment-specific one fails over and counts).
REQUEST_ERRORS = frozenset({ErrorKind.BAD_REQUEST})


def kind_of_status(status: int) -> ErrorKind:
    kind = _KIND_BY_STATUS.get(status)
    if kind is not None:
        return kind
    return ErrorKind.INTERNAL_SERVER if status >= 500 else ErrorKind.API_ERROR


class GatewayError(Exception):
    """A completion could not be obtained from the group.

    `attempts` is how many requests were made (in every group of a fallback chain),
    `deployment` the last deployment tried (None when no request was made), `last_group` the group
    it belongs to, and `last_error` a redacted, bounded description of the last failure.
    """

    def __init__(
        self,
        message: str,
        *,
        group: str,
        attempts: int,
        last_error: str | None = None,
        deployment: str | None = None,
        last_group: str | None = None,
    ) -> None:
        detail = f"{message} (group {group!r}, {attempts} attempt(s)"
        if last_error:
            detail += f", last error: {last_error}"
        super().__init__(detail + ")")
        self.message = message
        self.group = group
        self.attempts = attempts
        self.last_error = last_error
        self.deployment = deployment
        self.last_group = last_group or group


class AllDeploymentsCoolingDown(GatewayError):
    """Every deployment of the group is cooling down: the call failed fast, without a request."""


class AttemptsExhausted(GatewayError):
    """`num_retries` further attempts after the first one all failed."""


class RequestRejected(GatewayError):
    """The request itself was refused: by every deployment tried (a 400, 413 or 422 that each
    returned), by the only deployment of a group of one, or by a retry policy of 0 retries."""


class FallbacksFailed(GatewayError):
    """The group and every fallback group it names failed; the last group's failure is the
    cause (`__cause__`), its attempts counted in `attempts`."""


class RateLimitsReached(GatewayError):
    """usage-based-routing: every healthy deployment is at its rpm/tpm limit for this minute."""


class AttemptError(Exception):
    """One failed HTTP attempt on one deployment (internal to the gateway).

    `kind` is litellm's class of the failure (what retry and allowed-fails policies key on).
    In a group of several deployments every failure fails over to another deployment and counts
    towards this one's cooldown, except a request error (`kind` in REQUEST_ERRORS), which
    counts only once another deployment shows it was this deployment's own. `retry_after` is the
    deployment's Retry-After, `elapsed` how long the attempt took until it failed (seconds;
    None when no request was sent), `timed_out` whether it failed by running out of time.
    """

    def __init__(
        self,
        description: str,
        *,
        kind: ErrorKind,
        status: int | None = None,
        retry_after: float | None = None,
        elapsed: float | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.elapsed = elapsed
        self.timed_out = timed_out

    @property
    def request_error(self) -> bool:
        return self.kind in REQUEST_ERRORS

    @property
    def counts(self) -> bool:
        """Whether it says at once that the deployment is unwell (every failure but a request
        error, which counts only once another deployment answers the same request)."""
        return self.kind not in REQUEST_ERRORS

    @property
    def refused(self) -> bool:
        """A 4xx other than 408/429: the deployment refused this request; asking it again will
        not help (a group of one ends its call)."""
        return (
            self.status is not None and 400 <= self.status < 500 and self.status not in (408, 429)
        )


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
