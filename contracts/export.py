"""Export the wire contracts as JSON Schema files and an AsyncAPI 3.0 document.

    python -m contracts.export           # (re)write contracts/schemas/*.json and asyncapi.yaml
    python -m contracts.export --check   # exit 1, listing the drifted files, if they are stale

Both are generated from `contracts.models`, the pydantic models the worker itself validates and
produces with, so the published contract cannot say something the code does not do. The files are
committed so that consumers (and reviewers of a model change) see the contract without running
Python; a test keeps them equal to a fresh export.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from contracts import models

CONTRACTS_DIR = Path(__file__).resolve().parent
SCHEMAS_DIRNAME = "schemas"
ASYNCAPI_FILENAME = "asyncapi.yaml"

# The version of the published contract, not of the package: bump it when a schema changes
# incompatibly, so consumers can tell.
CONTRACT_VERSION = "1.0.0"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_BASE = "urn:coexistence-router:contracts:"
KAFKA_BINDING_VERSION = "0.5.0"
DEFAULT_GROUP_ID = models.DEFAULT_GROUP_ID

TOPICS = models.DEFAULT_TOPICS

# The samples of SPEC §2, shown as examples in both the JSON Schemas and the AsyncAPI document.
EXAMPLE_USER_MESSAGE: dict[str, Any] = {
    "type": "user_message",
    "message_id": "3f2a9c1e-5b7d-4e0a-9c8f-2d1b6a4e7f30",
    "sender_id": "user-42",
    "text": "I want to send money",
    "input_channel": "rest",
    "timestamp": 1763800000.25,
    "metadata": {},
    "parse_data": {"intent": {"name": "transfer_money", "confidence": 0.93}, "entities": []},
}
EXAMPLE_SESSION_RESET: dict[str, Any] = {
    "type": "session_reset",
    "message_id": "9b0e4d7a-1c2f-4a3b-8e5d-6f7a8b9c0d1e",
    "sender_id": "user-42",
}
EXAMPLE_ROUTING: dict[str, Any] = {
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
EXAMPLE_ROUTED_MESSAGE: dict[str, Any] = {
    "message": EXAMPLE_USER_MESSAGE,
    "routing": EXAMPLE_ROUTING,
}
EXAMPLE_SESSION_RECORD: dict[str, Any] = {
    "route": "calm",
    "since_offset": 1041,
    "message_id": EXAMPLE_USER_MESSAGE["message_id"],
    "routing": EXAMPLE_ROUTING,
    "seen_at": 1763800000.31,
}
EXAMPLE_DEAD_LETTER = models.DeadLetter(
    error_type="ValidationError",
    error_message="1 validation error for UserMessage\ntext\n  Field required",
    source_topic="user-messages",
    source_partition=3,
    source_offset=1042,
)


def _dead_letter_headers_example() -> dict[str, str]:
    return {name: raw.decode() for name, raw in EXAMPLE_DEAD_LETTER.to_headers()}


def record_kinds() -> dict[str, tuple[Any, str, str, list[Any]]]:
    """One JSON Schema file per record kind: file stem -> (type, title, description, examples).

    Looked up on every call (not at import) so the export always reflects `contracts.models` as
    it is now; the drift test relies on that.
    """
    return {
        "user-message": (
            models.UserMessage,
            "UserMessage",
            "A user message on `user-messages` (`type` defaults to `user_message`).",
            [EXAMPLE_USER_MESSAGE],
        ),
        "session-reset": (
            models.SessionReset,
            "SessionReset",
            "Ends the sender's routing session (published where Rasa runs `action_reset_routing`).",
            [EXAMPLE_SESSION_RESET],
        ),
        "input-record": (
            models.InputRecord,
            "InputRecord",
            INPUT_RECORD_DESCRIPTION,
            [EXAMPLE_USER_MESSAGE, EXAMPLE_SESSION_RESET],
        ),
        "routed-message": (
            models.RoutedMessage,
            "RoutedMessage",
            "A value of `calm-inbox` / `nlu-inbox`: the input message, byte for byte, under "
            "`message`, and the routing decision under `routing`.",
            [EXAMPLE_ROUTED_MESSAGE],
        ),
        "session-record": (
            models.SessionRecord,
            "SessionRecord",
            "A non-null value of `routing-sessions` (a null value, the tombstone, ends the "
            "session).",
            [EXAMPLE_SESSION_RECORD],
        ),
    }


INPUT_RECORD_DESCRIPTION = (
    "Any value of `user-messages`: a user message or a session reset, told apart by `type`."
)
DEAD_LETTER_HEADERS_KIND = "dead-letter-headers"


def dead_letter_headers_schema() -> dict[str, Any]:
    """The headers of a `routing-dlq` record, as they appear on the wire.

    Derived from `DeadLetter`'s fields and its `to_headers()` naming, so a new field shows up here
    (and as drift) without anyone remembering to edit this.
    """
    fields = models.DeadLetter.model_fields
    properties: dict[str, Any] = {}
    placeholders: dict[str, Any] = {
        name: 0 if info.annotation is int else "" for name, info in fields.items()
    }
    sample = models.DeadLetter.model_construct(**placeholders)
    for header_name, _ in sample.to_headers():
        field_name = header_name.removeprefix("x-").replace("-", "_")
        info = fields[field_name]
        schema: dict[str, Any] = {"type": "string"}
        if info.annotation is int:
            # Kafka header values are bytes: integers travel as their decimal text.
            schema["pattern"] = "^-?[0-9]+$"
        schema["description"] = f"UTF-8 bytes of `DeadLetter.{field_name}`"
        properties[header_name] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": {"type": "string"},
    }


def _with_header(
    stem: str, title: str, description: str, schema: Mapping[str, Any], examples: list[Any]
) -> dict[str, Any]:
    head: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{SCHEMA_ID_BASE}{stem}",
        "title": title,
        "description": description,
    }
    body = {k: v for k, v in schema.items() if k not in ("title", "description")}
    return {**head, **body, "examples": examples}


def json_schemas() -> dict[str, dict[str, Any]]:
    """Every standalone JSON Schema document, by file stem."""
    result: dict[str, dict[str, Any]] = {}
    for stem, (kind, title, description, examples) in record_kinds().items():
        schema = TypeAdapter(kind).json_schema(mode="validation")
        result[stem] = _with_header(stem, title, description, schema, examples)
    result[DEAD_LETTER_HEADERS_KIND] = _with_header(
        DEAD_LETTER_HEADERS_KIND,
        "DeadLetterHeaders",
        "Headers of a `routing-dlq` record, whose key and value are the original bytes.",
        dead_letter_headers_schema(),
        [_dead_letter_headers_example()],
    )
    return result


def _component_schemas() -> dict[str, Any]:
    """Every model as an AsyncAPI component schema, with refs rewritten to components."""
    ref_template = "#/components/schemas/{model}"
    outputs: list[tuple[type[BaseModel], Any]] = [
        (models.UserMessage, "validation"),
        (models.SessionReset, "validation"),
        (models.RoutedMessage, "validation"),
        (models.SessionRecord, "validation"),
    ]
    _, definitions = models_json_schema(outputs, ref_template=ref_template)
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    union = TypeAdapter(models.InputRecord).json_schema(ref_template=ref_template)
    union.pop("$defs", None)
    schemas["InputRecord"] = {
        "title": "InputRecord",
        "description": INPUT_RECORD_DESCRIPTION,
        **union,
    }
    schemas["SessionRecordHeaders"] = SESSION_RECORD_HEADERS
    schemas["InboxHeaders"] = INBOX_HEADERS
    schemas["DeadLetterHeaders"] = {
        "title": "DeadLetterHeaders",
        "description": "Headers naming the error and the record's source.",
        **dead_letter_headers_schema(),
    }
    return dict(sorted(schemas.items()))


SESSION_RECORD_HEADERS: dict[str, Any] = {
    "title": "SessionRecordHeaders",
    "description": "Headers of every `routing-sessions` record, tombstones included.",
    "type": "object",
    "properties": {
        models.INPUT_OFFSET_HEADER: {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "The `user-messages` offset (decimal text) of the message this "
            "record was written for, in the input partition numbered like this record's.",
        }
    },
}
SESSION_RECORD_HEADERS_EXAMPLE = {models.INPUT_OFFSET_HEADER: "1207"}

INBOX_HEADERS: dict[str, Any] = {
    "title": "InboxHeaders",
    "description": "Every header of the input record, unchanged and in its order (trace context, "
    "connector metadata, any bytes). With tracing on, `traceparent` is the W3C trace context "
    "continued by the worker's span for the message (a new one when the input had none); "
    "`tracestate` and every other header stay as they came.",
    "type": "object",
    "properties": {
        "traceparent": {
            "type": "string",
            "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            "description": "W3C trace context: the input's, or the worker's span's when tracing "
            "is on.",
        },
        "tracestate": {"type": "string", "description": "W3C trace state, as the input had it."},
    },
    "additionalProperties": True,
}
INBOX_HEADERS_EXAMPLE = {
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "x-connector": "rest",
}

SENDER_KEY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "description": "The record key: the UTF-8 bytes of `sender_id`. When a key is present it "
    "must equal the payload's `sender_id`; any partitioner may have placed the record.",
}


def _kafka_key() -> dict[str, Any]:
    # Inline, not a $ref: the AsyncAPI 3.0 schema's `oneOf` (schema | reference) for the Kafka key
    # rejects a $ref, which is valid under both branches.
    return {
        "kafka": {
            "key": dict(SENDER_KEY_SCHEMA),
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }


def _message(
    name: str,
    title: str,
    summary: str,
    payload: dict[str, Any],
    examples: list[Any],
    *,
    content_type: str = "application/json",
    description: str | None = None,
    headers: dict[str, Any] | None = None,
    bindings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": content_type,
    }
    if description:
        message["description"] = description
    if headers:
        message["headers"] = headers
    message["payload"] = payload
    message["bindings"] = bindings or _kafka_key()
    message["examples"] = examples
    return message


def _ref(path: str) -> dict[str, str]:
    return {"$ref": path}


def asyncapi_document() -> dict[str, Any]:
    key = "sender_id"
    messages = {
        "UserMessage": _message(
            "user_message",
            "User message",
            "A user message to route.",
            _ref("#/components/schemas/UserMessage"),
            [{"name": "transfer", "payload": EXAMPLE_USER_MESSAGE, "headers": {}}],
            description="`message_id`, `sender_id` and `text` are required; `parse_data` is "
            "the result of an upstream NLU in Rasa's parse format. Unknown fields are kept and "
            "travel on to the inbox unchanged.",
        ),
        "SessionReset": _message(
            "session_reset",
            "Session reset",
            "Ends the sender's routing session; the next message is routed afresh.",
            _ref("#/components/schemas/SessionReset"),
            [{"name": "reset", "payload": EXAMPLE_SESSION_RESET}],
        ),
        "RoutedMessage": _message(
            "routed_message",
            "Routed message",
            "The input message, unchanged, with the routing decision.",
            _ref("#/components/schemas/RoutedMessage"),
            [{"name": "calm", "payload": EXAMPLE_ROUTED_MESSAGE, "headers": INBOX_HEADERS_EXAMPLE}],
            description="`message` holds the input record's bytes exactly as they arrived "
            "(unknown fields included). `routing.sticky` is true when, after this message, the "
            "sender's session is held by `routing.route`. The headers are the input record's.",
            headers=_ref("#/components/schemas/InboxHeaders"),
        ),
        "SessionRecord": _message(
            "session_record",
            "Session state",
            "The sender's sticky route (compacted changelog).",
            _ref("#/components/schemas/SessionRecord"),
            [
                {
                    "name": "calm-session",
                    "payload": EXAMPLE_SESSION_RECORD,
                    "headers": SESSION_RECORD_HEADERS_EXAMPLE,
                }
            ],
            description="The latest record of a key is the sender's session. `since_offset`, "
            "`routing` and the `x-input-offset` header let a redelivered message get the "
            "decision it already got.",
            headers=_ref("#/components/schemas/SessionRecordHeaders"),
        ),
        "SessionTombstone": _message(
            "session_tombstone",
            "Session end (tombstone)",
            "A null value: the sender's session ended (reset, `/restart` or idle expiry).",
            {"type": "null"},
            [{"name": "ended", "payload": None, "headers": SESSION_RECORD_HEADERS_EXAMPLE}],
            description="The Kafka record value is null (no bytes, not the JSON text `null`); "
            "log compaction eventually removes the key.",
            headers=_ref("#/components/schemas/SessionRecordHeaders"),
        ),
        "DeadLetter": _message(
            "dead_letter",
            "Dead letter",
            "A record of `user-messages` that could not be decoded or validated.",
            {
                "description": "The original value bytes, unchanged: possibly not UTF-8, not "
                "JSON, or not a valid input record. The record key is the original key too, and "
                "the input record's headers come first, unchanged, before the worker's. A dead "
                f"letter too large for the topic is cut to fit: `{models.TRUNCATED_HEADER}` (the "
                f"value's original size), `{models.TRUNCATED_HEADERS_HEADER}` (how many of the "
                "input's headers, the last ones, were left out), "
                f"`{models.TRUNCATED_KEY_HEADER}` (the key's original size).",
            },
            [{"name": "missing-text", "headers": _dead_letter_headers_example()}],
            content_type="application/octet-stream",
            headers=_ref("#/components/schemas/DeadLetterHeaders"),
            bindings={
                "kafka": {
                    "key": {
                        "type": ["string", "null"],
                        "description": "The original key bytes, unchanged (null if it had none).",
                    },
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        ),
    }

    def channel(
        topic: str,
        title: str,
        description: str,
        channel_messages: dict[str, str],
        topic_configuration: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        binding: dict[str, Any] = {"topic": topic}
        if topic_configuration:
            binding["topicConfiguration"] = topic_configuration
        binding["bindingVersion"] = KAFKA_BINDING_VERSION
        return {
            "address": topic,
            "title": title,
            "description": description,
            "messages": {
                name: _ref(f"#/components/messages/{message}")
                for name, message in channel_messages.items()
            },
            "bindings": {"kafka": binding},
        }

    channels = {
        "userMessages": channel(
            TOPICS["input"],
            "User messages",
            f"Input from channel connectors and downstream systems, keyed by `{key}`. The "
            "address is the default topic name; every name is configurable.",
            {"userMessage": "UserMessage", "sessionReset": "SessionReset"},
        ),
        "calmInbox": channel(
            TOPICS["calm"],
            "CALM inbox",
            f"Messages routed to CALM, keyed by `{key}`, in each sender's input order.",
            {"routedMessage": "RoutedMessage"},
        ),
        "nluInbox": channel(
            TOPICS["nlu"],
            "NLU inbox",
            f"Messages routed to the NLU-based system, keyed by `{key}`, in each sender's "
            "input order.",
            {"routedMessage": "RoutedMessage"},
        ),
        "routingSessions": channel(
            TOPICS["sessions"],
            "Routing sessions",
            f"Compacted changelog of per-sender sticky state, keyed by `{key}`. It must have "
            f"as many partitions as `{TOPICS['input']}`; the worker refuses to start otherwise. "
            "A tombstone (null value) ends the session.",
            {"sessionRecord": "SessionRecord", "sessionTombstone": "SessionTombstone"},
            topic_configuration={"cleanup.policy": ["compact"]},
        ),
        "routingDlq": channel(
            TOPICS["dlq"],
            "Routing dead letters",
            "Input records that could not be decoded or validated, with the reason in headers.",
            {"deadLetter": "DeadLetter"},
        ),
    }

    def operation(
        action: str, channel_id: str, title: str, summary: str, *, group: bool = False
    ) -> dict[str, Any]:
        op: dict[str, Any] = {
            "action": action,
            "channel": _ref(f"#/channels/{channel_id}"),
            "title": title,
            "summary": summary,
            "messages": [
                _ref(f"#/channels/{channel_id}/messages/{name}")
                for name in channels[channel_id]["messages"]
            ],
        }
        if group:
            op["bindings"] = {
                "kafka": {
                    "groupId": {"type": "string", "enum": [DEFAULT_GROUP_ID]},
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            }
        return op

    operations = {
        "receiveUserMessages": operation(
            "receive",
            "userMessages",
            "Consume user messages",
            "Consumer group, earliest offset for a new group, at-least-once.",
            group=True,
        ),
        "sendCalmInbox": operation(
            "send", "calmInbox", "Publish to CALM", "acks=all, before the input offset commits."
        ),
        "sendNluInbox": operation(
            "send", "nluInbox", "Publish to NLU", "acks=all, before the input offset commits."
        ),
        "sendRoutingSessions": operation(
            "send",
            "routingSessions",
            "Write session state",
            "A record when a sticky session starts, a tombstone when it ends.",
        ),
        "receiveRoutingSessions": operation(
            "receive",
            "routingSessions",
            "Restore session state",
            "Read from the start for each assigned partition before its first message.",
        ),
        "sendRoutingDlq": operation(
            "send", "routingDlq", "Dead-letter a record", "The original key and bytes, headers."
        ),
    }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "coexistence-router",
            "version": CONTRACT_VERSION,
            "description": "Routes every user message of a Rasa coexistence assistant to CALM "
            "or to the NLU-based system, keeps the decision sticky per sender and publishes the "
            "message to `calm-inbox` or `nlu-inbox`. Every topic is keyed by `sender_id` "
            "(UTF-8). Generated by `python -m contracts.export` from `contracts/models.py`.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "Bootstrap servers; set with KAFKA_BOOTSTRAP_SERVERS or the "
                "`kafka.url` of endpoints.yml.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": _component_schemas(), "messages": messages},
    }


def render() -> dict[str, str]:
    """Every exported file's text, by path relative to the contracts directory."""
    files: dict[str, str] = {}
    for stem, schema in json_schemas().items():
        files[f"{SCHEMAS_DIRNAME}/{stem}.json"] = json.dumps(schema, indent=2) + "\n"
    # Through JSON and back: examples are shared objects, which YAML would emit as anchors and
    # aliases that many AsyncAPI tools do not resolve.
    document = json.loads(json.dumps(asyncapi_document()))
    header = "# Generated by `python -m contracts.export` from contracts/models.py: do not edit.\n"
    files[ASYNCAPI_FILENAME] = header + yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, width=100
    )
    return files


