"""The one line of a failed Kafka connection, and the TLS files behind it.

What a real broker and relay answer is in tests/integration/test_kafka_security.py; here each
kind of failure is built as aiokafka raises it, and the `ssl_*` files are checked at load time.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from cryptography.hazmat.primitives import serialization

from tests.tls_certificates import Pki, make_test_pki
from worker.config.endpoints import KafkaSettings, read_endpoints
from worker.kafka.connect_errors import (
    BOOTSTRAP_FAILURE_FORMAT,
    ConnectFailures,
    capture_connect_failures,
    describe_connection_failure,
)
from worker.kafka.tls import TlsFileError, kafka_tls_context

PASSWORD = "s3cret-kafka-pw"  # noqa: S105 - looked for in every line


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def sasl_ssl(pki: Pki, mechanism: str = "SCRAM-SHA-256") -> KafkaSettings:
    return KafkaSettings.model_validate(
        {
            "url": "broker:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": mechanism,
            "sasl_username": "router",
            "sasl_password": PASSWORD,
            "ssl_cafile": str(pki.ca),
        }
    )


def verification_error(message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.verify_message = message
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    return error


def test_tls_verification_names_the_ca_file(pki: Pki) -> None:
    connection = sasl_ssl(pki).connection_kwargs()
    line = describe_connection_failure(verification_error("unable to get issuer"), connection)
    assert line == (
        f"TLS: the broker's certificate did not verify against CA file {pki.ca}: "
        "unable to get issuer"
    )


def test_without_a_ca_file_the_system_certificates_are_named() -> None:
    connection = KafkaSettings(security_protocol="SSL").connection_kwargs()
    line = describe_connection_failure(verification_error("self-signed"), connection)
    assert "did not verify against the system's CA certificates: self-signed" in line


def test_a_host_name_mismatch_says_how_to_skip_the_check(pki: Pki) -> None:
    error = verification_error("Hostname mismatch, certificate is not valid for 'broker'.")
    line = describe_connection_failure(error, sasl_ssl(pki).connection_kwargs())
    assert line.endswith("ssl_check_hostname: false skips it)")


def test_a_refused_login_names_user_and_mechanism_never_the_password(pki: Pki) -> None:
    # A broker's message could quote anything: the password is scrubbed from the line.
    error = SaslAuthenticationFailed(f"Authentication failed for {PASSWORD}")
    line = describe_connection_failure(error, sasl_ssl(pki).connection_kwargs())
    refused = "SASL: the broker refused user 'router' with SCRAM-SHA-256"
    assert line == f"{refused}: Authentication failed for ***"


def test_a_mechanism_the_broker_does_not_offer(pki: Pki) -> None:
    line = describe_connection_failure(
        UnsupportedSaslMechanismError("x"), sasl_ssl(pki, "PLAIN").connection_kwargs()
    )
    assert line == "SASL: the broker does not offer PLAIN (user 'router')"


def test_a_bootstrap_failure_is_described_by_the_causes_aiokafka_logged(pki: Pki) -> None:
    """aiokafka logs each server's error and raises a bare KafkaConnectionError."""
    failures = ConnectFailures()
    client_log = logging.getLogger("test.aiokafka")
    client_log.addFilter(failures)
    try:
        record = client_log.makeRecord(
            "aiokafka", logging.ERROR, __file__, 1, BOOTSTRAP_FAILURE_FORMAT,
            ("broker", 9093, ConnectionRefusedError(111, "refused")), None,
        )  # fmt: skip
        assert not failures.filter(record)  # kept, and not logged
        other = client_log.makeRecord(
            "aiokafka", logging.ERROR, __file__, 1, "Unable connect to node %s", (1,), None
        )
        assert failures.filter(other)  # everything else is logged as it is
        [kept] = failures.take()
        assert kept.server == "broker:9093"
        assert failures.take() == []
    finally:
        client_log.removeFilter(failures)


def test_a_bootstrap_failure_is_described_by_its_own_servers_causes(pki: Pki) -> None:
    capture_connect_failures()  # as worker/logs.py does for `run`
    client_log = logging.getLogger("aiokafka")
    refused = ConnectionRefusedError(111, "refused")
    client_log.error(BOOTSTRAP_FAILURE_FORMAT, "other-broker", 9093, verification_error("x"))
    client_log.error(BOOTSTRAP_FAILURE_FORMAT, "broker", 9093, refused)
    error = KafkaConnectionError("Unable to bootstrap from [('broker', 9093, 2)]")
    line = describe_connection_failure(error, sasl_ssl(pki).connection_kwargs())
    # Another client's failure (another server) is not this one's cause.
    assert line == "nothing accepts connections at broker:9093 (connection refused)"


def test_a_bootstrap_failure_without_a_captured_cause(pki: Pki) -> None:
    error = KafkaConnectionError("Unable to bootstrap from [('broker', 9093, 2)]")
    line = describe_connection_failure(error, sasl_ssl(pki).connection_kwargs())
    assert line == (
        "no bootstrap server answered (security_protocol SASL_SSL, SCRAM-SHA-256 as 'router', "
        f"CA file {pki.ca}, no client certificate)"
    )


def test_the_connection_kwargs_repr_hides_the_password(pki: Pki) -> None:
    connection = sasl_ssl(pki).connection_kwargs()
    assert connection["sasl_plain_password"] == PASSWORD  # aiokafka gets it
    assert PASSWORD not in repr(connection)
    assert PASSWORD not in repr({"settings": connection})
    assert "'sasl_plain_password': '***'" in repr(connection)


def test_tls_context_verifies_and_presents_the_client_certificate(pki: Pki) -> None:
    context = kafka_tls_context(
        cafile=str(pki.ca), certfile=str(pki.client.certificate), keyfile=str(pki.client.key)
    )
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cafile == str(pki.ca) and context.certfile == str(pki.client.certificate)
    [ca] = context.get_ca_certs()
    assert (("commonName", "coexistence-router test CA"),) in ca["subject"]


def encrypted_key(pki: Pki, directory: Path) -> Path:
    key = serialization.load_pem_private_key(pki.client.key.read_bytes(), password=None)
    path = directory / "encrypted.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return path


def test_tls_files_that_cannot_be_used_name_their_key(pki: Pki, tmp_path: Path) -> None:
    cases = {
        "ssl_certfile": (str(pki.client.certificate), str(pki.broker.key)),  # not its key
        "ssl_keyfile": (None, str(pki.client.key)),  # a key without its certificate
    }
    for key, (certfile, keyfile) in cases.items():
        with pytest.raises(TlsFileError) as caught:
            kafka_tls_context(cafile=str(pki.ca), certfile=certfile, keyfile=keyfile)
        assert caught.value.key == key
    # An encrypted key is refused, not prompted for on the terminal.
    with pytest.raises(TlsFileError) as caught:
        kafka_tls_context(
            certfile=str(pki.client.certificate), keyfile=str(encrypted_key(pki, tmp_path))
        )
    assert caught.value.key == "ssl_keyfile"
    assert "encrypted" in caught.value.reason


def test_endpoints_with_a_mismatched_key_refuse_to_start(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "endpoints.yml"
    path.write_text(
        "kafka:\n  security_protocol: SSL\n"
        f"  ssl_cafile: {pki.ca}\n  ssl_certfile: {pki.client.certificate}\n"
        f"  ssl_keyfile: {pki.broker.key}\n"
    )
    [line] = read_endpoints(path, {}).problems
    assert line.startswith(f"{path}: kafka.ssl_certfile: no certificate and key read from ")
    assert "KEY_VALUES_MISMATCH" in line
