"""Azure Entra ID bearer tokens for an Azure deployment's `oauth:` block, through azure-identity
(the optional extra `azure`), as Rasa 3.12+ builds its credentials
(shared/providers/_configs/azure_entra_id_config.py):

    azure_entra_id_default             DefaultAzureCredential(authority=authority_host)
    azure_entra_id_client_secret       ClientSecretCredential(tenant_id, client_id,
                                           client_secret, authority, disable_instance_discovery)
    azure_entra_id_client_certificate  CertificateCredential(tenant_id, client_id,
                                           certificate_path, password, send_certificate_chain,
                                           authority, disable_instance_discovery)

A token is asked for `scopes` once and reused until shortly before it expires (or azure-identity
says to refresh it); one refresh at a time, however many calls wait for it. A refresh that fails
while the token still holds is logged, and the token used. The credential talks to Entra ID with
the CA bundle the gateway trusts for the deployments when one is set (RASA_CA_BUNDLE, …).
Secrets (the client secret, the certificate password, the tokens) are never logged: a failure
is its type and azure-identity's message, redacted. The gateway's redactor is given the secrets
and every token obtained, before the token is first sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from worker.llm.model_group import AzureOAuth
from worker.llm.redaction import Redactor

log = logging.getLogger(__name__)

EXTRA = "azure"
REFRESH_MARGIN = 300.0  # seconds before expiry a token is renewed (azure-core's own margin)
MIN_RETRY = 5.0  # seconds between two failed refreshes while the old token still holds


class TokenUnavailable(Exception):
    """No token could be obtained; the message is safe to log (no secret)."""


def azure_identity_missing() -> str | None:
    """None when azure-identity can be imported, else what to install."""
    try:
        import azure.identity.aio  # noqa: F401
    except ImportError:
        return (
            "oauth (Azure Entra ID) needs the optional extra: "
            f"pip install 'coexistence-router[{EXTRA}]'"
        )
    return None


def _credential(oauth: AzureOAuth, connection_verify: str | None) -> Any:
    from azure.identity.aio import (
        CertificateCredential,
        ClientSecretCredential,
        DefaultAzureCredential,
    )

    options: dict[str, Any] = {}
    if oauth.authority_host:
        options["authority"] = oauth.authority_host
    if connection_verify is not None:
        options["connection_verify"] = connection_verify
    if oauth.type == "azure_entra_id_default":
        return DefaultAzureCredential(**options)
    options["disable_instance_discovery"] = oauth.disable_instance_discovery
    assert oauth.tenant_id is not None and oauth.client_id is not None  # AzureOAuth checks
    if oauth.type == "azure_entra_id_client_secret":
        assert oauth.client_secret is not None
        return ClientSecretCredential(
            oauth.tenant_id, oauth.client_id, oauth.client_secret.get_secret_value(), **options
        )
    password = oauth.certificate_password
    return CertificateCredential(
        oauth.tenant_id,
        oauth.client_id,
        oauth.certificate_path,
        password=password.get_secret_value().encode() if password is not None else None,
        send_certificate_chain=oauth.send_certificate_chain,
        **options,
    )


class EntraToken:
    """The bearer token of one deployment's `oauth:`, cached and refreshed."""

    def __init__(
        self,
        oauth: AzureOAuth,
        *,
        name: str,
        connection_verify: str | None = None,
        clock: Callable[[], float] = time.time,
        credential: Any = None,
        redactor: Redactor | None = None,
    ) -> None:
        """`credential`: an azure-identity async credential to use instead of the one `oauth`
        describes (tests). `redactor`: the gateway's, told the secrets and each token."""
        self._oauth = oauth
        self._name = name
        self._redact = redactor if redactor is not None else Redactor()
        self._redact.learn(oauth.secrets())
        self._clock = clock
        if credential is None:
            missing = azure_identity_missing()
            if missing is not None:
                raise ValueError(f"azure deployment {name!r}: {missing}")
            try:
                credential = _credential(oauth, connection_verify)
            except ValueError as exc:  # azure-identity's checks (tenant id, authority)
                raise ValueError(f"azure deployment {name!r}: oauth: {exc}") from None
        self._credential = credential
        self._token: str | None = None
        self._expires_at = 0.0
        self._refresh_at = 0.0
        self._retry_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"EntraToken({self._name!r}, {self._oauth.type})"

    @property
    def value(self) -> str | None:
        """The current token (None before the first one): to redact it."""
        return self._token

    async def header(self) -> str:
        """`Bearer <token>`; TokenUnavailable when none can be had."""
        now = self._clock()
        token = self._token
        if token is not None and now < self._refresh_at:
            return f"Bearer {token}"
        if token is not None and now < self._expires_at and now < self._retry_at:
            return f"Bearer {token}"  # the last refresh failed a moment ago: keep this one
        task = self._refreshing
        if task is None:
            task = self._refreshing = asyncio.ensure_future(self._refresh())
            task.add_done_callback(self._refreshed)
        try:
            await asyncio.shield(task)
        except TokenUnavailable:
            token = self._token
            if token is not None and self._clock() < self._expires_at:
                return f"Bearer {token}"
            raise
        assert self._token is not None
        return f"Bearer {self._token}"

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved: a failure is the callers' to see

    async def _refresh(self) -> None:
        try:
            token = await self._credential.get_token(*self._oauth.scopes)
        except Exception as exc:  # noqa: BLE001 - azure-identity raises many kinds
            self._retry_at = self._clock() + MIN_RETRY
            reason = self._redact(f"{type(exc).__name__}: {exc}")
            log.warning("azure deployment %r: no Entra ID token: %s", self._name, reason)
            raise TokenUnavailable(f"no Entra ID token ({reason})") from None
        now = self._clock()
        expires = float(token.expires_on)
        self._redact.learn([token.token])
        self._token = token.token
        self._expires_at = expires
        # Renewed REFRESH_MARGIN before it expires; a short-lived token halfway through.
        self._refresh_at = expires - min(REFRESH_MARGIN, max(0.0, expires - now) / 2)
        log.debug("azure deployment %r: Entra ID token valid for %d s", self._name, expires - now)

    async def close(self) -> None:
        task = self._refreshing
        if task is not None:
            task.cancel()
        await self._credential.close()