def drifted(root: Path = CONTRACTS_DIR) -> list[str]:
    """Paths (relative to `root`) whose content differs from a fresh export, or are stale."""
    expected = render()
    problems = [
        path
        for path, text in expected.items()
        if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text
    ]
    schemas_dir = root / SCHEMAS_DIRNAME
    if schemas_dir.is_dir():
        for existing in sorted(schemas_dir.glob("*.json")):
            relative = f"{SCHEMAS_DIRNAME}/{existing.name}"
            if relative not in expected:
                problems.append(relative)  # a kind that is no longer exported
    return problems


def write(root: Path = CONTRACTS_DIR) -> list[str]:
    """Write every exported file, remove stale schema files; returns the changed paths."""
    changed = drifted(root)
    expected = render()
    for path in changed:
        target = root / path
        if path in expected:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(expected[path], encoding="utf-8")
        else:
            target.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m contracts.export",
        description="Export the wire contracts as JSON Schema files and an AsyncAPI document.",
    )
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 listing drifted files"
    )
    parser.add_argument(
        "--dir", type=Path, default=CONTRACTS_DIR, help="contracts directory (default: package)"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = drifted(args.dir)
        for path in problems:
            print(f"drifted: {args.dir / path}", file=sys.stderr)
        if problems:
            print("run `python -m contracts.export` and commit the result", file=sys.stderr)
            return 1
        print("contracts are up to date")
        return 0
    for path in write(args.dir):
        print(f"wrote {args.dir / path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
