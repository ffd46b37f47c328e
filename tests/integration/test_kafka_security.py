"""Kafka over TLS and SASL: `run` against a listener that requires them, and the one line it logs
when it cannot get in.

The secured listener is tests/kafka_relay.py in front of a plaintext Tansu that advertises the
relay's port: Tansu 0.6 can be neither a TLS listener (`--cert` and `--key` exclude each other)
nor a SASL one that lets anybody in (see the README, "Kafka security"). What Tansu's own
`--authentication` does — refuse every login — is tested too. Each test has its own broker and
relay, whatever KAFKA_BOOTSTRAP_SERVERS names.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from tests.kafka_relay import MECHANISMS, KafkaRelay
from tests.kafka_support import Outgoing, TopicReader, produce, routed, user_message
from tests.tls_certificates import Pki, make_test_pki
from tests.worker_processes import WorkerProcess, wait_for_balanced_group, write_bundle
from worker.config.endpoints import ConnectionKwargs, KafkaSettings
from worker.kafka.broker import EmbeddedBroker, free_loopback_port
from worker.kafka.connect_errors import capture_connect_failures, describe_connection_failure

ROUTER_PASSWORD = "router-pw-7f3a9c"  # noqa: S105 - a test credential, looked for in the logs
TESTER_PASSWORD = "tester-pw-51be02"  # noqa: S105
USERS = {"router": ROUTER_PASSWORD, "tester": TESTER_PASSWORD}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def _connect_failures_captured() -> None:
    # As `run` does at start (worker/logs.py): the causes aiokafka only logs are kept.
    capture_connect_failures()


@asynccontextmanager
async def secured_listener(
    tmp_path: Path, *, tls: Any = None, users: dict[str, str] | None = None
) -> AsyncIterator[KafkaRelay]:
    """A Tansu of its own, reachable only through the relay (its advertised address)."""
    port = free_loopback_port()
    async with (
        EmbeddedBroker(advertised_port=port, log_path=tmp_path / "tansu.log") as broker,
        KafkaRelay(broker.port, tls=tls, users=users, port=port) as relay,
    ):
        yield relay


async def failure_of(connection: ConnectionKwargs) -> tuple[BaseException, str]:
    """The error of a client that cannot connect, and the line the worker would log for it."""
    producer = AIOKafkaProducer(**connection, request_timeout_ms=10_000)
    try:
        await producer.start()
    except Exception as error:  # noqa: BLE001 - whatever aiokafka raises is what is described
        return error, describe_connection_failure(error, connection)
    finally:
        await producer.stop()
    raise AssertionError("the client connected")


async def routes_two_messages(bundle: Any, address: str, connection: ConnectionKwargs) -> None:
    """Start `run` on the bundle; a CALM and an NLU message come out on their inboxes."""
    worker = await WorkerProcess.start(bundle)
    try:
        await wait_for_balanced_group([worker], 6)
        await produce(
            address,
            bundle.topics.input,
            [
                user_message("alice", "send money", "transfer_money"),
                user_message("bob", "a human please", "handoff"),
            ],
            connection=connection,
        )
        async with TopicReader(
            address, bundle.topics.calm, bundle.topics.nlu, connection=connection
        ) as reader:
            records = await reader.wait_for(2)
        routes = {routed(r)["message"]["sender_id"]: routed(r)["routing"]["route"] for r in records}
        assert routes == {"alice": "calm", "bob": "nlu"}
    finally:
        assert await worker.stop() == 0, worker.output
    assert "Traceback" not in worker.output


def only_reconnect_lines_complain(worker: WorkerProcess) -> list[str]:
    """Every WARNING or ERROR line the worker logged is its reconnect line: returns them.
    (Start-up remarks on the configuration, such as a missing --domain, are not about Kafka.)"""
    complaints = [
        line
        for line in worker.lines
        if (" WARNING " in line or " ERROR " in line) and " worker.config." not in line
    ]
    assert all(" unavailable (" in line for line in complaints), worker.output
    return complaints


async def two_failed_attempts(bundle: Any) -> tuple[WorkerProcess, list[str]]:
    """`run` on the bundle until its second attempt failed, then stopped: its two lines."""
    worker = await WorkerProcess.start(bundle)
    try:
        await worker.wait_for_line(r"retrying in 1\.0s")
    finally:
        assert await worker.stop() == 0, worker.output
    first, second = only_reconnect_lines_complain(worker)[:2]
    assert first.endswith("retrying in 0.5s") and second.endswith("retrying in 1.0s")
    assert "Traceback" not in worker.output
    return worker, [first, second]


async def test_run_routes_over_mutual_tls(tmp_path: Path, pki: Pki) -> None:
    tls = pki.broker_context(require_client_certificate=True)
    async with secured_listener(tmp_path, tls=tls) as relay:
        # Relative file names: found next to endpoints.yml, as the README says.
        for pem in (pki.ca, pki.client.certificate, pki.client.key):
            (tmp_path / pem.name).write_bytes(pem.read_bytes())
        bundle = write_bundle(
            tmp_path,
            relay.address,
            security_protocol="SSL",
            ssl_cafile=pki.ca.name,
            ssl_certfile=pki.client.certificate.name,
            ssl_keyfile=pki.client.key.name,
        )
        tester = KafkaSettings(
            url=[relay.address],
            security_protocol="SSL",
            ssl_cafile=str(pki.ca),
            ssl_certfile=str(pki.client.certificate),
            ssl_keyfile=str(pki.client.key),
        )
        await routes_two_messages(bundle, relay.address, tester.connection_kwargs())
    # Every connection — the worker's and the test's — presented the client certificate.
    assert relay.seen.client_subjects
    assert set(relay.seen.client_subjects) == {"coexistence-router"}


async def test_run_routes_over_sasl_ssl_with_scram(tmp_path: Path, pki: Pki) -> None:
    tls = pki.broker_context(require_client_certificate=False)
    async with secured_listener(tmp_path, tls=tls, users=USERS) as relay:
        secured = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"}
        bundle = write_bundle(
            tmp_path,
            relay.address,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            ssl_cafile=str(pki.ca),
            sasl_username="router",
            sasl_password=ROUTER_PASSWORD,
        )
        tester = KafkaSettings.model_validate(
            {
                "url": relay.address,
                **secured,
                "ssl_cafile": str(pki.ca),
                "sasl_username": "tester",
                "sasl_password": TESTER_PASSWORD,
            }
        )
        await routes_two_messages(bundle, relay.address, tester.connection_kwargs())
    assert ("router", "SCRAM-SHA-512") in relay.seen.logins
    assert {user for user, _ in relay.seen.logins} == {"router", "tester"}
    assert relay.seen.refused == []


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_each_sasl_mechanism_logs_in(tmp_path: Path, mechanism: str) -> None:
    async with secured_listener(tmp_path, users=USERS) as relay:
        connection = KafkaSettings.model_validate(
            {
                "url": relay.address,
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": mechanism,
                "sasl_username": "tester",
                "sasl_password": TESTER_PASSWORD,
            }
        ).connection_kwargs()
        topic = f"sasl-{uuid.uuid4().hex[:8]}"
        await produce(relay.address, topic, [Outgoing(b"hello", b"k")], connection=connection)
        async with TopicReader(relay.address, topic, connection=connection) as reader:
            [record] = await reader.wait_for(1)
        assert record.value == b"hello"
    assert set(relay.seen.logins) == {("tester", mechanism)}


async def test_a_wrong_ca_file_is_one_line_then_the_backoff(tmp_path: Path, pki: Pki) -> None:
    tls = pki.broker_context(require_client_certificate=False)
    async with secured_listener(tmp_path, tls=tls) as relay:
        bundle = write_bundle(
            tmp_path, relay.address, security_protocol="SSL", ssl_cafile=str(pki.other_ca)
        )
        _, (first, second) = await two_failed_attempts(bundle)
    for line in (first, second):
        assert f"did not verify against CA file {pki.other_ca}" in line, line
        assert "TLS: the broker's certificate at" in line


async def test_a_wrong_password_is_one_line_naming_user_and_mechanism(tmp_path: Path) -> None:
    async with secured_listener(tmp_path, users=USERS) as relay:
        wrong = "not-the-router-password-93d1"
        bundle = write_bundle(
            tmp_path,
            relay.address,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="router",
            sasl_password=wrong,
        )
        worker, (first, second) = await two_failed_attempts(bundle)
    for line in (first, second):
        assert "SASL: the broker at" in line and "refused user 'router' with SCRAM-SHA-256" in line
    assert wrong not in worker.output
    assert relay.seen.refused[:2] == [("router", "SCRAM-SHA-256")] * 2


async def test_the_broker_certificate_must_name_the_host(tmp_path: Path, pki: Pki) -> None:
    tls = pki.broker_context(require_client_certificate=False, certificate=pki.wrong_name_broker)
    async with secured_listener(tmp_path, tls=tls) as relay:
        settings = {"url": relay.address, "security_protocol": "SSL", "ssl_cafile": str(pki.ca)}
        _, line = await failure_of(KafkaSettings.model_validate(settings).connection_kwargs())
        assert "did not verify against CA file" in line and "mismatch" in line
        assert "ssl_check_hostname: false" in line
        # Rasa's own default: the chain is still verified, the name is not.
        unchecked = KafkaSettings.model_validate({**settings, "ssl_check_hostname": False})
        topic = f"tls-{uuid.uuid4().hex[:8]}"
        connection = unchecked.connection_kwargs()
        await produce(relay.address, topic, [Outgoing(b"x")], connection=connection)
        async with TopicReader(relay.address, topic, connection=connection) as reader:
            assert len(await reader.wait_for(1)) == 1


async def test_no_client_certificate_for_a_listener_that_wants_one(
    tmp_path: Path, pki: Pki
) -> None:
    tls = pki.broker_context(require_client_certificate=True)
    async with secured_listener(tmp_path, tls=tls) as relay:
        settings = KafkaSettings(
            url=[relay.address], security_protocol="SSL", ssl_cafile=str(pki.ca)
        )
        error, line = await failure_of(settings.connection_kwargs())
    assert isinstance(error, KafkaConnectionError)
    assert "closed the connection" in line and "no client certificate" in line, line


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_a_login_tansu_refuses_is_described(tmp_path: Path, mechanism: str) -> None:
    """Tansu 0.6 with --authentication: PLAIN is not offered (it hangs up); a SCRAM login ends
    with `e=unknown-user` instead of a signature, whatever the credentials (README)."""
    async with EmbeddedBroker(authentication=True, log_path=tmp_path / "tansu.log") as broker:
        settings = KafkaSettings(
            url=[broker.bootstrap_servers],
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=mechanism,
            sasl_username="router",
            sasl_password=ROUTER_PASSWORD,
        )
        _, line = await failure_of(settings.connection_kwargs())
    if mechanism == "PLAIN":
        assert "closed the connection (security_protocol SASL_PLAINTEXT, PLAIN as 'router')" in line
    else:
        assert f"refused user 'router' with {mechanism}" in line
        assert "no server signature" in line
    assert ROUTER_PASSWORD not in line
