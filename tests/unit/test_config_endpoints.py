"""endpoints.yml: kafka (Rasa's broker keys + worker settings), nlu, model groups, overrides."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.tls_certificates import make_test_pki
from worker.config.endpoints import Endpoints, KafkaSettings, Topics, load_endpoints
from worker.config.errors import ConfigError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "config"
FULL_ENVIRON = {
    "NLU_URL": "http://nlu:5005",
    "NLU_TOKEN": "nlu-token-value",
    "KAFKA_PASSWORD": "kafka-password-value",
    "POD_NAME": "router-0",
    "AZURE_FR_DEPLOYMENT": "gpt-4o-mini-fr",
    "AZURE_FR_BASE": "https://fr.example.azure.com",
    "AZURE_FR_KEY": "azure-key-value",
    "OPENAI_API_KEY": "openai-key-value",
}
SECRETS = ("kafka-password-value", "azure-key-value", "openai-key-value", "nlu-token-value")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(text: str, name: str = "endpoints.yml") -> Path:
    path = Path(name)
    path.write_text(text)
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_endpoints(path, environ or {})
    return caught.value.problems


ONE_GROUP = """
model_groups:
  - id: router-llm
    models:
      - provider: openai
        model: gpt-4o-mini
        api_key: {api_key}
"""


def test_full_rasa_endpoints_file() -> None:
    endpoints = load_endpoints(FIXTURES / "endpoints_full.yml", FULL_ENVIRON)
    kafka = endpoints.kafka
    assert kafka.url == ["kafka-1:9092", "kafka-2:9092"]
    assert kafka.security_protocol == "SASL_PLAINTEXT"
    assert kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert kafka.sasl_password == SecretStr("kafka-password-value")
    assert kafka.client_id == "router-router-0"
    assert kafka.group_id == "routers"
    assert kafka.topics == Topics(input="chat-in")
    assert kafka.topics.calm == "calm-inbox"
    assert kafka.max_in_flight == 64
    assert kafka.session_ttl == 3600.0
    assert endpoints.nlu is not None
    assert endpoints.nlu.url == "http://nlu:5005"
    assert endpoints.nlu.token == SecretStr("nlu-token-value")
    assert endpoints.nlu.token_name == "token"
    assert endpoints.nlu.timeout == 2.5
    assert endpoints.nlu.retries == 2
    assert list(endpoints.model_groups) == ["router-llm", "commands", "embeddings"]
    group = endpoints.model_groups["router-llm"]
    azure, openai = group.models
    assert azure.deployment == "gpt-4o-mini-fr"
    assert azure.api_version == "2024-06-01"
    assert azure.api_key == SecretStr("azure-key-value")
    assert openai.extra_body() == {"seed": 7}
    assert group.settings.routing_strategy == "least-busy"
    assert group.settings.num_retries == 3


def test_secrets_never_appear_in_repr() -> None:
    endpoints = load_endpoints(FIXTURES / "endpoints_full.yml", FULL_ENVIRON)
    text = repr(endpoints) + str(endpoints)
    assert not any(secret in text for secret in SECRETS)


def test_empty_file_gives_every_default(workdir: Path) -> None:
    endpoints = load_endpoints(write(""), {})
    assert endpoints == Endpoints()
    kafka = endpoints.kafka
    assert kafka.url == ["localhost:9092"]
    assert kafka.security_protocol == "PLAINTEXT"
    assert kafka.group_id == "coexistence-router"
    assert kafka.topics.model_dump() == {
        "input": "user-messages",
        "calm": "calm-inbox",
        "nlu": "nlu-inbox",
        "sessions": "routing-sessions",
        "dlq": "routing-dlq",
    }
    assert (kafka.create_topics, kafka.partitions, kafka.replication_factor) == (True, 6, 1)
    assert (kafka.max_in_flight, kafka.commit_interval_ms, kafka.commit_interval) == (256, 500, 0.5)
    assert (kafka.session_expiration_time, kafka.session_ttl) == (None, None)
    assert (kafka.shutdown_timeout, kafka.rebalance_timeout, kafka.session_timeout) == (10, 10, 10)
    assert endpoints.nlu is None
    assert endpoints.model_groups == {}


def test_unknown_sections_are_ignored(workdir: Path) -> None:
    text = "action_endpoint: {url: http://a}\ntracker_store: {type: redis}\nlock_store: {}\n"
    assert load_endpoints(write(text), {}) == Endpoints()


def test_kafka_bootstrap_servers_overrides_url(workdir: Path) -> None:
    path = write("kafka:\n  url: broker:9092\n  group_id: from-file\n")
    environ = {"KAFKA_BOOTSTRAP_SERVERS": "k1:9093, k2:9093", "KAFKA_GROUP_ID": "from-env"}
    kafka = load_endpoints(path, environ).kafka
    assert kafka.url == ["k1:9093", "k2:9093"]
    assert kafka.group_id == "from-env"


def test_kafka_bootstrap_servers_without_kafka_section(workdir: Path) -> None:
    kafka = load_endpoints(
        write("nlu:\n  url: http://nlu:5005\n"), {"KAFKA_BOOTSTRAP_SERVERS": "k:1"}
    ).kafka
    assert kafka.url == ["k:1"]


def test_empty_environment_variable_does_not_override(workdir: Path) -> None:
    kafka = load_endpoints(write("kafka:\n  url: b:9092\n"), {"KAFKA_BOOTSTRAP_SERVERS": ""}).kafka
    assert kafka.url == ["b:9092"]


def test_sasl_settings_from_the_environment(workdir: Path) -> None:
    environ = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SASL_USERNAME": "router",
        "KAFKA_SASL_PASSWORD": "kafka-password-value",
    }
    kafka = load_endpoints(write(""), environ).kafka
    kwargs = kafka.connection_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_username"] == "router"
    assert kwargs["sasl_plain_password"] == "kafka-password-value"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert kwargs["ssl_context"].check_hostname is True
    assert "kafka-password-value" not in repr(kafka)


def test_invalid_override_names_the_variable(workdir: Path) -> None:
    [line] = problems_of(write(""), {"KAFKA_SECURITY_PROTOCOL": "TLS"})
    assert line.startswith(
        "endpoints.yml: kafka.security_protocol (from KAFKA_SECURITY_PROTOCOL): Input should be"
    )


def test_plaintext_connection_kwargs(workdir: Path) -> None:
    kafka = load_endpoints(write("kafka:\n  url: a:1\n  client_id: router\n"), {}).kafka
    assert kafka.connection_kwargs() == {
        "bootstrap_servers": ["a:1"],
        "security_protocol": "PLAINTEXT",
        "client_id": "router",
    }


def test_ssl_without_hostname_check(workdir: Path) -> None:
    text = "kafka:\n  security_protocol: SSL\n  ssl_check_hostname: false\n"
    kwargs = load_endpoints(write(text), {}).kafka.connection_kwargs()
    assert kwargs["ssl_context"].check_hostname is False
    assert "sasl_mechanism" not in kwargs


def test_ssl_files_are_found_next_to_endpoints_yml(workdir: Path) -> None:
    Path("env").mkdir()
    Path("env/ca.pem").write_bytes(make_test_pki(Path("pki")).ca.read_bytes())
    path = write("kafka:\n  security_protocol: SSL\n  ssl_cafile: ca.pem\n", "env/endpoints.yml")
    kafka = load_endpoints(path, {}).kafka
    assert kafka.ssl_cafile == str(Path("env") / "ca.pem")


def test_an_unreadable_certificate_refuses_to_start(workdir: Path) -> None:
    Path("env").mkdir()
    Path("env/ca.pem").write_text("not a real certificate")
    path = write("kafka:\n  security_protocol: SSL\n  ssl_cafile: ca.pem\n", "env/endpoints.yml")
    [line] = problems_of(path)
    assert line.startswith(
        "env/endpoints.yml: kafka.ssl_cafile: no CA certificate read from env/ca.pem:"
    )


def test_missing_ssl_file_is_named(workdir: Path) -> None:
    Path("env").mkdir()
    path = write("kafka:\n  security_protocol: SSL\n  ssl_cafile: ca.pem\n", "env/endpoints.yml")
    assert problems_of(path) == [
        "env/endpoints.yml: kafka.ssl_cafile: file ca.pem not found "
        "(looked in the current directory and in env)"
    ]


def test_sasl_needs_credentials(workdir: Path) -> None:
    assert problems_of(write("kafka:\n  security_protocol: SASL_PLAINTEXT\n")) == [
        "endpoints.yml: kafka.sasl_username: security_protocol SASL_PLAINTEXT needs sasl_username"
    ]


def test_kafka_problems_name_the_key_and_hide_the_value(workdir: Path) -> None:
    text = (
        "kafka:\n  sasl_password: [kafka-password-value]\n  partitions: 0\n"
        "  topics: {inputs: x}\n  topic: rasa_events\n"
    )
    problems = problems_of(write(text))
    assert "endpoints.yml: kafka.sasl_password: Input should be a valid string" in problems
    assert "endpoints.yml: kafka.partitions: Input should be greater than or equal to 1" in problems
    assert "endpoints.yml: kafka.topics.inputs: unknown key" in problems
    assert "endpoints.yml: kafka.topic: unknown key" in problems
    assert not any("kafka-password-value" in line for line in problems)


def test_topic_names_must_be_legal_and_distinct(workdir: Path) -> None:
    assert problems_of(write("kafka:\n  topics: {input: a, calm: a}\n")) == [
        "endpoints.yml: kafka.topics: the five topics must have five different names"
    ]
    [line] = problems_of(write("kafka:\n  topics: {dlq: 'dead letters'}\n"))
    assert line.startswith("endpoints.yml: kafka.topics.dlq: a Kafka topic name is")


def test_kafka_values_expand_variables(workdir: Path) -> None:
    text = "kafka:\n  url: ${BROKERS}\n  sasl_password: ${PW}\n"
    assert problems_of(write(text), {"BROKERS": "a:1"}) == [
        "endpoints.yml: kafka.sasl_password: environment variable PW is not set"
    ]


def test_nlu_section(workdir: Path) -> None:
    text = (
        "nlu:\n  url: http://nlu:5005\n  token: t\n  token_name: auth\n  timeout: 1\n  retries: 0\n"
    )
    nlu = load_endpoints(write(text), {}).nlu
    assert nlu is not None
    assert (nlu.url, nlu.token_name, nlu.timeout, nlu.retries) == ("http://nlu:5005", "auth", 1, 0)
    assert problems_of(write("nlu:\n  url: nlu:5005\n")) == [
        "endpoints.yml: nlu.url: must be an http:// or https:// URL"
    ]


def test_unset_variable_names_file_group_key_and_variable(workdir: Path) -> None:
    assert problems_of(write(ONE_GROUP.format(api_key="${OPENAI_API_KEY}"))) == [
        "endpoints.yml: model_groups[0] (id router-llm).models[0].api_key: "
        "environment variable OPENAI_API_KEY is not set"
    ]


def test_literal_api_key_is_refused_and_never_shown(workdir: Path) -> None:
    problems = problems_of(write(ONE_GROUP.format(api_key="sk-live-abcdef")))
    assert problems == [
        "endpoints.yml: model_groups[0] (id router-llm).models[0].api_key: "
        "must be written as ${VAR}, a literal secret is refused"
    ]
    assert "sk-live-abcdef" not in "\n".join(problems)


def test_expanded_secret_absent_from_errors(workdir: Path) -> None:
    # A valid key next to an invalid model: the error must not carry the key along.
    text = ONE_GROUP.format(api_key="${OPENAI_API_KEY}").replace("model: gpt-4o-mini", "n: 2")
    problems = problems_of(write(text), {"OPENAI_API_KEY": "openai-key-value"})
    assert problems[0].startswith("endpoints.yml: model_groups[0] (id router-llm).models[0].")
    assert "openai-key-value" not in "\n".join(problems)


def test_duplicate_group_ids(workdir: Path) -> None:
    text = ONE_GROUP.format(api_key="${K}")
    text += "  - id: router-llm\n    models: [{provider: ollama, model: llama3}]\n"
    assert problems_of(write(text), {"K": "k"}) == [
        "endpoints.yml: model_groups[1] (id router-llm).id: duplicate id, already used by "
        "model_groups[0] (Rasa needs every model group id to be unique)"
    ]


def test_group_of_several_models_needs_a_router(workdir: Path) -> None:
    text = ONE_GROUP + "      - provider: ollama\n        model: llama3\n"
    assert problems_of(write(text.format(api_key="${K}")), {"K": "k"}) == [
        "endpoints.yml: model_groups[0] (id router-llm).router: the group has 2 models but no "
        "router: Rasa needs a router block for a group of several models"
    ]


def test_unknown_routing_strategy(workdir: Path) -> None:
    text = ONE_GROUP + "    router:\n      routing_strategy: round-robin\n"
    [line] = problems_of(write(text.format(api_key="${K}")), {"K": "k"})
    assert line == (
        "endpoints.yml: model_groups[0] (id router-llm).router.routing_strategy: round-robin is "
        "not one Rasa accepts: simple-shuffle, least-busy, latency-based-routing, "
        "usage-based-routing, cost-based-routing"
    )


def test_router_redis_keys_expand(workdir: Path) -> None:
    text = ONE_GROUP.format(api_key="${K}") + "    router:\n      redis_url: ${REDIS_URL}\n"
    endpoints = load_endpoints(write(text), {"K": "k", "REDIS_URL": "redis://r:6379"})
    url = endpoints.model_groups["router-llm"].settings.redis_url
    # A Redis URL may carry a password, so the model may keep it as a SecretStr.
    assert (url.get_secret_value() if isinstance(url, SecretStr) else url) == "redis://r:6379"


def test_azure_model_needs_deployment(workdir: Path) -> None:
    text = "model_groups:\n  - id: g\n    models:\n      - {provider: azure, api_base: http://a}\n"
    assert problems_of(write(text)) == [
        "endpoints.yml: model_groups[0] (id g).models[0].deployment: "
        "required key is missing (Rasa's AzureOpenAIClientConfig needs it)"
    ]


def test_api_base_must_be_an_http_url(workdir: Path) -> None:
    text = "model_groups:\n" + "".join(
        f"  - id: g{i}\n    models:\n      - {{provider: openai, model: m, api_base: '{url}'}}\n"
        for i, url in enumerate(["ftp://llm.internal/v1", "https://"])
    )
    assert problems_of(write(text)) == [
        f"endpoints.yml: model_groups[{i}] (id g{i}).models[0].api_base: "
        "must be an http:// or https:// URL with a host"
        for i in (0, 1)
    ]


def test_group_without_id_or_models(workdir: Path) -> None:
    problems = problems_of(write("model_groups:\n  - models: []\n  - id: g\n  - just-text\n"))
    assert problems == [
        "endpoints.yml: model_groups[0].id: required key is missing (a group id, text)",
        "endpoints.yml: model_groups[0].models: cannot be empty: a group needs at least one model",
        "endpoints.yml: model_groups[1] (id g).models: required key is missing",
        "endpoints.yml: model_groups[2]: must be a mapping with id and models",
    ]


def test_every_problem_of_the_file_is_reported(workdir: Path) -> None:
    text = "kafka:\n  partitions: zero\nnlu:\n  url: ftp://x\n" + ONE_GROUP.format(
        api_key="literal"
    )
    assert len(problems_of(write(text))) == 3


def test_yaml_error_in_endpoints(workdir: Path) -> None:
    [line] = problems_of(write("kafka:\n  url: a:1\n    group_id: x\n"))
    assert line.startswith("endpoints.yml:3: invalid YAML")


def test_fixture_file_loads_from_another_directory(workdir: Path) -> None:
    shutil.copy(FIXTURES / "endpoints_full.yml", "endpoints.yml")
    assert isinstance(load_endpoints(Path("endpoints.yml"), FULL_ENVIRON).kafka, KafkaSettings)
