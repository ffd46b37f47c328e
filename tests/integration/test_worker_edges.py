"""Bad records, restarts, the NLU server and topic layout, against the real broker."""

from __future__ import annotations

import asyncio
import uuid
import zlib
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from contracts.models import TRUNCATED_HEADER, DeadLetter
from tests.integration.test_intent_routing import ASSISTANT, make_router, make_settings
from tests.kafka_support import (
    Outgoing,
    TopicReader,
    produce,
    routed,
    running_worker,
    user_message,
)
from tests.runtime_events import RecordedEvents
from worker.config.endpoints import Topics
from worker.kafka.outbox import estimate_size
from worker.kafka.topics import MIN_COMPACTION_LAG_MS, TopicLayoutError, ensure_topics
from worker.runtime.clients import MAX_REQUEST_SIZE
from worker.runtime.coexistence_router import CoexistenceRouter
from worker.runtime.nlu_client import NluServer
from worker.runtime.worker import RoutingWorker


@pytest.mark.parametrize(
    ("value", "key", "error_type", "mentions"),
    [
        (b"{not json", b"u1", "ValidationError", "Invalid JSON"),
        (b'{"message_id":"m","sender_id":"u1","text":"\xff\xfe"}', b"u1", "ValidationError", ""),
        (b'{"sender_id":"u1","text":"hi"}', b"u1", "ValidationError", "message_id"),
        (b'{"message_id":"m","text":"hi"}', None, "ValidationError", "sender_id"),
        (b'{"message_id":"m","sender_id":"u1"}', b"u1", "ValidationError", "text"),
        (b'{"message_id":5,"sender_id":"u1","text":"hi"}', b"u1", "ValidationError", "message_id"),
        (b'{"message_id":"m","sender_id":"u1","text":["x"]}', b"u1", "ValidationError", "text"),
        (b'{"type":"bogus","message_id":"m","sender_id":"u1"}', b"u1", "ValidationError", "tag"),
        (b'{"message_id":"m","sender_id":"u1","text":"hi"}', b"u2", "BadRecord", "sender_id"),
        (None, b"u1", "BadRecord", "no value"),
    ],
)
async def test_bad_record_goes_to_dlq_and_partition_continues(
    bootstrap: str, value: bytes | None, key: bytes | None, error_type: str, mentions: str
) -> None:
    settings = make_settings(bootstrap, partitions=1)
    async with running_worker(settings, make_router()):
        await produce(
            bootstrap,
            settings.topics.input,
            [
                Outgoing(value, key, partition=0),
                Outgoing(user_message("u1", "after", "transfer_money").value, b"u1", partition=0),
            ],
        )
        async with TopicReader(bootstrap, settings.topics.dlq, settings.topics.calm) as reader:
            await reader.wait_for(2)
    [dead] = reader.by_topic(settings.topics.dlq)
    [after] = reader.by_topic(settings.topics.calm)
    assert (dead.key, dead.value) == (key, value)
    letter = DeadLetter.from_headers(dead.headers)
    assert letter.error_type == error_type
    assert mentions in letter.error_message
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        settings.topics.input,
        0,
        0,
    )
    assert routed(after)["message"]["text"] == "after"


async def test_restarted_worker_keeps_sticky_sessions(bootstrap: str) -> None:
    settings = make_settings(bootstrap)
    async with running_worker(settings, make_router()):
        await produce(
            bootstrap,
            settings.topics.input,
            [
                user_message("gina", "move money", "transfer_money"),  # CALM sticky
                user_message("hal", "talk to a human", "handoff"),  # NLU sticky
            ],
        )
        async with TopicReader(bootstrap, settings.topics.calm, settings.topics.nlu) as reader:
            await reader.wait_for(2)
    # A fresh worker process-state: sessions come only from the changelog.
    async with running_worker(settings, make_router()):
        await produce(
            bootstrap,
            settings.topics.input,
            [
                user_message("gina", "handoff please", "handoff"),
                user_message("hal", "send money", "transfer_money"),
            ],
        )
        async with TopicReader(bootstrap, settings.topics.calm, settings.topics.nlu) as reader:
            records = await reader.wait_for(4)
    later = [routed(r) for r in records if routed(r)["routing"]["reason"] == "sticky_session"]
    assert {(r["message"]["sender_id"], r["routing"]["route"]) for r in later} == {
        ("gina", "calm"),
        ("hal", "nlu"),
    }


