"""Every IntentBasedRouter rule of SPEC §4, end to end through the real broker."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.kafka_support import (
    Outgoing,
    TopicReader,
    produce,
    routed,
    running_worker,
    session_reset,
    unique_topics,
    user_message,
)
from worker.config.endpoints import KafkaSettings
from worker.rasa.releases import DEFAULT_BEHAVIOUR
from worker.routing.flows import Flow, Flows, NluTrigger
from worker.routing.router_config import IntentBasedRouterConfig
from worker.routing.rules import Assistant
from worker.runtime.coexistence_router import CoexistenceRouter
from worker.runtime.settings import RuntimeSettings

CONFIG = IntentBasedRouterConfig.model_validate(
    {
        "nlu_entry": {"sticky": ["handoff", "check_balance"], "non_sticky": ["chitchat"]},
        "calm_entry": {"sticky": ["transfer_money", "check_balance"]},
    }
)
FLOWS = Flows(
    [
        Flow("block_card", (NluTrigger("block_card", "block_card"),)),
        Flow("add_payee", (NluTrigger("add_payee", "add_payee", confidence_threshold=0.99),)),
    ],
    DEFAULT_BEHAVIOUR.patterns,
)
ASSISTANT = Assistant(CONFIG, FLOWS)


def make_settings(bootstrap: str, **overrides: Any) -> RuntimeSettings:
    kafka = KafkaSettings(
        url=[bootstrap],
        topics=unique_topics(),
        group_id=f"group-{uuid.uuid4().hex[:8]}",
        partitions=3,
        commit_interval_ms=100,
        session_timeout=1.0,
    )
    return RuntimeSettings.from_kafka(kafka, **overrides)


def make_router() -> CoexistenceRouter:
    return CoexistenceRouter(ASSISTANT)


async def route_all(
    bootstrap: str, outgoing: list[Outgoing], expected: int
) -> list[dict[str, Any]]:
    """Publish, run a worker, and return the inbox records in arrival order with their topic."""
    settings = make_settings(bootstrap)
    async with running_worker(settings, make_router()):
        await produce(bootstrap, settings.topics.input, outgoing)
        async with TopicReader(bootstrap, settings.topics.calm, settings.topics.nlu) as reader:
            records = await reader.wait_for(expected)
    results = [routed(r) | {"topic": r.topic.rsplit("-", 1)[0]} for r in records]
    # Inboxes are separate topics: their records interleave arbitrarily on reading.
    return sorted(results, key=lambda r: r["routing"]["decided_at"])


@pytest.mark.parametrize(
    ("intent", "route", "sticky", "reason"),
    [
        (None, "nlu", True, "no_intent"),
        ("handoff", "nlu", True, "listed_intent"),
        ("check_balance", "nlu", True, "listed_intent"),  # nlu sticky wins over calm sticky
        ("chitchat", "nlu", False, "listed_intent"),
        ("transfer_money", "calm", True, "listed_intent"),
        ("block_card", "calm", True, "nlu_trigger"),
        ("add_payee", "nlu", True, "unlisted_intent"),  # trigger threshold 0.99 > 0.95
        ("weather", "nlu", True, "unlisted_intent"),
    ],
)
async def test_first_message_follows_the_rule(
    bootstrap: str, intent: str | None, route: str, sticky: bool, reason: str
) -> None:
    [result] = await route_all(bootstrap, [user_message("alice", "hello there", intent)], 1)
    assert result["topic"] == f"{route}-inbox"
    routing = result["routing"]
    assert (routing["route"], routing["sticky"], routing["reason"]) == (route, sticky, reason)
    assert routing["router"] == "IntentBasedRouter"
    assert routing["intent"] == intent


async def test_sticky_session_holds_and_non_sticky_reroutes(bootstrap: str) -> None:
    results = await route_all(
        bootstrap,
        [
            user_message("bob", "hi", "chitchat"),  # NLU, router stays engaged
            user_message("bob", "send money", "transfer_money"),  # CALM sticky
            user_message("bob", "tell me a joke", "chitchat"),  # held by CALM
            user_message("bob", "/handoff"),  # held by CALM: payloads do not bypass a session
        ],
        4,
    )
    assert [(r["topic"], r["routing"]["reason"], r["routing"]["sticky"]) for r in results] == [
        ("nlu-inbox", "listed_intent", False),
        ("calm-inbox", "listed_intent", True),
        ("calm-inbox", "sticky_session", True),
        ("calm-inbox", "sticky_session", True),
    ]


async def test_intent_payloads_follow_flow_triggers(bootstrap: str) -> None:
    results = await route_all(
        bootstrap,
        [
            user_message("carol", "/block_card"),
            user_message("dave", '/transfer_money{"amount": "10"}'),
        ],
        2,
    )
    by_sender = {r["message"]["sender_id"]: r for r in results}
    assert by_sender["carol"]["topic"] == "calm-inbox"
    assert by_sender["carol"]["routing"]["reason"] == "intent_payload"
    # transfer_money is calm_entry-listed but has no flow trigger: payloads only use triggers.
    assert by_sender["dave"]["topic"] == "nlu-inbox"
    assert by_sender["dave"]["routing"]["reason"] == "intent_payload"
    assert by_sender["dave"]["routing"]["sticky"] is True


async def test_session_reset_and_restart_end_the_session(bootstrap: str) -> None:
    results = await route_all(
        bootstrap,
        [
            user_message("erin", "move money", "transfer_money"),  # CALM sticky
            session_reset("erin"),
            user_message("erin", "what's up", "handoff"),  # routed afresh: NLU sticky
            user_message("erin", "/restart"),  # routed by the NLU session, which then ends
            user_message("erin", "move money", "transfer_money"),  # routed afresh: CALM
        ],
        4,
    )
    assert [(r["topic"], r["routing"]["reason"]) for r in results] == [
        ("calm-inbox", "listed_intent"),
        ("nlu-inbox", "listed_intent"),
        ("nlu-inbox", "restart"),
        ("calm-inbox", "listed_intent"),
    ]
    assert results[2]["routing"]["sticky"] is False


async def test_output_embeds_the_input_message_unchanged(bootstrap: str) -> None:
    raw = (
        b'{"sender_id":"frank","message_id":"m-1","text":"send money","input_channel":"rest",'
        b'"timestamp":1763800000.25,"metadata":{"x":[1,2]},"custom":"kept",'
        b'"parse_data":{"intent":{"name":"transfer_money","confidence":0.93},"entities":[]}}'
    )
    settings = make_settings(bootstrap)
    async with running_worker(settings, make_router()):
        await produce(bootstrap, settings.topics.input, [Outgoing(raw, b"frank")])
        async with TopicReader(bootstrap, settings.topics.calm) as reader:
            [record] = await reader.wait_for(1)
    assert record.key == b"frank"
    assert record.value is not None
    assert record.value.startswith(b'{"message":' + raw + b',"routing":')


async def test_new_group_starts_at_earliest_offset(bootstrap: str) -> None:
    settings = make_settings(bootstrap)
    early = [user_message(f"s{i}", "hi", "transfer_money") for i in range(5)]
    # The topic exists only because the worker creates it; publish by creating it first.
    from worker.kafka.topics import ensure_topics

    await ensure_topics(
        settings.connection, settings.topics, create=True, partitions=3, replication_factor=1
    )
    await produce(bootstrap, settings.topics.input, early)
    async with (
        running_worker(settings, make_router()),
        TopicReader(bootstrap, settings.topics.calm) as reader,
    ):
        records = await reader.wait_for(5)
    assert sorted(routed(r)["message"]["sender_id"] for r in records) == [f"s{i}" for i in range(5)]
