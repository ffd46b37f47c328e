"""Certificates made for one test run: a CA, a broker certificate for 127.0.0.1 and localhost,
a client certificate, and a second CA that signed neither (the "wrong CA").

Elliptic-curve keys (P-256): made in milliseconds. PEM files in a directory of the test's own.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Pem:
    certificate: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate that signed the broker's and the client's
    other_ca: Path  # a CA that signed neither
    broker: Pem
    client: Pem
    wrong_name_broker: Pem  # signed by `ca`, for another host

    def broker_context(
        self, *, require_client_certificate: bool, certificate: Pem | None = None
    ) -> ssl.SSLContext:
        """The server side of the relay: its certificate, and mutual TLS if asked."""
        served = certificate or self.broker
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(served.certificate, served.key)
        if require_client_certificate:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=self.ca)
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Pem:
    pem = Pem(directory / f"{stem}.crt", directory / f"{stem}.key")
    pem.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pem


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    names: tuple[str, ...] = (),
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name = issuer[0].subject if issuer else _name(subject)
    signing_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    if names:
        alternatives: list[x509.GeneralName] = []
        for name in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_test_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("coexistence-router test CA", ca_key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _certificate("some other CA", other_key)
    issued = {}
    for stem, subject, names, usage in (
        ("broker", "broker", LOOPBACK_NAMES, ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", "coexistence-router", (), ExtendedKeyUsageOID.CLIENT_AUTH),
        ("wrong-name", "broker.example", ("broker.example",), ExtendedKeyUsageOID.SERVER_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(subject, key, issuer=(ca, ca_key), names=names, usage=usage)
        issued[stem] = _write(directory, stem, cert, key)
    ca_path = _write(directory, "ca", ca, ca_key).certificate
    other_path = _write(directory, "other-ca", other, other_key).certificate
    return Pki(ca_path, other_path, issued["broker"], issued["client"], issued["wrong-name"])
