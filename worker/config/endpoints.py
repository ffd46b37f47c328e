"""`endpoints.yml`: the Kafka cluster and worker settings, Rasa's NLU server, and model groups.

One `endpoints.yml` per environment; the same `config.yml` runs against any of them. Sections the
worker does not use (`action_endpoint`, `tracker_store`, `event_broker`, `lock_store`, …) are
ignored, so a Rasa assistant's own file can be given as it is.

`kafka:` takes the keys of Rasa's Kafka event broker (`url`, `security_protocol`,
`sasl_mechanism`, `sasl_username`, `sasl_password`, `ssl_cafile`, `ssl_certfile`, `ssl_keyfile`,
`ssl_check_hostname`, `client_id`) and the worker's own settings (`group_id`, `topics`,
`create_topics`, `partitions`, `replication_factor`, `max_in_flight`, `commit_interval_ms`,
`commit_count`, `fetch_max_wait_ms`, `fetch_min_bytes`,
`session_expiration_time`, `shutdown_timeout`, `rebalance_timeout`, `session_timeout`).
Two defaults differ from Rasa's KafkaEventBroker on purpose: `security_protocol` is PLAINTEXT
(Rasa: SASL_PLAINTEXT, with no credentials by default) and `ssl_check_hostname` is true (Rasa:
false, which accepts any certificate for any broker name); write them out to get Rasa's.

Environment variables override the file (an empty value counts as unset):

    KAFKA_BOOTSTRAP_SERVERS   kafka.url (comma-separated host:port list); works without any
                              `kafka:` section; default localhost:9092
    KAFKA_SECURITY_PROTOCOL   kafka.security_protocol
    KAFKA_SASL_MECHANISM      kafka.sasl_mechanism
    KAFKA_SASL_USERNAME       kafka.sasl_username
    KAFKA_SASL_PASSWORD       kafka.sasl_password
    KAFKA_GROUP_ID            kafka.group_id

Values of `kafka:` and `nlu:` may be written as `${VAR}`. `model_groups:` is read as the selected
Rasa release reads it (worker.config.model_groups, worker.config.endpoints_rules).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from contracts.models import DEFAULT_GROUP_ID, DEFAULT_TOPICS
from worker.config.endpoints_rules import DEFAULT_RELEASE, ReleaseNumber, rules_for
from worker.config.env import expand_section
from worker.config.errors import (
    ConfigError,
    display_name,
    looked_in,
    problem,
    validation_problems,
)
from worker.config.model_groups import GroupsReading, read_model_groups
from worker.config.yaml_files import read_yaml
from worker.kafka.tls import TlsFileError, kafka_tls_context
from worker.llm.model_group import ModelGroup

SecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

DEFAULT_BOOTSTRAP_SERVERS = "localhost:9092"
ENVIRONMENT_OVERRIDES = {
    "KAFKA_BOOTSTRAP_SERVERS": "url",
    "KAFKA_SECURITY_PROTOCOL": "security_protocol",
    "KAFKA_SASL_MECHANISM": "sasl_mechanism",
    "KAFKA_SASL_USERNAME": "sasl_username",
    "KAFKA_SASL_PASSWORD": "sasl_password",
    "KAFKA_GROUP_ID": "group_id",
}
SSL_FILE_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")

# Kafka's own rule for topic names (kafka.common.internals.Topic).
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


class Topics(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str = DEFAULT_TOPICS["input"]
    calm: str = DEFAULT_TOPICS["calm"]
    nlu: str = DEFAULT_TOPICS["nlu"]
    sessions: str = DEFAULT_TOPICS["sessions"]
    dlq: str = DEFAULT_TOPICS["dlq"]

    @field_validator("*")
    @classmethod
    def _legal_name(cls, name: str) -> str:
        if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
            raise ValueError("a Kafka topic name is 1-249 of letters, digits, '.', '_', '-'")
        return name

    @model_validator(mode="after")
    def _distinct(self) -> Topics:
        names = list(self.model_dump().values())
        if len(set(names)) != len(names):
            raise ValueError("the five topics must have five different names")
        return self

    def renamed(self, rename: Callable[[str], str]) -> Topics:
        """The same five topics under other names (a demo's or a test's own set)."""
        return Topics(**{role: rename(name) for role, name in self.model_dump().items()})


class KafkaSettings(BaseModel):
    """The `kafka:` section: connection (Rasa's Kafka event broker keys) and worker settings."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: list[str] = Field(default_factory=lambda: [DEFAULT_BOOTSTRAP_SERVERS])
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    client_id: str | None = None

    group_id: str = Field(default=DEFAULT_GROUP_ID, min_length=1)
    topics: Topics = Field(default_factory=Topics)
    create_topics: bool = True
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    max_in_flight: int = Field(default=256, ge=1)
    commit_interval_ms: int = Field(default=500, ge=1)
    commit_count: int = Field(default=500, ge=1)
    fetch_max_wait_ms: int = Field(default=100, ge=1)
    # The broker answers a fetch once this many bytes are there, or after fetch_max_wait_ms.
    fetch_min_bytes: int = Field(default=1, ge=1)
    # Minutes; unset: the idle expiry follows the domain's session_config, as Rasa does.
    session_expiration_time: float | None = Field(default=None, ge=0)
    shutdown_timeout: float = Field(default=10.0, gt=0)
    rebalance_timeout: float = Field(default=10.0, gt=0)
    # Kafka's consumer-group session (session.timeout.ms, in seconds): how long the group
    # coordinator waits for a silent worker before moving its partitions. Not a sticky session.
    session_timeout: float = Field(default=10.0, gt=0)

    @field_validator("url", mode="before")
    @classmethod
    def _servers(cls, value: object) -> object:
        # Rasa takes one `host:port` or a list; the environment variable is comma-separated.
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            servers = [s.strip() if isinstance(s, str) else s for s in value]
            servers = [s for s in servers if s != ""]
            if not servers:
                raise ValueError("no bootstrap server given (host:port)")
            return servers
        return value

    @model_validator(mode="after")
    def _credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_"):
            if not self.sasl_username:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs `sasl_username`"
                )
            if self.sasl_password is None:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs `sasl_password`"
                )
        return self

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def commit_interval(self) -> float:
        """Seconds between offset commits."""
        return self.commit_interval_ms / 1000

    @property
    def session_ttl(self) -> float | None:
        """Seconds of idleness that end a sticky session when set (0 = never); None: not set,
        the worker follows the domain's session_config (worker.config.app_config)."""
        if self.session_expiration_time is None:
            return None
        return self.session_expiration_time * 60

    def connection_kwargs(self) -> ConnectionKwargs:
        """Keyword arguments for every aiokafka client (consumer, producer, admin).

        Builds the TLS context, reading the certificate files, when TLS is used.
        """
        kwargs = ConnectionKwargs(
            bootstrap_servers=list(self.url), security_protocol=self.security_protocol
        )
        if self.security_protocol.startswith("SASL_"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.uses_ssl:
            kwargs["ssl_context"] = self.tls_context()
        if self.client_id:
            kwargs["client_id"] = self.client_id
        return kwargs

    def tls_context(self) -> ssl.SSLContext:
        """Raises TlsFileError naming the `ssl_*` key whose file cannot be used."""
        return kafka_tls_context(
            cafile=self.ssl_cafile,
            certfile=self.ssl_certfile,
            keyfile=self.ssl_keyfile,
            check_hostname=self.ssl_check_hostname,
        )


class ConnectionKwargs(dict[str, Any]):
    """aiokafka's keyword arguments; the SASL password is the client's, never its repr's."""

    def __repr__(self) -> str:
        shown = {k: "***" if k == "sasl_plain_password" else v for k, v in self.items()}
        return f"ConnectionKwargs({shown!r})"


class NluEndpoint(BaseModel):
    """`nlu:`: Rasa's external NLU server, asked for an intent when a message has none."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str
    token: SecretStr | None = None
    token_name: str = Field(default="token", min_length=1)
    timeout: float = Field(default=5.0, gt=0)
    retries: int = Field(default=2, ge=0)

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url


class Endpoints(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    nlu: NluEndpoint | None = None
    model_groups: dict[str, ModelGroup] = Field(default_factory=dict)


@dataclass(slots=True)
class EndpointsRead:
    """An endpoints file as far as it could be read: `endpoints` is None when any problem was
    found, but `group_ids` still lists every id the file declares (to check references).
    `warnings`: what the selected Rasa release accepts but that behaves surprisingly."""

    file: str
    endpoints: Endpoints | None
    group_ids: tuple[str, ...]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    group_paths: dict[str, str] = field(default_factory=dict)  # `model_groups[i] (id x)` by id


def _resolve_ssl_files(
    values: dict[str, Any], *, file: str, endpoints_dir: Path, problems: list[str]
) -> None:
    # Like the prompt file of config.yml: relative to the current directory, else to the file.
    for key in SSL_FILE_KEYS:
        given = values.get(key)
        if not isinstance(given, str) or not given or "${" in given:
            continue
        path = Path(given)
        if path.is_file():
            continue
        if not path.is_absolute() and (endpoints_dir / path).is_file():
            values[key] = str(endpoints_dir / path)
            continue
        problems.append(
            problem(
                file,
                f"kafka.{key}",
                f"file {given} not found ({looked_in(endpoints_dir)})",
            )
        )


def _kafka_settings(
    section: object,
    *,
    file: str,
    endpoints_dir: Path,
    environ: Mapping[str, str],
    problems: list[str],
) -> KafkaSettings | None:
    if section is None:
        section = {}
    if not isinstance(section, dict):
        problems.append(problem(file, "kafka", "must be a mapping of settings"))
        return None
    found = len(problems)
    values, expansion = expand_section(section, file=file, path="kafka", environ=environ)
    problems.extend(expansion)
    labels: dict[str, str] = {}
    for variable, key in ENVIRONMENT_OVERRIDES.items():
        if environ.get(variable):
            values[key] = environ[variable]
            labels[key] = f"{key} (from {variable})"
    _resolve_ssl_files(values, file=file, endpoints_dir=endpoints_dir, problems=problems)
    try:
        settings = KafkaSettings.model_validate(values)
    except ValidationError as error:
        problems.extend(validation_problems(error, file=file, base="kafka", key_labels=labels))
        return None
    if settings.uses_ssl and len(problems) == found:
        try:
            settings.tls_context()  # a certificate or key that cannot be read refuses to start
        except TlsFileError as error:
            problems.append(problem(file, f"kafka.{error.key}", error.reason))
    return settings if len(problems) == found else None


def _nlu_endpoint(
    section: object, *, file: str, environ: Mapping[str, str], problems: list[str]
) -> NluEndpoint | None:
    if not isinstance(section, dict):
        problems.append(problem(file, "nlu", "must be a mapping with url"))
        return None
    values, expansion = expand_section(section, file=file, path="nlu", environ=environ)
    problems.extend(expansion)
    try:
        endpoint = NluEndpoint.model_validate(values)
    except ValidationError as error:
        problems.extend(validation_problems(error, file=file, base="nlu"))
        return None
    return None if expansion else endpoint


def read_endpoints(
    path: Path, environ: Mapping[str, str], *, release: ReleaseNumber = DEFAULT_RELEASE
) -> EndpointsRead:
    """Read and check one endpoints file, collecting every problem instead of stopping;
    `model_groups` as Rasa `release` reads them."""
    file = display_name(path)
    problems: list[str] = []
    warnings: list[str] = []
    ok, document = read_yaml(path, problems, env_references=True)
    if not ok:
        return EndpointsRead(file, None, (), problems)
    if document is None:
        document = {}  # an empty endpoints.yml is valid for Rasa too
    if not isinstance(document, dict):
        problems.append(f"{file}: must be a mapping of sections (kafka, nlu, model_groups, …)")
        return EndpointsRead(file, None, (), problems)
    kafka = _kafka_settings(
        document.get("kafka"),
        file=file,
        endpoints_dir=path.parent,
        environ=environ,
        problems=problems,
    )
    nlu = (
        None
        if document.get("nlu") is None
        else _nlu_endpoint(document["nlu"], file=file, environ=environ, problems=problems)
    )
    reading = GroupsReading(file, environ, rules_for(release), problems=problems, warnings=warnings)
    groups, group_ids = read_model_groups(document.get("model_groups"), reading)
    problems, warnings = list(dict.fromkeys(problems)), list(dict.fromkeys(warnings))
    if problems or kafka is None:
        return EndpointsRead(file, None, group_ids, problems, warnings, reading.paths)
    endpoints = Endpoints(kafka=kafka, nlu=nlu, model_groups=groups)
    return EndpointsRead(file, endpoints, group_ids, problems, warnings, reading.paths)


def load_endpoints(
    path: Path, environ: Mapping[str, str], *, release: ReleaseNumber = DEFAULT_RELEASE
) -> Endpoints:
    """`endpoints.yml` with `${VAR}` expanded from `environ` and the KAFKA_* overrides applied."""
    read = read_endpoints(path, environ, release=release)
    if read.endpoints is None:
        raise ConfigError(read.problems)
    return read.endpoints