class RasaNluStub:
    """A Rasa NLU HTTP server on loopback: `POST /model/parse` answering scripted intents."""

    def __init__(
        self,
        intents: dict[str, str | None],
        fail_first: int = 0,
        held_until: asyncio.Event | None = None,
        hold: int | None = None,
    ) -> None:
        self.intents = intents
        self.calls: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.held_until = held_until  # answers wait for it ...
        self.hold = hold  # ... the first `hold` of them (None: all)
        self.called = asyncio.Event()  # set at each call
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def parse(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append({"body": body, "token": request.query.get("token")})
        self.called.set()
        held = self.hold is None or len(self.calls) <= self.hold
        if self.held_until is not None and held:
            await self.held_until.wait()
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.json_response({"error": "busy"}, status=503)
        name = self.intents.get(body["text"])
        intent = {"name": name, "confidence": 0.9} if name else None
        return web.json_response({"text": body["text"], "intent": intent, "entities": []})

    async def __aenter__(self) -> RasaNluStub:
        app = web.Application()
        app.router.add_post("/model/parse", self.parse)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_intent_from_nlu_server_when_parse_data_is_missing(bootstrap: str) -> None:
    settings = make_settings(bootstrap)
    async with RasaNluStub({"send money": "transfer_money"}, fail_first=1) as nlu:
        router = CoexistenceRouter(ASSISTANT, nlu=NluServer(nlu.url, token="t0k", retries=2))
        async with running_worker(settings, router):
            await produce(
                bootstrap,
                settings.topics.input,
                [
                    user_message("ivy", "send money"),  # no parse_data: asks the NLU server
                    user_message("jon", "hi", "handoff"),  # parse_data given: no NLU call
                ],
            )
            async with TopicReader(bootstrap, settings.topics.calm, settings.topics.nlu) as reader:
                records = await reader.wait_for(2)
        await router.close()
    results = {routed(r)["message"]["sender_id"]: routed(r)["routing"] for r in records}
    assert results["ivy"]["route"] == "calm"
    assert results["ivy"]["intent"] == "transfer_money"
    assert results["jon"]["reason"] == "listed_intent"
    assert [c["body"]["text"] for c in nlu.calls] == ["send money", "send money"]  # one retry
    assert all(c["token"] == "t0k" for c in nlu.calls)


async def test_a_message_decidable_at_once_waits_behind_its_senders_nlu_call(
    bootstrap: str,
) -> None:
    settings = make_settings(bootstrap, partitions=1)
    answer = asyncio.Event()
    async with RasaNluStub({"send money": "transfer_money"}, held_until=answer) as nlu:
        router = CoexistenceRouter(ASSISTANT, nlu=NluServer(nlu.url, timeout=30))
        async with (
            running_worker(settings, router),
            TopicReader(bootstrap, settings.topics.calm, settings.topics.nlu) as reader,
        ):
            await produce(
                bootstrap,
                settings.topics.input,
                [
                    user_message("ivy", "send money"),  # waits for the NLU server
                    user_message("ivy", "hi", "handoff"),  # could be decided at once: must wait
                    user_message("jon", "hi", "handoff"),  # another sender: does not wait
                ],
            )

            def sender_ids(records: list[Any]) -> list[str]:
                return [routed(r)["message"]["sender_id"] for r in records]

            await reader.wait_until(lambda records: "jon" in sender_ids(records), "jon routed")
            assert "ivy" not in sender_ids(reader.records)
            answer.set()
            records = await reader.wait_for(3)
        await router.close()
    ivy = [routed(r) for r in records if routed(r)["message"]["sender_id"] == "ivy"]
    assert [(m["message"]["text"], m["routing"]["route"], m["routing"]["reason"]) for m in ivy] == [
        ("send money", "calm", "listed_intent"),
        ("hi", "calm", "sticky_session"),  # decided after the first opened a CALM session
    ]


async def test_unreachable_nlu_server_routes_nlu_sticky_with_reason(bootstrap: str) -> None:
    settings = make_settings(bootstrap)
    async with RasaNluStub({}) as nlu:
        dead_url = nlu.url
    router = CoexistenceRouter(ASSISTANT, nlu=NluServer(dead_url, retries=1, timeout=1))
    async with running_worker(settings, router):
        await produce(bootstrap, settings.topics.input, [user_message("kim", "send money")])
        async with TopicReader(bootstrap, settings.topics.nlu) as reader:
            [record] = await reader.wait_for(1)
    await router.close()
    assert routed(record)["routing"]["reason"] == "nlu_failure"
    assert routed(record)["routing"]["sticky"] is True


async def test_partition_count_mismatch_refuses_to_start(bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = Topics(
        input=f"in-{tag}", calm=f"c-{tag}", nlu=f"n-{tag}", sessions=f"s-{tag}", dlq=f"d-{tag}"
    )
    connection = {"bootstrap_servers": bootstrap}
    admin = AIOKafkaAdminClient(**connection)
    await admin.start()
    await admin.create_topics([NewTopic(topics.input, 4, 1), NewTopic(topics.sessions, 2, 1)])
    await admin.close()
    with pytest.raises(TopicLayoutError, match=r"has 2 partitions but input topic .* has 4"):
        await ensure_topics(connection, topics, create=True, partitions=4, replication_factor=1)
    settings = make_settings(bootstrap, topics=topics)
    with pytest.raises(TopicLayoutError):
        await asyncio.wait_for(RoutingWorker(settings, make_router()).run(asyncio.Event()), 30)


async def test_missing_topics_are_created_with_a_compacted_changelog(bootstrap: str) -> None:
    settings = make_settings(bootstrap, partitions=4)
    layout = await ensure_topics(
        settings.connection, settings.topics, create=True, partitions=4, replication_factor=1
    )
    assert layout.partitions == 4
    admin = AIOKafkaAdminClient(**settings.connection)
    await admin.start()
    try:
        names = list(settings.topics.model_dump().values())
        described = await admin.describe_topics(names)
        assert {t["topic"]: len(t["partitions"]) for t in described} == dict.fromkeys(names, 4)
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.topics.sessions)]
        )
        [(_, _, _, _, entries)] = response.resources
        configs = [(e[0], e[1]) for e in entries]
        assert ("cleanup.policy", "compact") in configs
        # An opener (and the decision it carries) outlives its redeliveries.
        assert ("min.compaction.lag.ms", str(MIN_COMPACTION_LAG_MS)) in configs
    finally:
        await admin.close()


