"""A secured Kafka listener in front of Tansu, on loopback: TLS and SASL as a Kafka broker has.

Tansu 0.6 cannot be the secured broker itself: its `--cert` and `--key` exclude each other, and
with `--authentication` it offers SCRAM only, with no way to store a credential (see the README,
"Kafka security"). So the tests put this relay in front of a plaintext Tansu that advertises the
relay's port, and every client — the worker and the test's own — goes through it:

* `tls`: a server context. The relay terminates TLS with it (a context that requires a client
  certificate makes it mutual TLS) and records the client certificate's subject.
* `users` (name -> password): the relay answers SaslHandshake and SaslAuthenticate itself, as a
  Kafka broker's SASL listener does — PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (the server side of
  SCRAM is `scramp`'s, independent of aiokafka's client side); ApiVersions is passed on to Tansu;
  any other request before authentication closes the connection; a refused login gets Kafka's
  error 58 (SASL_AUTHENTICATION_FAILED) and its message, then the connection is closed.
  Once authenticated, bytes are copied both ways.

Frames before authentication are bounded (Kafka's sasl.server.max.receive.size), so a client
that never authenticates costs at most that much memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any

from aiokafka.protocol.admin import (
    SaslAuthenticateRequest_v0,
    SaslAuthenticateRequest_v1,
    SaslAuthenticateResponse_v0,
    SaslAuthenticateResponse_v1,
    SaslHandShakeRequest_v1,
    SaslHandShakeResponse_v1,
)
from scramp import ScramException, ScramMechanism

from tests.tcp_proxy import LOOPBACK, pump
from worker.kafka.broker import free_loopback_port
from worker.lifecycle import Started

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
NO_ERROR, UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 0, 33, 34, 58
MAX_UNAUTHENTICATED_FRAME = 524_288  # bytes: Kafka's sasl.server.max.receive.size
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
MECHANISMS = ("PLAIN", *SCRAM_MECHANISMS)
SCRAM_ITERATIONS = 4096  # Kafka's minimum


class Refused(Exception):
    """The client broke the protocol: close the connection, as Kafka does."""


@dataclass
class Frame:
    api_key: int
    api_version: int
    correlation_id: int
    body: bytes  # after the request header (v1: key, version, correlation id, client id)
    raw: bytes  # the whole frame, size included

    @classmethod
    async def read(cls, reader: asyncio.StreamReader) -> Frame:
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        if not 8 <= size <= MAX_UNAUTHENTICATED_FRAME:
            raise Refused(f"frame of {size} bytes before authentication")
        payload = await reader.readexactly(size)
        api_key, api_version, correlation_id, client_id_length = struct.unpack(
            ">hhih", payload[:10]
        )
        header = 10 + max(client_id_length, 0)
        return cls(
            api_key,
            api_version,
            correlation_id,
            payload[header:],
            struct.pack(">i", size) + payload,
        )


def _response(correlation_id: int, body: bytes) -> bytes:
    return struct.pack(">ii", 4 + len(body), correlation_id) + body


@dataclass
class Login:
    """One connection's SASL state."""

    mechanism: str | None = None
    user: str | None = None
    scram: Any = None  # scramp's ScramServer of the exchange in progress (scramp is untyped)
    done: bool = False


@dataclass
class RelayLog:
    """What the relay saw: logins as (user, mechanism), refused ones, client certificates."""

    logins: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str | None, str]] = field(default_factory=list)
    client_subjects: list[str] = field(default_factory=list)


