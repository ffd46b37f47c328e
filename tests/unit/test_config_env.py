"""`${VAR}` expansion: which keys, secrets as references only, unset variables named."""

from __future__ import annotations

from worker.config.env import expand_keys, expand_model, expand_section, is_variable_reference

WHERE = {"file": "endpoints.yml", "path": "model_groups[0] (id router-llm).models[1]"}


def test_expandable_keys_are_expanded_including_inside_text() -> None:
    model, problems = expand_model(
        {
            "provider": "azure",
            "deployment": "${DEPLOYMENT}",
            "api_base": "https://${REGION}.openai.azure.com",
            "api_version": "2024-06-01",
            "api_key": "${AZURE_KEY}",
            "aws_region_name": "${REGION}",
        },
        environ={"DEPLOYMENT": "gpt-4o-mini-fr", "REGION": "fr", "AZURE_KEY": "sk-1"},
        **WHERE,
    )
    assert problems == []
    assert model == {
        "provider": "azure",
        "deployment": "gpt-4o-mini-fr",
        "api_base": "https://fr.openai.azure.com",
        "api_version": "2024-06-01",
        "api_key": "sk-1",
        "aws_region_name": "fr",
    }


def test_unset_variable_names_file_group_key_and_variable() -> None:
    _, problems = expand_model(
        {"provider": "openai", "model": "m", "api_key": "${OPENAI_API_KEY}"}, environ={}, **WHERE
    )
    assert problems == [
        "endpoints.yml: model_groups[0] (id router-llm).models[1].api_key: "
        "environment variable OPENAI_API_KEY is not set"
    ]


def test_literal_secret_is_refused_and_not_echoed() -> None:
    for key in ("api_key", "aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        _, problems = expand_model({key: "sk-live-123"}, environ={}, **WHERE)
        assert problems == [
            f"endpoints.yml: model_groups[0] (id router-llm).models[1].{key}: "
            "must be written as ${VAR}, a literal secret is refused"
        ]
        assert "sk-live-123" not in problems[0]


def test_secret_must_be_exactly_one_reference() -> None:
    _, problems = expand_model({"api_key": "Bearer ${TOKEN}"}, environ={"TOKEN": "t"}, **WHERE)
    assert [p.split(": ", 2)[2] for p in problems] == [
        "must be written as ${VAR}, a literal secret is refused"
    ]


def test_reference_outside_expandable_keys_is_an_error() -> None:
    model, problems = expand_model({"model": "${MODEL}"}, environ={"MODEL": "x"}, **WHERE)
    assert model == {"model": "${MODEL}"}
    assert len(problems) == 1
    assert problems[0].startswith(
        "endpoints.yml: model_groups[0] (id router-llm).models[1].model: "
        "${...} is not expanded for this key"
    )


def test_malformed_reference_is_an_error() -> None:
    _, problems = expand_model({"api_base": "http://${HOST"}, environ={"HOST": "h"}, **WHERE)
    assert problems == [
        "endpoints.yml: model_groups[0] (id router-llm).models[1].api_base: "
        "malformed ${...} reference, write it as ${NAME}"
    ]


def test_sections_expand_every_string_at_any_depth() -> None:
    section, problems = expand_section(
        {
            "url": ["${BROKER_1}", "b:9092"],
            "topics": {"input": "${PREFIX}-in"},
            "partitions": 6,
            "sasl_password": "${MISSING}",
        },
        file="endpoints.yml",
        path="kafka",
        environ={"BROKER_1": "a:9092", "PREFIX": "prod"},
    )
    assert section["url"] == ["a:9092", "b:9092"]
    assert section["topics"] == {"input": "prod-in"}
    assert section["partitions"] == 6
    assert problems == [
        "endpoints.yml: kafka.sasl_password: environment variable MISSING is not set"
    ]


def test_only_the_named_keys_of_a_block_expand() -> None:
    block, problems = expand_keys(
        {"redis_password": "${REDIS_PASSWORD}", "routing_strategy": "least-busy"},
        expandable=("redis_password",),
        file="endpoints.yml",
        path="model_groups[0] (id g).router",
        environ={"REDIS_PASSWORD": "pw"},
    )
    assert problems == []
    assert block == {"redis_password": "pw", "routing_strategy": "least-busy"}


def test_is_variable_reference() -> None:
    assert is_variable_reference("${OPENAI_API_KEY}")
    assert not is_variable_reference("${OPENAI_API_KEY} ")
    assert not is_variable_reference("$OPENAI_API_KEY")
    assert not is_variable_reference(None)