async def test_sessions_follow_the_connectors_partitioner(bootstrap: str) -> None:
    """librdkafka hashes keys with CRC32, not murmur2: sessions must live where messages land."""
    settings = make_settings(bootstrap, partitions=4)
    senders = [f"crc-{i}" for i in range(8)]

    def crc32_partitioned(sender: str, text: str, intent: str) -> Outgoing:
        record = user_message(sender, text, intent)
        record.partition = zlib.crc32(sender.encode()) % 4
        return record

    async with running_worker(settings, make_router()):
        await produce(
            bootstrap,
            settings.topics.input,
            [crc32_partitioned(s, "send money", "transfer_money") for s in senders],
        )
        async with TopicReader(bootstrap, settings.topics.calm) as reader:
            await reader.wait_for(len(senders))
    async with running_worker(settings, make_router()):
        await produce(
            bootstrap,
            settings.topics.input,
            [crc32_partitioned(s, "a human please", "handoff") for s in senders],
        )
        async with TopicReader(bootstrap, settings.topics.calm) as reader:
            records = await reader.wait_for(2 * len(senders))
    later = [routed(r) for r in records if routed(r)["message"]["text"] == "a human please"]
    assert sorted(r["message"]["sender_id"] for r in later) == sorted(senders)
    assert {r["routing"]["reason"] for r in later} == {"sticky_session"}


def oversized(sender: str, size: int, intent: str | None) -> Outgoing:
    """A user message of exactly `size` bytes: as large as Kafka takes at its default limits,
    too large to go out again with a routing block, or as a dead letter with its headers."""
    body: dict[str, Any] = {"message_id": uuid.uuid4().hex, "sender_id": sender, "text": ""}
    if intent is not None:
        body["parse_data"] = {"intent": {"name": intent, "confidence": 0.9}, "entities": []}
    body["text"] = "x" * (size - len(orjson.dumps(body)))
    value = orjson.dumps(body)
    assert len(value) == size
    return Outgoing(value, sender.encode(), partition=0)