class KafkaRelay(Started):
    def __init__(
        self,
        upstream_port: int,
        *,
        tls: ssl.SSLContext | None = None,
        users: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_loopback_port()
        self.tls = tls
        self.users = users
        self.seen = RelayLog()
        self._scram = {name: ScramMechanism(name) for name in SCRAM_MECHANISMS}
        self._scram_credentials: dict[tuple[str, str], tuple[bytes, bytes, bytes, int]] = {
            (name, user): mechanism.make_auth_info(password, iteration_count=SCRAM_ITERATIONS)
            for name, mechanism in self._scram.items()
            for user, password in (users or {}).items()
        }
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connect, LOOPBACK, self.port, ssl=self.tls, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        links = list(self._links)
        for link in links:
            link.cancel()
        await asyncio.gather(*links, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = asyncio.current_task()
        assert link is not None
        self._links.add(link)
        upstream: asyncio.StreamWriter | None = None
        try:
            peer = writer.get_extra_info("peercert")
            if peer:
                self.seen.client_subjects.append(_common_name(peer))
            upstream_reader, upstream = await asyncio.open_connection(LOOPBACK, self.upstream_port)
            if self.users is not None and not await self._authenticate(
                reader, writer, upstream_reader, upstream
            ):
                return
            pumps = [
                asyncio.create_task(pump(reader, upstream)),
                asyncio.create_task(pump(upstream_reader, writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in pumps:
                    task.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError, Refused, asyncio.CancelledError):
            pass  # the connection ends; the client sees it closed
        finally:
            self._links.discard(link)
            for end in (writer, upstream):
                if end is not None:
                    with contextlib.suppress(Exception):
                        end.close()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
    ) -> bool:
        """Until the client is authenticated; False when the connection is to be closed."""
        login = Login()
        while not login.done:
            frame = await Frame.read(reader)
            if frame.api_key == API_VERSIONS:
                upstream.write(frame.raw)
                size = await upstream_reader.readexactly(4)
                writer.write(size + await upstream_reader.readexactly(struct.unpack(">i", size)[0]))
            elif frame.api_key == SASL_HANDSHAKE and frame.api_version == 1:
                writer.write(_response(frame.correlation_id, self._handshake(login, frame.body)))
            elif frame.api_key == SASL_AUTHENTICATE and frame.api_version in (0, 1):
                body, ok = self._step(login, frame)
                writer.write(_response(frame.correlation_id, body))
                if not ok:
                    await writer.drain()
                    return False
            else:
                raise Refused(f"request {frame.api_key} v{frame.api_version} before authentication")
            await writer.drain()
        return True

    def _handshake(self, login: Login, body: bytes) -> bytes:
        mechanism = SaslHandShakeRequest_v1.decode(body).mechanism
        if mechanism not in MECHANISMS:
            return bytes(
                SaslHandShakeResponse_v1(UNSUPPORTED_SASL_MECHANISM, list(MECHANISMS)).encode()
            )
        login.mechanism = mechanism
        return bytes(SaslHandShakeResponse_v1(NO_ERROR, list(MECHANISMS)).encode())

    def _step(self, login: Login, frame: Frame) -> tuple[bytes, bool]:
        request = (
            SaslAuthenticateRequest_v0 if frame.api_version == 0 else SaslAuthenticateRequest_v1
        )
        token: bytes = request.decode(frame.body).sasl_auth_bytes
        if login.mechanism is None:
            return self._answer(
                frame, ILLEGAL_SASL_STATE, "SaslAuthenticate before SaslHandshake"
            ), False
        try:
            reply = (
                self._plain(login, token)
                if login.mechanism == "PLAIN"
                else self._scram_step(login, token)
            )
        except (ScramException, ValueError, KeyError):
            self.seen.refused.append((login.user, login.mechanism))
            message = (
                "Authentication failed: Invalid username or password"
                if login.mechanism == "PLAIN"
                else "Authentication failed during authentication due to invalid credentials "
                f"with SASL mechanism {login.mechanism}"
            )
            return self._answer(frame, SASL_AUTHENTICATION_FAILED, message), False
        if login.done:
            assert login.user is not None
            self.seen.logins.append((login.user, login.mechanism))
        return self._answer(frame, NO_ERROR, None, reply), True

    @staticmethod
    def _answer(frame: Frame, error: int, message: str | None, token: bytes = b"") -> bytes:
        if frame.api_version == 0:
            return bytes(SaslAuthenticateResponse_v0(error, message, token).encode())
        return bytes(SaslAuthenticateResponse_v1(error, message, token, 0).encode())

    def _plain(self, login: Login, token: bytes) -> bytes:
        _authzid, user, password = token.decode().split("\0")
        login.user = user
        expected = (self.users or {}).get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise ValueError("invalid credentials")
        login.done = True
        return b""

    def _scram_step(self, login: Login, token: bytes) -> bytes:
        mechanism = login.mechanism
        assert mechanism is not None
        if login.scram is None:

            def credentials(user: str) -> tuple[bytes, bytes, bytes, int]:
                login.user = user
                return self._scram_credentials[(mechanism, user)]  # KeyError: no such user

            login.scram = self._scram[mechanism].make_server(credentials)
            login.scram.set_client_first(token.decode())
            return str(login.scram.get_server_first()).encode()
        login.scram.set_client_final(token.decode())  # ScramException: a wrong password
        login.done = True
        return str(login.scram.get_server_final()).encode()


def _common_name(certificate: dict[str, object]) -> str:
    for rdn in certificate.get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""
