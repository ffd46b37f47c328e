"""Which certificates the gateway's HTTPS connections trust, and which one they present, read
from the environment as Rasa Pro reads it for its LLM clients.

Rasa (rasa/shared/providers/_ssl_verification_utils.py, the same from 3.11 to 3.21) hands
litellm and the openai SDK's httpx client:

- `verify`: the first set of RASA_CA_BUNDLE, REQUESTS_CA_BUNDLE (deprecated: Rasa warns) and
  SSL_VERIFY. httpx reads the value as the path of a CA bundle file (or a directory of them)
  that replaces the default trust store; any other value, `false` included, is an error there
  when the client is built, so it is refused here too, naming the variable.
- `cert`: the first set of RASA_SSL_CERTIFICATE and SSL_CERTIFICATE: a PEM file holding the
  client certificate and its private key, presented to servers that ask for one.

An empty variable counts as unset (Rasa's `os.environ.get(...) or ...`). Without any of them the
system's default trust store is used (OpenSSL's, which also honours SSL_CERT_FILE/SSL_CERT_DIR).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

CA_BUNDLE_VARIABLES = ("RASA_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_VERIFY")
CLIENT_CERTIFICATE_VARIABLES = ("RASA_SSL_CERTIFICATE", "SSL_CERTIFICATE")


def _first_set(environ: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = environ.get(name)
        if value:
            return name, value
    return None


@dataclass(frozen=True)
class TlsTrust:
    """The CA bundle and client certificate the environment names, each as (variable, path)."""

    ca_bundle: tuple[str, str] | None = None
    client_certificate: tuple[str, str] | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> TlsTrust:
        env = os.environ if environ is None else environ
        return cls(
            _first_set(env, CA_BUNDLE_VARIABLES), _first_set(env, CLIENT_CERTIFICATE_VARIABLES)
        )

    @property
    def is_default(self) -> bool:
        return self.ca_bundle is None and self.client_certificate is None

    def context(self) -> ssl.SSLContext:
        """A client context with this trust; ValueError naming the variable when a file named
        by one cannot be used."""
        if self.ca_bundle is None:
            context = ssl.create_default_context()
        else:
            name, path = self.ca_bundle
            if name == "REQUESTS_CA_BUNDLE":
                log.warning(
                    "REQUESTS_CA_BUNDLE is deprecated for Rasa's LLM clients (removed in Rasa "
                    "Pro 4.0.0): set RASA_CA_BUNDLE instead"
                )
            if not os.path.exists(path):
                raise ValueError(
                    f"{name}={path[:200]!r} is not a file or directory: it names the CA bundle "
                    "that HTTPS connections to LLM deployments trust"
                )
            try:
                if os.path.isdir(path):
                    context = ssl.create_default_context(capath=path)
                else:
                    context = ssl.create_default_context(cafile=path)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"{name}={path[:200]!r}: not a usable CA bundle ({exc})") from None
        if self.client_certificate is not None:
            name, path = self.client_certificate
            try:
                context.load_cert_chain(path)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    f"{name}={path[:200]!r}: not a usable client certificate (a PEM file with "
                    f"the certificate and its private key) ({exc})"
                ) from None
        return context
