"""`${VAR}` as Rasa resolves it: os.path.expandvars at load for plain scalars (secrets kept for
later), once more when the client is built, and this project's refusal of what is left unset.

Checked against rasa/shared/utils/yaml.py (_add_env_var_resolver, env_var_constructor) and
rasa/shared/utils/io.py (resolve_environment_variables) of Rasa 3.11.20 (the same in 3.21.0).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from worker.config.env import (
    PlainReference,
    expand_at_load,
    expand_section,
    expandvars,
    is_variable_reference,
    left_over_references,
    resolve,
    starts_with_reference,
)
from worker.config.yaml_files import _EnvReferenceLoader

FILE, PATH = "endpoints.yml", "model_groups[0] (id router-llm).models[1]"
WHERE = {"file": FILE, "path": PATH}
ENV = {"K": "key-value", "HOST": "llm.internal", "EMPTY": ""}


def load(text: str) -> Any:
    return yaml.load(text, Loader=_EnvReferenceLoader)


def at_load(value: Any, environ: dict[str, str] = ENV) -> tuple[Any, list[str]]:
    problems: list[str] = []
    return expand_at_load(value, file=FILE, path=PATH, environ=environ, problems=problems), problems


def test_only_plain_scalars_are_references() -> None:
    document = load("a: ${K}\nb: '${K}'\nc: \"${K}\"\nd: x${K}y\ne:\n  - ${K}\n  - q\nf: 600\n")
    assert type(document["a"]) is PlainReference
    assert type(document["b"]) is str and type(document["c"]) is str
    assert type(document["d"]) is PlainReference
    assert type(document["e"][0]) is PlainReference and document["e"][1] == "q"
    assert document["f"] == 600


def test_expandvars_is_posix_expandvars_over_a_mapping() -> None:
    assert expandvars("https://${HOST}/$K/v1", ENV) == "https://llm.internal/key-value/v1"
    assert expandvars("${NOPE} $NOPE ${EMPTY}!", ENV) == "${NOPE} $NOPE !"
    assert expandvars("no dollar", ENV) == "no dollar"


def test_plain_scalars_expand_at_load_and_secrets_wait() -> None:
    document = load("model: ${K}\nrpm: ${R}\napi_key: ${K}\nother: '${K}'\n")
    value, problems = at_load(document, {**ENV, "R": "600"})
    assert problems == []
    # every expanded value is text (rpm "600"), the secret stays a reference until later
    assert value == {"model": "key-value", "rpm": "600", "api_key": "${K}", "other": "${K}"}


def test_an_unset_variable_starting_a_word_is_a_load_error_also_for_secrets() -> None:
    # env_var_constructor: words still starting with `$` (Rasa 3.11.10+; 3.11.0 let secrets by)
    for text in ("model: ${NOPE}", "api_key: ${NOPE}", "api_base: ${NOPE}/v1", "m: a ${NOPE}"):
        _, problems = at_load(load(text))
        assert problems == [f"{WHERE['file']}: {WHERE['path']}.{text.split(':')[0]}: "
                            "environment variable NOPE is not set"], text  # fmt: skip


def test_an_unset_variable_inside_a_word_loads_as_written() -> None:
    value, problems = at_load(load("api_base: https://${NOPE}/v1\nm: x${NOPE}"))
    assert problems == []
    assert value == {"api_base": "https://${NOPE}/v1", "m": "x${NOPE}"}
    assert left_over_references(value["api_base"]) == ["NOPE"]


def test_resolve_expands_every_string_and_refuses_what_is_left() -> None:
    problems: list[str] = []
    resolved = resolve(
        {"api_key": "${K}x", "api_base": "https://${NOPE}/v1", "nested": {"a": ["${HOST}"]}},
        file=FILE,
        path=PATH,
        environ=ENV,
        problems=problems,
    )
    assert resolved["api_key"] == "key-valuex"  # `${K}x`: the value of K, then x
    assert resolved["nested"] == {"a": ["llm.internal"]}
    assert problems == [
        f"{WHERE['file']}: {WHERE['path']}.api_base: environment variable NOPE is not set"
    ]


@pytest.mark.parametrize(
    ("value", "exact", "prefix"),
    [("${K}", True, True), ("${K}x", False, True), ("x${K}", False, False), ("sk-1", False, False)],
)
def test_reference_shapes(value: str, exact: bool, prefix: bool) -> None:
    # engine/validation.py: re.match(r"\${(\w+)}") up to 3.20.5; 3.21.0 re.fullmatch
    assert (is_variable_reference(value), starts_with_reference(value)) == (exact, prefix)


def test_kafka_and_nlu_sections_expand_every_string() -> None:
    values, problems = expand_section(
        {"url": "${HOST}:9092", "topics": {"input": "in-${K}"}, "x": "${NOPE}"},
        file="endpoints.yml",
        path="kafka",
        environ=ENV,
    )
    assert values == {
        "url": "llm.internal:9092",
        "topics": {"input": "in-key-value"},
        "x": "${NOPE}",
    }
    assert problems == ["endpoints.yml: kafka.x: environment variable NOPE is not set"]
