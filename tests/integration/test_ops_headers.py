"""Every inbox and DLQ record carries all headers of its input record unchanged, in their order,
before the worker's own (SPEC §2): for a message decided in the fetch loop, one decided in its
sender's lane, a bad record, and an input whose headers leave a dead letter no room."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from contracts.models import (
    DLQ_HEADERS,
    TRUNCATED_HEADER,
    TRUNCATED_HEADERS_HEADER,
    DeadLetter,
)
from tests.integration.test_intent_routing import ASSISTANT, make_settings
from tests.integration.test_worker_edges import RasaNluStub
from tests.kafka_support import Outgoing, TopicReader, produce, routed, running_worker, user_message
from tests.runtime_events import RecordedEvents
from worker.kafka.outbox import estimate_size
from worker.runtime.clients import MAX_REQUEST_SIZE
from worker.runtime.coexistence_router import CoexistenceRouter
from worker.runtime.nlu_client import NluServer

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HEADERS = [
    ("traceparent", TRACEPARENT),
    ("tracestate", b"rojo=00f067aa0ba902b7"),
    ("x-connector", b"rest"),
    ("x-binary", b"\x00\xff\x10"),
    ("x-connector", b"repeated names stay"),
]


def with_headers(outgoing: Outgoing, headers: list[tuple[str, bytes]]) -> Outgoing:
    return Outgoing(outgoing.value, outgoing.key, outgoing.partition, headers)


def headers_of(record: ConsumerRecord[bytes, bytes]) -> list[tuple[str, bytes]]:
    return [(name, bytes(value)) for name, value in record.headers]


async def test_inbox_and_dlq_records_carry_the_input_headers(bootstrap: str) -> None:
    settings = make_settings(bootstrap, partitions=1)
    sent = [
        with_headers(user_message("fast", "send money", "transfer_money"), HEADERS),
        with_headers(user_message("slow", "a human please"), HEADERS),  # asks the NLU server
        with_headers(Outgoing(b"{not json", b"bad", 0), HEADERS),
        user_message("plain", "hi", "handoff"),  # no headers: none added
    ]
    async with RasaNluStub({"a human please": "handoff"}) as nlu:
        router = CoexistenceRouter(ASSISTANT, nlu=NluServer(nlu.url, retries=0))
        async with running_worker(settings, router):
            await produce(bootstrap, settings.topics.input, sent)
            async with (
                TopicReader(bootstrap, settings.topics.calm, settings.topics.nlu) as inboxes,
                TopicReader(bootstrap, settings.topics.dlq) as dlq,
            ):
                await inboxes.wait_for(3)
                [dead] = await dlq.wait_for(1)
        await router.close()
    by_sender = {routed(r)["message"]["sender_id"]: r for r in inboxes.records}
    assert routed(by_sender["slow"])["routing"]["reason"] == "listed_intent"  # through a lane
    assert headers_of(by_sender["fast"]) == HEADERS
    assert headers_of(by_sender["slow"]) == HEADERS
    assert headers_of(by_sender["plain"]) == []
    # The input's headers first, as they came; then the worker's.
    assert headers_of(dead)[: len(HEADERS)] == HEADERS
    assert [name for name, _ in headers_of(dead)[len(HEADERS) :]] == list(DLQ_HEADERS)
    assert DeadLetter.from_headers(dead.headers).error_type == "ValidationError"


async def test_input_headers_that_leave_a_dead_letter_no_room_are_left_out_last_first(
    bootstrap: str,
) -> None:
    """Its headers make the inbox record too large (RecordTooLarge); its dead letter would be
    too, even empty: the last input header goes, the first stays, the value stays whole."""
    settings = make_settings(bootstrap, partitions=1)
    message = user_message("heavy", "send money", "transfer_money")
    assert message.value is not None and message.key is not None
    first = ("traceparent", TRACEPARENT)
    # The input just fits the producer's (and the worker's) 1 MiB; with the routing block,
    # or with the dead letter's own headers, it would not.
    room = MAX_REQUEST_SIZE - estimate_size(message.key, message.value, [first, ("x-blob", b"")])
    blob = ("x-blob", b"b" * (room - 16))
    heavy = with_headers(message, [first, blob])
    events = RecordedEvents()
    async with running_worker(settings, CoexistenceRouter(ASSISTANT), events):
        await produce(
            bootstrap, settings.topics.input, [heavy, user_message("next", "hi", "handoff")]
        )
        async with TopicReader(bootstrap, settings.topics.dlq, settings.topics.nlu) as reader:
            await reader.wait_for(2)
        await events.committed_to({0: 2})  # the partition went on
    [dead] = reader.by_topic(settings.topics.dlq)
    headers = headers_of(dead)
    assert headers[0] == first
    assert "x-blob" not in dict(headers)
    assert dict(headers)[TRUNCATED_HEADERS_HEADER] == b"1"
    assert TRUNCATED_HEADER not in dict(headers)  # the value is whole
    assert dead.value == message.value and dead.key == message.key
    assert DeadLetter.from_headers(dead.headers).error_type == "RecordTooLarge"
    assert estimate_size(dead.key, dead.value, headers) <= MAX_REQUEST_SIZE
