"""Why connecting to Kafka failed, in one line, in the terms of endpoints.yml's `kafka:` keys.

aiokafka tries every bootstrap server in turn and, when none answers, raises a bare
KafkaConnectionError ("Unable to bootstrap from [...]"); the cause — a certificate that did not
verify, a refused SASL login, a refused connection — reaches only its log, as an ERROR line per
server and attempt. `capture_connect_failures()` (installed by the logging setup) keeps those
causes instead of logging them, and `describe_connection_failure()`, called by the worker's
reconnect line, says what failed: TLS verification against which CA file, SASL authentication
as which user with which mechanism. Never a password: the text is scrubbed of it besides.
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

# aiokafka.client's line for one bootstrap server that failed (aiokafka 0.11 to 0.14).
BOOTSTRAP_FAILURE_FORMAT = 'Unable connect to "%s:%s": %s'
BOOTSTRAP_FAILED = "Unable to bootstrap from"
# The functions of aiokafka's SCRAM client that read the broker's messages.
_SCRAM_STEPS = ("process_server_first_message", "process_server_final_message")


@dataclass(frozen=True)
class ConnectFailure:
    host: str
    port: int
    error: BaseException

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"


class ConnectFailures(logging.Filter):
    """On aiokafka's client logger: keeps each failed bootstrap connection's error (the last
    `keep`) and drops its log line, which the worker's reconnect line replaces."""

    def __init__(self, keep: int = 8) -> None:
        super().__init__()
        self._failures: deque[ConnectFailure] = deque(maxlen=keep)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg != BOOTSTRAP_FAILURE_FORMAT or not isinstance(args, tuple) or len(args) != 3:
            return True
        host, port, error = args
        if not isinstance(port, int) or not isinstance(error, BaseException):
            return True
        self._failures.append(ConnectFailure(str(host), port, error))
        return False

    def take(self) -> list[ConnectFailure]:
        """The failures kept since the last call."""
        failures = list(self._failures)
        self._failures.clear()
        return failures


_capture: ConnectFailures | None = None


def capture_connect_failures() -> None:
    """Install the filter (once per process) on aiokafka.client's logger, "aiokafka"."""
    global _capture
    if _capture is None:
        _capture = ConnectFailures()
        # First of the logger's filters: one that drops repeated lines (client_logs) must not
        # hide a failure from it.
        logging.getLogger("aiokafka").filters.insert(0, _capture)


def describe_connection_failure(error: BaseException, connection: Mapping[str, Any]) -> str:
    """One line: what failed, for the aiokafka client `connection` (its keyword arguments)."""
    if isinstance(error, KafkaConnectionError) and BOOTSTRAP_FAILED in str(error):
        servers = _servers(connection)
        taken = _capture.take() if _capture is not None else []
        # Only this client's servers: another client of the process may have failed meanwhile.
        failures = [f for f in taken if (f.host.strip("[]"), f.port) in servers]
        if failures:
            lines = dict.fromkeys(_describe(f.error, connection, f.server) for f in failures)
            return _scrubbed("; ".join(lines), connection)
        return _scrubbed(f"no bootstrap server answered ({_security(connection)})", connection)
    return _scrubbed(_describe(error, connection, None), connection)


def _describe(error: BaseException, connection: Mapping[str, Any], server: str | None) -> str:
    at = f" at {server}" if server else ""
    user = connection.get("sasl_plain_username")
    mechanism = connection.get("sasl_mechanism")
    context = connection.get("ssl_context")
    if isinstance(error, ssl.SSLCertVerificationError):
        cafile = getattr(context, "cafile", None)
        against = f"CA file {cafile}" if cafile else "the system's CA certificates"
        reason = error.verify_message or error.reason or str(error)
        hint = ""
        if "mismatch" in reason:
            hint = " (the certificate does not name this host; ssl_check_hostname: false skips it)"
        return f"TLS: the broker's certificate{at} did not verify against {against}: {reason}{hint}"
    if isinstance(error, ssl.SSLError):
        certfile = getattr(context, "certfile", None)
        client = f"client certificate {certfile}" if certfile else "no client certificate"
        return f"TLS handshake{at} failed ({client}): {error.reason or error}"
    if isinstance(error, SaslAuthenticationFailed):
        said = f": {error.args[0]}" if error.args and isinstance(error.args[0], str) else ""
        return f"SASL: the broker{at} refused user {user!r} with {mechanism}{said}"
    if isinstance(error, UnsupportedSaslMechanismError):
        return f"SASL: the broker{at} does not offer {mechanism} (user {user!r})"
    if scram_refusal(error):
        # RFC 5802 lets a broker answer "e=<reason>" instead of its signature; aiokafka then
        # fails looking for the signature.
        return (
            f"SASL: the broker{at} refused user {user!r} with {mechanism} "
            "(its SCRAM answer carried no server signature)"
        )
    if isinstance(error, ConnectionRefusedError):
        return f"nothing accepts connections{at} (connection refused)"
    if isinstance(error, TimeoutError):
        return f"no answer{at} in time ({_security(connection)})"
    if isinstance(error, KafkaConnectionError):
        # E.g. a broker that hangs up on a mechanism or a protocol it does not speak.
        return f"the broker{at} closed the connection ({_security(connection)})"
    return f"{type(error).__name__}{at}: {error}"


def _servers(connection: Mapping[str, Any]) -> set[tuple[str, int]]:
    """(host, port) of each bootstrap server, as aiokafka reads them (port 9092 by default)."""
    given = connection.get("bootstrap_servers", [])
    servers = set()
    for server in [given] if isinstance(given, str) else given:
        host, colon, port = str(server).strip().rpartition(":")
        if not colon or not port.isdigit():
            host, port = str(server).strip(), "9092"
        servers.add((host.strip("[]"), int(port)))
    return servers


def scram_refusal(error: BaseException) -> bool:
    """aiokafka's KeyError/ValueError when a broker ends SCRAM with `e=<reason>`: a refused
    login, not a bug."""
    if not isinstance(error, KeyError | ValueError):
        return False
    frame = error.__traceback__
    while frame is not None:
        code = frame.tb_frame.f_code
        if code.co_name in _SCRAM_STEPS and code.co_filename.endswith("conn.py"):
            return True
        frame = frame.tb_next
    return False


def _security(connection: Mapping[str, Any]) -> str:
    protocol = connection.get("security_protocol", "PLAINTEXT")
    parts = [f"security_protocol {protocol}"]
    if str(protocol).startswith("SASL_"):
        parts.append(
            f"{connection.get('sasl_mechanism')} as {connection.get('sasl_plain_username')!r}"
        )
    context = connection.get("ssl_context")
    if context is not None:
        cafile = getattr(context, "cafile", None)
        certfile = getattr(context, "certfile", None)
        parts.append(f"CA file {cafile}" if cafile else "the system's CA certificates")
        # A broker that wants a client certificate and gets none hangs up after the handshake.
        parts.append(f"client certificate {certfile}" if certfile else "no client certificate")
    return ", ".join(parts)


def _scrubbed(text: str, connection: Mapping[str, Any]) -> str:
    password = connection.get("sasl_plain_password")
    if isinstance(password, str) and password:
        text = text.replace(password, "***")
    return text
