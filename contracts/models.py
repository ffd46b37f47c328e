"""The wire contracts of SPEC §2: every record the worker reads or writes.

Records are decoded straight from bytes with pydantic's JSON parser (which also rejects invalid
UTF-8) and encoded with orjson. The routed output embeds the input message as the exact bytes it
arrived as, so downstream sees it unchanged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
)

# SPEC §1: the topics' default names (by role), and the consumer group's default id. The worker's
# configuration and the AsyncAPI document both take them from here.
DEFAULT_TOPICS = {
    "input": "user-messages",
    "calm": "calm-inbox",
    "nlu": "nlu-inbox",
    "sessions": "routing-sessions",
    "dlq": "routing-dlq",
}
DEFAULT_GROUP_ID = "coexistence-router"


class Route(StrEnum):
    CALM = "calm"
    NLU = "nlu"


class RouterName(StrEnum):
    INTENT = "IntentBasedRouter"
    LLM = "LLMBasedRouter"


class Reason(StrEnum):
    """Why a message went where it went (the `routing.reason` field)."""

    STICKY_SESSION = "sticky_session"  # an existing session held the sender; no router work
    LISTED_INTENT = "listed_intent"  # intent listed in nlu_entry/calm_entry of the router
    NLU_TRIGGER = "nlu_trigger"  # unlisted intent that starts a flow through its nlu_trigger
    UNLISTED_INTENT = "unlisted_intent"  # unlisted intent, no flow trigger: NLU sticky
    NO_INTENT = "no_intent"  # no intent or a null intent name: NLU sticky
    NLU_FAILURE = "nlu_failure"  # the external NLU server failed: treated as no intent
    INTENT_PAYLOAD = "intent_payload"  # `/intent` text: CALM on a flow trigger, else NLU sticky
    LLM_ANSWER = "llm_answer"  # the LLM answered A, B or C
    LLM_INVALID_ANSWER = "llm_invalid_answer"  # the LLM answered something else: NLU sticky
    LLM_FAILURE = "llm_failure"  # every attempt failed or no deployment was available: NLU sticky
    RESTART = "restart"  # `/restart`: routed like any message, then the session ends


class Intent(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = None
    confidence: float = 0.0

    @field_validator("confidence", mode="before")
    @classmethod
    def _null_confidence(cls, value: object) -> object:
        # Some NLU servers send `"confidence": null` for payload intents; Rasa reads it as 0.
        return 0.0 if value is None else value


class ParseData(BaseModel):
    """Rasa's parse format, as produced by an upstream NLU or Rasa's `/model/parse`."""

    model_config = ConfigDict(extra="allow")

    intent: Intent | None = None
    entities: list[dict[str, Any]] = Field(default_factory=list)


class UserMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["user_message"] = "user_message"
    message_id: Annotated[str, Field(min_length=1)]
    sender_id: Annotated[str, Field(min_length=1)]
    text: str
    input_channel: str | None = None
    timestamp: float | None = None
    metadata: dict[str, Any] | None = Field(default_factory=dict)  # Rasa allows null
    parse_data: ParseData | None = None


class SessionReset(BaseModel):
    """Published by a downstream system where Rasa would run `action_reset_routing`."""

    model_config = ConfigDict(extra="allow")

    type: Literal["session_reset"]
    message_id: Annotated[str, Field(min_length=1)]
    sender_id: Annotated[str, Field(min_length=1)]


def _input_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "user_message"))
    return str(getattr(value, "type", "user_message"))


InputRecord = Annotated[
    Annotated[UserMessage, Tag("user_message")] | Annotated[SessionReset, Tag("session_reset")],
    Discriminator(_input_type),
]
input_record_adapter: TypeAdapter[UserMessage | SessionReset] = TypeAdapter(InputRecord)


def decode_input(data: bytes) -> UserMessage | SessionReset:
    """Decode a `user-messages` value; raises pydantic.ValidationError on any defect.

    Nearly every record is a user message: those skip the union (whose callable discriminator
    needs the JSON as Python objects first) and go straight through pydantic's JSON parser.
    """
    if b'"type"' in data:
        return input_record_adapter.validate_json(data)
    return UserMessage.model_validate_json(data)


class LlmCall(BaseModel):
    model_group: str
    deployment: str | None = None
    answer: str | None = None
    attempts: int = 0
    latency_ms: int = 0


class Routing(BaseModel):
    route: Route
    sticky: bool
    router: RouterName
    reason: Reason
    intent: str | None = None
    llm: LlmCall | None = None
    decided_at: float


class RoutedMessage(BaseModel):
    """A record of `calm-inbox` / `nlu-inbox`."""

    message: UserMessage
    routing: Routing


def encode_routed(message_bytes: bytes, routing: dict[str, Any]) -> bytes:
    """Encode an inbox record around the input's own bytes, so `message` is unchanged;
    `routing` is a routing block as `routing_block` makes it."""
    return orjson.dumps({"message": orjson.Fragment(message_bytes), "routing": routing})


def routing_block(
    *,
    route: Route,
    sticky: bool,
    router: RouterName,
    reason: Reason,
    intent: str | None,
    llm: LlmCall | None,
    decided_at: float,
) -> dict[str, Any]:
    """A `routing` block ready for orjson: the JSON of Routing(...).model_dump(mode="json"),
    without building the model (a few µs a message on the hot path)."""
    return {
        "route": route,
        "sticky": sticky,
        "router": router,
        "reason": reason,
        "intent": intent,
        "llm": None
        if llm is None
        else {
            "model_group": llm.model_group,
            "deployment": llm.deployment,
            "answer": llm.answer,
            "attempts": llm.attempts,
            "latency_ms": llm.latency_ms,
        },
        "decided_at": decided_at,
    }


def block_of(routing: Routing) -> dict[str, Any]:
    return routing_block(
        route=routing.route,
        sticky=routing.sticky,
        router=routing.router,
        reason=routing.reason,
        intent=routing.intent,
        llm=routing.llm,
        decided_at=routing.decided_at,
    )


class SessionRecord(BaseModel):
    """A `routing-sessions` value; a tombstone (null value) ends the session.

    `since_offset` is the input offset of the message that opened the session and `routing` the
    decision that message got, so a redelivery of that message gets the identical decision.
    `seen_at` is the last time the sender was seen (for idle expiry after a restore).
    """

    route: Route
    since_offset: int = -1
    message_id: str | None = None
    routing: Routing | None = None
    seen_at: float = 0.0


session_record_adapter: TypeAdapter[SessionRecord] = TypeAdapter(SessionRecord)

# Header of every `routing-sessions` record (tombstones too): the input offset it was written
# for, so a restore knows which records describe messages that may still be redelivered.
INPUT_OFFSET_HEADER = "x-input-offset"


def encode_session(record: SessionRecord) -> bytes:
    return session_value(
        record.route,
        record.since_offset,
        record.seen_at,
        message_id=record.message_id,
        routing=None if record.routing is None else block_of(record.routing),
    )


def session_value(
    route: Route,
    since_offset: int,
    seen_at: float,
    *,
    message_id: str | None = None,
    routing: dict[str, Any] | None = None,
) -> bytes:
    """A `routing-sessions` value: the JSON of SessionRecord(...).model_dump(mode="json",
    exclude_none=True), without building the model; `routing` as `routing_block` makes it."""
    value: dict[str, Any] = {"route": route, "since_offset": since_offset}
    if message_id is not None:
        value["message_id"] = message_id
    if routing is not None:
        value["routing"] = _without_none(routing)
    value["seen_at"] = seen_at
    return orjson.dumps(value)


def _without_none(value: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _without_none(v) if isinstance(v, dict) else v for k, v in value.items() if v is not None
    }


DLQ_HEADERS = (
    "x-error-type",
    "x-error-message",
    "x-source-topic",
    "x-source-partition",
    "x-source-offset",
)
# On a `routing-dlq` record whose value had to be cut to fit the topic: the original value's
# size in bytes (decimal). `x-truncated-key` likewise, in the rare case the key had to be cut;
# `x-truncated-headers`: how many of the input record's headers (the last ones) were left out,
# in the rarer case that they alone did not fit.
TRUNCATED_HEADER = "x-truncated"
TRUNCATED_KEY_HEADER = "x-truncated-key"
TRUNCATED_HEADERS_HEADER = "x-truncated-headers"


class DeadLetter(BaseModel):
    """The headers of a `routing-dlq` record; its key and value are the original bytes."""

    error_type: str
    error_message: str
    source_topic: str
    source_partition: int
    source_offset: int

    def to_headers(self) -> list[tuple[str, bytes]]:
        values = (
            self.error_type,
            self.error_message,
            self.source_topic,
            str(self.source_partition),
            str(self.source_offset),
        )
        return [(name, value.encode()) for name, value in zip(DLQ_HEADERS, values, strict=True)]

    @classmethod
    def from_headers(
        cls, headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]
    ) -> DeadLetter:
        """Read our headers back; headers other systems added (any bytes) are ignored."""
        values = {
            name.removeprefix("x-").replace("-", "_"): raw.decode("utf-8", "replace")
            for name, raw in headers
            if name in DLQ_HEADERS
        }
        return cls.model_validate(values)
