"""The published contracts (JSON Schema, AsyncAPI) match the models, and the codecs round-trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml
from pydantic import ValidationError

from contracts import export, models
from contracts.models import DeadLetter, UserMessage, decode_input

CONTRACTS = Path(export.__file__).resolve().parent
SCHEMA_FILES = {
    "user-message",
    "session-reset",
    "input-record",
    "routed-message",
    "session-record",
    "dead-letter-headers",
}

# The samples of SPEC §2, written out here independently of the exporter's own examples.
SPEC_USER_MESSAGE: dict[str, Any] = {
    "type": "user_message",
    "message_id": "3f2a",
    "sender_id": "user-42",
    "text": "I want to send money",
    "input_channel": "rest",
    "timestamp": 1763800000.25,
    "metadata": {},
    "parse_data": {"intent": {"name": "transfer_money", "confidence": 0.93}, "entities": []},
}
SPEC_SESSION_RESET: dict[str, Any] = {
    "type": "session_reset",
    "message_id": "9b0e",
    "sender_id": "user-42",
}
SPEC_ROUTING: dict[str, Any] = {
    "route": "calm",
    "sticky": True,
    "router": "LLMBasedRouter",
    "reason": "llm_answer",
    "intent": "transfer_money",
    "llm": {
        "model_group": "router-llm",
        "deployment": "gpt-4o-mini-fr",
        "answer": "A",
        "attempts": 1,
        "latency_ms": 83,
    },
    "decided_at": 1763800000.31,
}


def load_schema(stem: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CONTRACTS / "schemas" / f"{stem}.json").read_text())
    return schema


def is_valid(stem: str, instance: Any) -> bool:
    return bool(jsonschema.Draft202012Validator(load_schema(stem)).is_valid(instance))


def load_asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((CONTRACTS / "asyncapi.yaml").read_text())
    return document


# -- drift --------------------------------------------------------------------------------------


def test_committed_files_equal_a_fresh_export() -> None:
    assert export.drifted() == [], "stale contracts: run `python -m contracts.export` and commit"
    assert {p.stem for p in (CONTRACTS / "schemas").glob("*.json")} == SCHEMA_FILES


def test_a_model_change_is_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    class UserMessageWithLocale(models.UserMessage):
        locale: str

    monkeypatch.setattr(models, "UserMessage", UserMessageWithLocale)
    drifted = export.drifted()
    assert "schemas/user-message.json" in drifted
    assert "asyncapi.yaml" in drifted
    assert "schemas/session-reset.json" not in drifted


def copy_contracts(tmp_path: Path) -> Path:
    target = tmp_path / "contracts"
    (target / "schemas").mkdir(parents=True)
    for path in export.render():
        shutil.copyfile(CONTRACTS / path, target / path)
    return target


def test_check_cli_lists_drifted_and_stale_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = copy_contracts(tmp_path)
    assert export.main(["--check", "--dir", str(target)]) == 0

    edited = target / "schemas" / "session-record.json"
    edited.write_text(edited.read_text().replace('"route"', '"rout"', 1))
    (target / "schemas" / "removed-kind.json").write_text("{}\n")
    (target / "asyncapi.yaml").unlink()
    capsys.readouterr()
    assert export.main(["--check", "--dir", str(target)]) == 1
    err = capsys.readouterr().err
    for name in ("session-record.json", "removed-kind.json", "asyncapi.yaml"):
        assert name in err
    assert "user-message.json" not in err

    assert export.main(["--dir", str(target)]) == 0
    assert not (target / "schemas" / "removed-kind.json").exists()
    assert export.main(["--check", "--dir", str(target)]) == 0


# -- AsyncAPI -----------------------------------------------------------------------------------


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def test_asyncapi_document_describes_the_five_topics() -> None:
    document = load_asyncapi()
    assert document["asyncapi"] == "3.0.0"
    channels = document["channels"]
    assert {channel["address"] for channel in channels.values()} == {
        "user-messages",
        "calm-inbox",
        "nlu-inbox",
        "routing-sessions",
        "routing-dlq",
    }
    assert len(channels) == 5
    for ref in refs(document):
        resolve(document, ref)  # every reference resolves inside the document

    by_address = {channel["address"]: channel for channel in channels.values()}
    sessions = by_address["routing-sessions"]
    assert sessions["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"] == ["compact"]
    session_messages = [resolve(document, m["$ref"]) for m in sessions["messages"].values()]
    assert {"type": "null"} in [message["payload"] for message in session_messages]

    dlq = resolve(document, by_address["routing-dlq"]["messages"]["deadLetter"]["$ref"])
    headers = resolve(document, dlq["headers"]["$ref"])
    assert set(headers["required"]) == {name for name, _ in export.EXAMPLE_DEAD_LETTER.to_headers()}

    for name, message in document["components"]["messages"].items():
        key = message["bindings"]["kafka"]["key"]
        assert key["type"] in ("string", ["string", "null"]), name


def test_asyncapi_operations() -> None:
    document = load_asyncapi()
    actions = {
        (operation["action"], resolve(document, operation["channel"]["$ref"])["address"])
        for operation in document["operations"].values()
    }
    assert actions == {
        ("receive", "user-messages"),
        ("send", "calm-inbox"),
        ("send", "nlu-inbox"),
        ("send", "routing-dlq"),
        ("send", "routing-sessions"),
        ("receive", "routing-sessions"),
    }
    for operation in document["operations"].values():
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:
            # AsyncAPI 3: an operation's messages must be messages of its channel.
            assert message["$ref"].startswith(channel_ref + "/messages/")


def test_asyncapi_message_examples_match_their_payload_schemas() -> None:
    document = load_asyncapi()
    components = document["components"]
    checked = 0
    for message in components["messages"].values():
        payload = message["payload"]
        for example in message["examples"]:
            if "payload" not in example:
                continue
            schema = {"components": components, **payload}
            jsonschema.Draft7Validator(schema).validate(example["payload"])
            checked += 1
        if "headers" in message:
            for example in message["examples"]:
                schema = {"components": components, **message["headers"]}
                jsonschema.Draft7Validator(schema).validate(example["headers"])
    assert checked >= 5


# -- JSON Schema --------------------------------------------------------------------------------


@pytest.mark.parametrize("stem", sorted(SCHEMA_FILES))
def test_every_schema_is_valid_draft_2020_12(stem: str) -> None:
    schema = load_schema(stem)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for example in schema["examples"]:
        validator.validate(example)


def test_spec_samples_validate() -> None:
    assert is_valid("user-message", SPEC_USER_MESSAGE)
    assert is_valid("session-reset", SPEC_SESSION_RESET)
    assert is_valid("input-record", SPEC_USER_MESSAGE)
    assert is_valid("input-record", SPEC_SESSION_RESET)
    minimal = {"message_id": "m1", "sender_id": "s1", "text": "hi"}  # `type` defaults
    assert is_valid("input-record", minimal)
    routed = {"message": SPEC_USER_MESSAGE, "routing": SPEC_ROUTING}
    assert is_valid("routed-message", routed)
    assert is_valid("session-record", {"route": "nlu"})
    assert is_valid("session-record", {"route": "calm", "since_offset": 7, "routing": SPEC_ROUTING})
    headers = {name: raw.decode() for name, raw in export.EXAMPLE_DEAD_LETTER.to_headers()}
    assert is_valid("dead-letter-headers", headers)


INVALID_INPUTS: list[dict[str, Any]] = [
    {"message_id": "m1", "sender_id": "s1"},  # no text
    {"message_id": "m1", "text": "hi"},  # no sender
    {"message_id": "m1", "sender_id": "", "text": "hi"},  # empty sender
    {"type": "session_reset", "message_id": "m1"},
    {"type": "shutdown", "message_id": "m1", "sender_id": "s1", "text": "hi"},
    {"message_id": "m1", "sender_id": "s1", "text": "hi", "parse_data": {"intent": "greet"}},
]


@pytest.mark.parametrize("record", INVALID_INPUTS)
def test_invalid_inputs_are_rejected_by_schema_and_decoder(record: dict[str, Any]) -> None:
    assert not is_valid("input-record", record)
    with pytest.raises(ValidationError):
        models.decode_input(orjson.dumps(record))


def test_schema_valid_inputs_decode() -> None:
    # The schema is never more permissive than the decoder: whatever it admits, the worker takes.
    for record in (
        SPEC_USER_MESSAGE,
        SPEC_SESSION_RESET,
        {"message_id": "m", "sender_id": "s", "text": "", "extra": {"kept": True}},
        {"message_id": "m", "sender_id": "s", "text": "x", "parse_data": {"intent": None}},
        {"message_id": "m", "sender_id": "s", "text": "x", "parse_data": {"intent": {}}},
    ):
        assert is_valid("input-record", record)
        models.decode_input(orjson.dumps(record))


def test_dead_letter_headers_schema_rejects_bad_headers() -> None:
    headers = {name: raw.decode() for name, raw in export.EXAMPLE_DEAD_LETTER.to_headers()}
    assert not is_valid("dead-letter-headers", {**headers, "x-source-offset": "ten"})
    missing = dict(headers)
    del missing["x-error-type"]
    assert not is_valid("dead-letter-headers", missing)


# -- codecs -------------------------------------------------------------------------------------


def test_decode_input() -> None:
    message = models.decode_input(orjson.dumps(SPEC_USER_MESSAGE))
    assert isinstance(message, models.UserMessage)
    assert message.parse_data is not None and message.parse_data.intent is not None
    assert message.parse_data.intent.name == "transfer_money"
    untyped = models.decode_input(b'{"message_id": "m", "sender_id": "s", "text": "hi"}')
    assert isinstance(untyped, models.UserMessage) and untyped.type == "user_message"
    reset = models.decode_input(orjson.dumps(SPEC_SESSION_RESET))
    assert isinstance(reset, models.SessionReset) and reset.sender_id == "user-42"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"message_id": "m", "sender_id": "\xff\xfe", "text": "hi"}',  # invalid UTF-8
        b'{"message_id": "m", "sender_id": "s", "text": "\xc3"}',  # truncated UTF-8 sequence
        b'{"message_id": "m", "sender_id": "s", "text": "hi"',  # truncated JSON
        b"not json",
        b"",
        b"null",
        b'["m", "s", "hi"]',
    ],
)
def test_decode_input_rejects_undecodable_bytes(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        models.decode_input(raw)


def test_encode_routed_keeps_the_input_bytes_exactly() -> None:
    # Odd spacing, key order, escapes, number spelling and unknown fields must all survive.
    raw = (
        b'{ "text" : "caf\\u00e9 \xe2\x82\xac",  "sender_id":"user-42","message_id":"m-1",'
        b'"timestamp": 1.50e9, "unknown": {"nested": [1, 2.0, null]} }'
    )
    message = models.decode_input(raw)
    assert isinstance(message, models.UserMessage)
    routing = models.Routing.model_validate(SPEC_ROUTING)
    encoded = models.encode_routed(raw, models.block_of(routing))
    assert encoded.startswith(b'{"message":' + raw + b',"routing":')
    assert json.loads(encoded)["message"] == json.loads(raw)
    decoded = models.RoutedMessage.model_validate_json(encoded)
    assert decoded.routing == routing
    assert decoded.message.text == "café €"
    assert is_valid("routed-message", json.loads(encoded))


def test_session_record_round_trip() -> None:
    record = models.SessionRecord(
        route=models.Route.CALM,
        since_offset=12,
        message_id="m-1",
        routing=models.Routing.model_validate(SPEC_ROUTING),
        seen_at=1763800000.5,
    )
    encoded = models.encode_session(record)
    assert models.session_record_adapter.validate_json(encoded) == record
    assert is_valid("session-record", json.loads(encoded))
    bare = models.encode_session(models.SessionRecord(route=models.Route.NLU))
    assert json.loads(bare) == {"route": "nlu", "since_offset": -1, "seen_at": 0.0}


@pytest.mark.parametrize(
    "llm",
    [None, models.LlmCall(model_group="g", deployment=None, answer=None, attempts=3)],
)
@pytest.mark.parametrize("message_id", [None, "m-7"])
def test_a_session_value_is_the_models_json_without_nulls(
    llm: models.LlmCall | None, message_id: str | None
) -> None:
    routing = models.Routing(
        route=models.Route.NLU,
        sticky=True,
        router=models.RouterName.LLM,
        reason=models.Reason.LLM_FAILURE,
        llm=llm,
        decided_at=1763800000.25,
    )
    record = models.SessionRecord(
        route=models.Route.NLU,
        since_offset=2**40,
        message_id=message_id,
        routing=routing,
        seen_at=1763800001.125,
    )
    expected = orjson.dumps(record.model_dump(mode="json", exclude_none=True))
    assert models.encode_session(record) == expected


def test_dead_letter_header_round_trip() -> None:
    letter = models.DeadLetter(
        error_type="ValidationError",
        error_message="ligne 1: caractère invalide \u2014 «x»",
        source_topic="user-messages",
        source_partition=11,
        source_offset=9_007_199_254_740_993,  # beyond a double's exact integers
    )
    headers = letter.to_headers()
    assert all(isinstance(value, bytes) for _, value in headers)
    assert models.DeadLetter.from_headers(headers) == letter
    # As a Kafka client hands them back: a tuple, with headers of other systems mixed in.
    mixed = (("traceparent", b"00-abc-def-01"), *headers)
    assert models.DeadLetter.from_headers(mixed) == letter
    assert is_valid("dead-letter-headers", {k: v.decode() for k, v in headers})


def test_dead_letter_ignores_headers_of_other_systems() -> None:
    letter = DeadLetter(
        error_type="ValidationError",
        error_message="text: Field required",
        source_topic="user-messages",
        source_partition=3,
        source_offset=42,
    )
    headers = [("traceparent", b"\xff\xfe binary"), *letter.to_headers(), ("x-other", b"1")]
    assert DeadLetter.from_headers(headers) == letter


def test_null_metadata_and_null_confidence_are_accepted() -> None:
    message = decode_input(
        b'{"message_id":"m","sender_id":"s","text":"hi","metadata":null,'
        b'"parse_data":{"intent":{"name":"greet","confidence":null}}}'
    )
    assert isinstance(message, UserMessage)
    assert message.metadata is None
    assert message.parse_data is not None and message.parse_data.intent is not None
    assert message.parse_data.intent.confidence == 0.0


@pytest.mark.parametrize(
    "llm",
    [None, models.LlmCall(model_group="g", deployment="d", answer="A", attempts=2, latency_ms=9)],
)
def test_encoded_routing_block_is_the_models_json(llm: models.LlmCall | None) -> None:
    routing = models.Routing(
        route=models.Route.CALM,
        sticky=True,
        router=models.RouterName.LLM,
        reason=models.Reason.LLM_ANSWER,
        intent=None,
        llm=llm,
        decided_at=1763800000.31,
    )
    encoded = orjson.loads(models.encode_routed(b'{"x":1}', models.block_of(routing)))
    assert encoded == {"message": {"x": 1}, "routing": routing.model_dump(mode="json")}
