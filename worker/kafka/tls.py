"""The TLS context of every Kafka client, made from endpoints.yml's `ssl_*` files.

The context remembers the files it was made from, so that a failed handshake can say which CA
file the broker's certificate did not verify against (worker.kafka.connect_errors).
"""

from __future__ import annotations

import ssl


class TlsFileError(ValueError):
    """A `kafka.ssl_*` file that cannot be used; `key` names the setting."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


class KafkaTlsContext(ssl.SSLContext):
    """A client context (certificate and host name verified) that knows its files."""

    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None


def _no_passphrase() -> str:
    # Called by OpenSSL for an encrypted key; without it, OpenSSL would prompt on the terminal.
    raise TlsFileError("ssl_keyfile", "the key is encrypted; Rasa's kafka: keys take no passphrase")


def kafka_tls_context(
    *,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    check_hostname: bool = True,
) -> KafkaTlsContext:
    """The broker's certificate is verified against `cafile` (else the system's CA certificates);
    `certfile` (with `keyfile`, or the key inside it) is the client's certificate, when the broker
    asks for one."""
    context = KafkaTlsContext(ssl.PROTOCOL_TLS_CLIENT)
    context.cafile, context.certfile, context.keyfile = cafile, certfile, keyfile
    try:
        if cafile:
            context.load_verify_locations(cafile=cafile)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (ssl.SSLError, OSError) as error:
        raise TlsFileError("ssl_cafile", f"no CA certificate read from {cafile}: {error}") from None
    if keyfile and not certfile:
        raise TlsFileError("ssl_keyfile", "is given without ssl_certfile")
    if certfile:
        try:
            context.load_cert_chain(certfile, keyfile or None, password=_no_passphrase)
        except (ssl.SSLError, OSError) as error:
            raise TlsFileError(
                "ssl_certfile",
                f"no certificate and key read from {certfile}"
                + (f" and {keyfile}" if keyfile else "")
                + f": {error}",
            ) from None
    # After the CA: PROTOCOL_TLS_CLIENT verifies certificates and host names by default.
    context.check_hostname = check_hostname
    return context
