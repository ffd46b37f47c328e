"""AWS credentials of a Bedrock deployment, from botocore: chosen by the deployment's `aws_*`
keys as litellm's Bedrock client chooses them (llms/bedrock/base_aws_llm.py
BaseAWSLLM.get_credentials, litellm 1.69.3-1.101.0), the first that applies:

    aws_web_identity_token, aws_role_name, aws_session_name   STS AssumeRoleWithWebIdentity
    aws_role_name, aws_session_name (aws_external_id)          STS AssumeRole, from the keys
                                                               below, else the profile, else
                                                               the default chain
    aws_profile_name                                           that profile of the shared files
    aws_access_key_id, aws_secret_access_key                   these keys (aws_session_token)
    none of them                                               botocore's default chain

The chain and the profiles are botocore's own (botocore.session.Session): the environment,
the shared config and credentials files with their profiles, SSO, `credential_process`, a role
with `source_profile`, IRSA web identity (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), ECS
container and EC2 instance roles. Roles are assumed with botocore's own fetchers (the ones its
providers use), at `aws_sts_endpoint` when given (else where botocore's configuration points,
AWS_ENDPOINT_URL_STS included). botocore reads its own variables from the process environment.

Credentials are obtained on the first call and then reused: a call signs with the frozen set it
finds, without resolving anything. Temporary credentials are refreshed when botocore says they
are due (its advisory window, 15 minutes before expiry) — in a worker thread, since botocore
blocks on the network and on processes, and one refresh at a time however many calls wait for
it. A refresh that fails while the credentials still hold keeps them (and is tried again after
MIN_RETRY); no credentials at all fail the call, and the next resolution is tried after
MIN_RETRY too. Every secret obtained — secret key, session token, web identity token — is handed
to the gateway's redactor before anything is signed with it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    AssumeRoleWithWebIdentityCredentialFetcher,
    Credentials,
    DeferredRefreshableCredentials,
    ReadOnlyCredentials,
    RefreshableCredentials,
)

from worker.llm.redaction import Redactor

log = logging.getLogger(__name__)

MIN_RETRY = 5.0  # seconds between two failed attempts to obtain or refresh credentials
# Credentials that botocore will not want refreshed for this long are not looked at again
# before then (a look costs more than signing's other work); botocore's advisory window is
# 15 minutes for every provider it has.
QUIET = 60.0
_ADVISORY_WINDOW = 15 * 60.0
WEB_IDENTITY_DURATION = 3600  # litellm's DurationSeconds for AssumeRoleWithWebIdentity

# litellm's Bedrock credential keys, besides the secrets and aws_region_name (Deployment's own
# fields): what each means here.
AWS_KEYS = {
    "aws_profile_name": "a profile of the shared config and credentials files",
    "aws_role_name": "the ARN of a role to assume (with aws_session_name)",
    "aws_session_name": "the session name of the assumed role",
    "aws_external_id": "the external id of AssumeRole",
    "aws_web_identity_token": "where the web identity token is read (with aws_role_name)",
    "aws_sts_endpoint": "the STS endpoint the role is assumed at",
    "aws_bedrock_runtime_endpoint": "the Bedrock runtime base URL",
}
_DEPLOYMENT_FIELDS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


_NONE_FOUND = (
    "none found (environment, shared config and credentials files, SSO, credential_process, "
    "web identity, container and instance roles)"
)


class CredentialsUnavailable(Exception):
    """No AWS credentials could be obtained; the message names no secret (it is redacted)."""


def quiet_botocore() -> None:
    """botocore logs request and response bodies (STS credentials, tokens) at DEBUG, and a
    failed refresh with its traceback: neither reaches the logs."""
    logging.getLogger("botocore").setLevel(logging.WARNING)
    credentials_log = logging.getLogger("botocore.credentials")
    if not any(isinstance(f, _NoTraceback) for f in credentials_log.filters):
        credentials_log.addFilter(_NoTraceback())


class _NoTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = record.exc_text = record.stack_info = None
        return True


# -- where a web identity token is read (litellm's get_secret: secret_managers/main.py) ----------


@dataclass(frozen=True, slots=True)
class WebIdentityToken:
    """Reads the token, at each refresh (a projected token file is rotated): from an
    environment variable, a file, or the file an environment variable names."""

    variable: str | None = None
    file: str | None = None
    file_variable: str | None = None

    @classmethod
    def parse(cls, value: str, environ: Mapping[str, str]) -> WebIdentityToken:
        """`os.environ/NAME` or `NAME` (a variable, as litellm's get_secret reads a secret
        name), `oidc/env/NAME`, `oidc/file/PATH`, `oidc/env_path/NAME`, `oidc/azure/…`
        (AZURE_FEDERATED_TOKEN_FILE), `oidc/circleci/…`, `oidc/circleci_v2/…`; ValueError for
        the rest (the google and github sources fetch tokens over HTTP: not supported)."""
        name = value.removeprefix("os.environ/")
        if name.startswith("oidc/"):
            source, _, rest = name.removeprefix("oidc/").partition("/")
            token = {
                "env": lambda: cls(variable=rest),
                "file": lambda: cls(file=rest),
                "env_path": lambda: cls(file_variable=rest),
                "azure": lambda: cls(file_variable="AZURE_FEDERATED_TOKEN_FILE"),
                "circleci": lambda: cls(variable="CIRCLE_OIDC_TOKEN"),
                "circleci_v2": lambda: cls(variable="CIRCLE_OIDC_TOKEN_V2"),
            }.get(source)
            if token is None or (source in ("env", "file", "env_path") and not rest):
                raise ValueError(
                    f"aws_web_identity_token: oidc/{source}/ is not a token source the worker "
                    "reads (oidc/file/PATH, oidc/env/NAME, oidc/env_path/NAME, oidc/azure/, "
                    "oidc/circleci/, or the name of an environment variable)"
                )
            parsed = token()
        elif name.isidentifier():
            parsed = cls(variable=name)
        else:
            raise ValueError(
                "aws_web_identity_token names where litellm reads the token (the name of an "
                "environment variable, os.environ/NAME, oidc/file/PATH, …), not the token itself"
            )
        for variable in (parsed.variable, parsed.file_variable):
            if variable is not None and not environ.get(variable):
                raise ValueError(
                    f"aws_web_identity_token: environment variable {variable} is not set"
                )
        return parsed

    def loader(
        self, environ: Mapping[str, str], learn: Callable[[Iterable[str | None]], None]
    ) -> Callable[[], str]:
        def load() -> str:
            if self.variable is not None:
                token = environ.get(self.variable, "")
            else:
                path = self.file or environ.get(self.file_variable or "", "")
                try:
                    token = Path(path).read_text().strip()
                except OSError as exc:
                    raise CredentialsUnavailable(
                        f"web identity token file not readable ({type(exc).__name__})"
                    ) from None
            if not token:
                raise CredentialsUnavailable("the web identity token is empty")
            learn([token])
            return token

        return load


# -- which credentials a deployment uses ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AwsAuth:
    """A Bedrock deployment's `aws_*` keys, checked; `resolver()` makes its credentials."""

    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    profile: str | None = None
    role: str | None = None
    session_name: str | None = None
    external_id: str | None = None
    web_identity: WebIdentityToken | None = None
    sts_endpoint: str | None = None
    runtime_endpoint: str | None = None

    @classmethod
    def read(
        cls, secrets: Mapping[str, str | None], extra: Mapping[str, Any], environ: Mapping[str, str]
    ) -> AwsAuth:
        """From the deployment's secret fields and its other keys; ValueError naming the key
        for an `aws_*` key litellm does not have (Converse would get it as a model field) and
        for keys that mean nothing without another (litellm ignores them silently)."""
        keys: dict[str, str] = {}
        for key, value in extra.items():
            if not key.startswith("aws_"):
                continue
            if key not in AWS_KEYS:
                known = ", ".join(sorted([*_DEPLOYMENT_FIELDS, "aws_region_name", *AWS_KEYS]))
                raise ValueError(
                    f"{key} is not a Bedrock key of litellm ({known}); Converse would receive "
                    "it as a model field (additionalModelRequestFields)"
                )
            if value is None:
                continue
            if not isinstance(value, str) or not value:
                raise ValueError(f"{key} must be text ({AWS_KEYS[key]})")
            keys[key] = value
        access, secret = secrets.get("aws_access_key_id"), secrets.get("aws_secret_access_key")
        if (access is None) != (secret is None):
            raise ValueError("give aws_access_key_id and aws_secret_access_key together")
        if secrets.get("aws_session_token") and access is None:
            raise ValueError("aws_session_token needs aws_access_key_id and aws_secret_access_key")
        role, session = keys.get("aws_role_name"), keys.get("aws_session_name")
        if role is not None and session is None:
            raise ValueError("aws_role_name needs aws_session_name (litellm ignores the role)")
        for key in ("aws_session_name", "aws_external_id", "aws_web_identity_token"):
            if key in keys and role is None:
                raise ValueError(f"{key} has no effect without aws_role_name")
        if "aws_sts_endpoint" in keys and role is None:
            raise ValueError(
                "aws_sts_endpoint has no effect without aws_role_name (point botocore's own "
                "chain at another STS with AWS_ENDPOINT_URL_STS)"
            )
        token = keys.get("aws_web_identity_token")
        if token is not None and "aws_external_id" in keys:
            raise ValueError(
                "aws_external_id is a parameter of AssumeRole, which STS's "
                "AssumeRoleWithWebIdentity refuses (litellm sends it and fails)"
            )
        return cls(
            access_key=access,
            secret_key=secret,
            session_token=secrets.get("aws_session_token"),
            profile=keys.get("aws_profile_name"),
            role=role,
            session_name=session,
            external_id=keys.get("aws_external_id"),
            web_identity=WebIdentityToken.parse(token, environ) if token is not None else None,
            sts_endpoint=keys.get("aws_sts_endpoint"),
            runtime_endpoint=keys.get("aws_bedrock_runtime_endpoint"),
        )

    @property
    def source(self) -> str:
        """Where the credentials come from, for messages."""
        if self.web_identity is not None:
            return "AssumeRoleWithWebIdentity"
        if self.role is not None:
            return "AssumeRole"
        if self.profile is not None:
            return f"profile {self.profile!r}"
        if self.access_key is not None:
            return "the deployment's keys"
        return "botocore's default chain"

    def static(self) -> Credentials | None:
        """The deployment's own keys, when they are its credentials (nothing to resolve)."""
        if self.role is None and self.profile is None and self.access_key is not None:
            assert self.secret_key is not None
            return Credentials(self.access_key, self.secret_key, self.session_token)
        return None

    def resolver(
        self,
        region: str,
        environ: Mapping[str, str],
        learn: Callable[[Iterable[str | None]], None],
    ) -> Callable[[], Credentials | None]:
        """A function (blocking: run it in a worker thread) returning the credentials, or None
        when botocore's chain finds none."""

        def resolve() -> Credentials | None:
            # Imported here: a session is made once per deployment, in the worker thread.
            from botocore.session import Session

            quiet_botocore()
            session = Session(profile=self.profile)
            if session.get_config_variable("region") is None:
                # The chain's STS calls (a profile's role, web identity) need a region: the
                # deployment's, where botocore's configuration names none.
                session.set_config_variable("region", region)
            if self.role is None:
                return session.get_credentials()
            client_creator = functools.partial(
                session.create_client, region_name=region, endpoint_url=self.sts_endpoint
            )
            extra: dict[str, Any] = {"RoleSessionName": self.session_name}
            fetcher: AssumeRoleCredentialFetcher | AssumeRoleWithWebIdentityCredentialFetcher
            if self.web_identity is not None:
                extra["DurationSeconds"] = WEB_IDENTITY_DURATION
                fetcher = AssumeRoleWithWebIdentityCredentialFetcher(
                    client_creator,
                    self.web_identity.loader(environ, learn),
                    self.role,
                    extra_args=extra,
                )
                return DeferredRefreshableCredentials(
                    fetcher.fetch_credentials, "assume-role-with-web-identity"
                )
            source = self.static_source(session)
            if source is None:
                return None
            if self.same_role_as_irsa():
                return source  # litellm 1.79+: IRSA already is this role
            if self.external_id is not None:
                extra["ExternalId"] = self.external_id
            fetcher = AssumeRoleCredentialFetcher(client_creator, source, self.role, extra)
            return DeferredRefreshableCredentials(fetcher.fetch_credentials, "assume-role")

        return resolve

    def static_source(self, session: Any) -> Credentials | None:
        """The credentials a role is assumed with: the keys, else the profile's or the chain's."""
        if self.access_key is not None:
            assert self.secret_key is not None
            return Credentials(self.access_key, self.secret_key, self.session_token)
        credentials: Credentials | None = session.get_credentials()
        return credentials

    def same_role_as_irsa(self) -> bool:
        # botocore's chain reads the process environment, so this does too.
        return (
            self.access_key is None
            and self.profile is None
            and bool(os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"))
            and os.environ.get("AWS_ROLE_ARN") == self.role
        )


# -- the cached, refreshed credentials of one deployment ------------------------------------------


@dataclass(frozen=True, slots=True)
class _Loaded:
    credentials: Credentials
    frozen: ReadOnlyCredentials
    due: bool  # botocore would still refresh them (its refresh failed, or they are that short)
    due_soon: bool  # due within QUIET seconds
    kept_after: str | None = None  # the failed refresh after which they were kept


class AwsCredentials:
    """The credentials one deployment signs with. `ready()` (no I/O) gives the frozen set to
    sign with now, or None; then `obtain()` resolves or refreshes them in a worker thread."""

    def __init__(
        self,
        *,
        name: str,
        source: str,
        resolve: Callable[[], Credentials | None],
        redactor: Redactor,
        static: Credentials | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._source = source
        self._resolve = resolve
        self._redact = redactor
        self._clock = clock
        self._credentials: Credentials | None = static
        self._frozen: ReadOnlyCredentials | None = None
        self._check_at = 0.0  # when `ready()` next asks botocore whether a refresh is due
        self._retry_at = 0.0
        self._failure: CredentialsUnavailable | None = None
        self._refreshing: asyncio.Task[None] | None = None
        if static is not None:
            self._frozen = static.get_frozen_credentials()
            self._check_at = math.inf

    def __repr__(self) -> str:
        return f"AwsCredentials({self._name!r}, from {self._source})"

    def ready(self) -> ReadOnlyCredentials | None:
        frozen = self._frozen
        if frozen is None:
            return None
        if self._clock() < self._check_at:
            return frozen
        credentials = self._credentials
        if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
            return None
        return frozen

    async def obtain(self) -> ReadOnlyCredentials:
        """Resolve or refresh now, one at a time; CredentialsUnavailable when there are none
        (for MIN_RETRY seconds after a failure, without trying again)."""
        if self._frozen is None and self._failure is not None and self._clock() < self._retry_at:
            raise self._failure
        if self._frozen is not None and self._clock() < self._check_at:
            return self._frozen  # refreshed while this call waited for its turn
        task = self._refreshing
        if task is None:
            task = self._refreshing = asyncio.ensure_future(self._refresh())
            task.add_done_callback(self._refreshed)
        await asyncio.shield(task)
        if self._frozen is None:
            assert self._failure is not None
            raise self._failure
        return self._frozen

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved: `_refresh` records its own failure

    async def _refresh(self) -> None:
        try:
            loaded = await asyncio.to_thread(self._load, self._credentials, self._frozen)
        except Exception as exc:  # noqa: BLE001 - botocore raises many kinds, processes fail
            self._failed(exc)
            return
        now = self._clock()
        frozen = loaded.frozen
        # Known to the redactor before anything is signed (or a provider echoes it back).
        self._redact.learn([frozen.secret_key, frozen.token])
        changed = frozen != self._frozen
        self._credentials, self._frozen, self._failure = loaded.credentials, frozen, None
        if loaded.kept_after is not None:
            log.warning(
                "bedrock deployment %r: refreshing AWS credentials from %s failed (%s); the "
                "current ones hold until they expire",
                self._name,
                self._source,
                self._redact(loaded.kept_after),
            )
        if not isinstance(loaded.credentials, RefreshableCredentials):
            self._check_at = math.inf
        elif not loaded.due_soon:
            self._check_at = now + QUIET
        elif loaded.due and not changed:
            self._check_at = now + MIN_RETRY  # botocore kept the old set: its refresh failed
        else:
            self._check_at = now  # at the window: botocore is asked on every call

    def _load(
        self, credentials: Credentials | None, current: ReadOnlyCredentials | None
    ) -> _Loaded:
        """In a worker thread: the credentials (resolved the first time), frozen after
        botocore's own refresh where one is due."""
        if credentials is None:
            credentials = self._resolve()
            if credentials is None:
                raise CredentialsUnavailable(_NONE_FOUND)
        refreshable = isinstance(credentials, RefreshableCredentials)
        try:
            frozen = credentials.get_frozen_credentials()
        except Exception as exc:
            # A refresh botocore insists on (its mandatory window) failed: the current set
            # still signs until it expires.
            expired = not refreshable or credentials.refresh_needed(refresh_in=0)
            if current is None or expired:
                raise
            return _Loaded(credentials, current, True, True, _reason(exc))
        if not refreshable:
            return _Loaded(credentials, frozen, False, False)
        soon = credentials.refresh_needed(refresh_in=int(_ADVISORY_WINDOW + QUIET))
        return _Loaded(credentials, frozen, credentials.refresh_needed(), soon)

    def _failed(self, exc: Exception) -> None:
        now = self._clock()
        reason = self._redact(f"from {self._source}: {_reason(exc)}")
        log.warning("bedrock deployment %r: no AWS credentials %s", self._name, reason)
        self._failure = CredentialsUnavailable(f"no AWS credentials {reason}")
        # `_load` fails only without credentials that still sign: none are left to use.
        self._frozen = None
        self._retry_at = now + MIN_RETRY


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, CredentialsUnavailable):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