async def test_an_input_too_large_to_route_whole_is_dead_lettered_cut_to_fit(
    bootstrap: str,
) -> None:
    settings = make_settings(bootstrap, partitions=1)
    size = 1_048_400
    # One decided in the fetch loop (parse_data), one in a lane (the NLU server is asked).
    large = [oversized("big", size, "transfer_money"), oversized("huge", size, None)]
    events = RecordedEvents()
    async with RasaNluStub({}) as nlu:
        router = CoexistenceRouter(ASSISTANT, nlu=NluServer(nlu.url, retries=0))
        async with running_worker(settings, router, events):
            await produce(
                bootstrap,
                settings.topics.input,
                [
                    *large,
                    Outgoing(user_message("big", "after", "handoff").value, b"big", partition=0),
                    Outgoing(user_message("huge", "after", "handoff").value, b"huge", partition=0),
                ],
            )
            async with TopicReader(bootstrap, settings.topics.dlq, settings.topics.nlu) as reader:
                await reader.wait_for(4)
            # Nothing stops at the large ones: every offset is decided and committed.
            await events.committed_to({0: 4})
        await router.close()
    dead = sorted(
        reader.by_topic(settings.topics.dlq),
        key=lambda d: DeadLetter.from_headers(d.headers).source_offset,
    )
    assert [d.key for d in dead] == [b"big", b"huge"]
    for offset, (record, sent) in enumerate(zip(dead, large, strict=True)):
        letter = DeadLetter.from_headers(record.headers)
        assert (letter.error_type, letter.source_partition, letter.source_offset) == (
            "RecordTooLarge",
            0,
            offset,
        )
        assert dict(record.headers)[TRUNCATED_HEADER] == str(size).encode()
        assert record.value is not None and 0 < len(record.value) < size
        assert sent.value is not None and sent.value.startswith(record.value)
        assert estimate_size(record.key, record.value, list(record.headers)) <= MAX_REQUEST_SIZE
    after = [routed(r) for r in reader.by_topic(settings.topics.nlu)]
    # The large messages changed no session: the next ones are routed by the rules.
    assert sorted((a["message"]["sender_id"], a["routing"]["reason"]) for a in after) == [
        ("big", "listed_intent"),
        ("huge", "listed_intent"),
    ]
    assert [e.args[1] for e in events.named("dead_lettered")] == [0, 1]


async def test_a_partition_at_its_bound_is_paused_alone_and_the_others_flow(bootstrap: str) -> None:
    """Partition 0's messages all wait for the NLU server (held): at max_in_flight (2) only that
    partition is paused; partition 1's messages, decided at once, keep being fetched and routed
    (the poll never stops)."""
    settings = make_settings(bootstrap, partitions=2, max_in_flight=2)
    answer = asyncio.Event()
    async with RasaNluStub({}, held_until=answer) as nlu:
        router = CoexistenceRouter(ASSISTANT, nlu=NluServer(nlu.url, timeout=60))
        waiting = [user_message(f"slow{i}", "hello") for i in range(6)]
        for record in waiting:
            record.partition = 0
        async with (
            running_worker(settings, router),
            TopicReader(bootstrap, settings.topics.calm, settings.topics.nlu) as inbox,
        ):
            await produce(bootstrap, settings.topics.input, waiting)
            async with asyncio.timeout(30):
                while len(nlu.calls) < 2:  # the bound: two calls in flight, then p0 waits
                    nlu.called.clear()
                    await nlu.called.wait()
            flowing = [user_message(f"fast{i}", "send money", "transfer_money") for i in range(5)]
            for record in flowing:
                record.partition = 1
            await produce(bootstrap, settings.topics.input, flowing)
            records = await inbox.wait_for(len(flowing))
            assert {routed(r)["message"]["sender_id"] for r in records} == {
                f"fast{i}" for i in range(5)
            }
            assert len(nlu.calls) == 2  # never more router calls in flight than the bound
            answer.set()
            await inbox.wait_for(len(flowing) + len(waiting))
        await router.close()
    assert len(nlu.calls) == len(waiting)


async def test_a_changelog_that_deletes_refuses_to_start(bootstrap: str) -> None:
    settings = make_settings(bootstrap, partitions=2)
    admin = AIOKafkaAdminClient(**settings.connection)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(settings.topics.input, 2, 1),
                NewTopic(
                    settings.topics.sessions, 2, 1, topic_configs={"cleanup.policy": "delete"}
                ),
            ]
        )
    finally:
        await admin.close()
    with pytest.raises(TopicLayoutError, match=r"cleanup.policy=delete: it must be compact"):
        await asyncio.wait_for(RoutingWorker(settings, make_router()).run(asyncio.Event()), 30)
