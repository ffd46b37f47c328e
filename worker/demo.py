"""`coexistence-router demo`: the whole pipeline on an embedded broker, with sample traffic.

Starts the Tansu broker and the fake LLM server on free loopback ports, runs the worker on the
bundled example configuration, publishes a scripted conversation of several senders, and prints
every decision as it comes out of `calm-inbox` / `nlu-inbox`. Each worker serves its metrics,
health and readiness on 127.0.0.1 (a free port unless `--http-port` names one); the demo says
where, and reads its counters back from `/metrics` at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import uuid
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from worker.config.app_config import load_app_config
from worker.config.endpoints import Topics
from worker.config.examples import ExampleRouter, bundled_example
from worker.fake_llm import FakeLLMServer
from worker.kafka.broker import EmbeddedBroker
from worker.kafka.topics import ensure_topics
from worker.ops.server import HttpSettings
from worker.rasa.releases import DEFAULT_RASA, RasaVersion
from worker.service import RouterService, runtime_settings

DEMO_LLM_KEY = "demo-not-a-secret"


@dataclass(frozen=True)
class Turn:
    sender: str
    text: str
    intent: str | None = None
    confidence: float = 0.95
    reset: bool = False


INTENT_CONVERSATION = [
    Turn("anna", "hi there", "greet"),  # NLU for this turn only
    Turn("anna", "I want to send money to Bob", "transfer_money"),  # CALM, sticky
    Turn("anna", "tell me a joke", "chitchat"),  # held by CALM
    Turn("ben", "I lost my card", "report_lost_card"),  # NLU, sticky
    Turn("ben", "how much money do I have?", "how_much_money", 0.72),  # held by NLU
    Turn("cara", "how much money is left?", "how_much_money", 0.72),  # a flow's NLU trigger
    Turn("dan", "what's the weather like", "ask_weather", 0.55),  # unlisted: NLU sticky
    Turn("eve", "/add_payee"),  # intent payload with an NLU trigger: CALM
    Turn("gus", '/inform{"amount": 20}'),  # fills `amount`, which transfer_money collects: CALM
    Turn("ida", "/help", "chitchat"),  # no intent `help`: the text `help` goes to the router
    Turn("jon", "/SetSlots(payee_name=Bob)"),  # a command payload: NLU, routing left unset
    Turn("fay", "hmm", None),  # no intent: NLU sticky
    Turn("ben", "", reset=True),  # a downstream system ends ben's session
    Turn("ben", "send 20 euros to Anna", "transfer_money"),  # routed afresh: CALM
    Turn("anna", "/restart"),  # routed by anna's session, which then ends
    Turn("anna", "my card was stolen", "report_lost_card"),  # routed afresh: NLU
]

LLM_CONVERSATION = [
    Turn("gil", "hello!"),  # B: NLU for this turn only
    Turn("gil", "I need to send money to my sister"),  # A: CALM, sticky
    Turn("gil", "how are you today?"),  # held by CALM, no LLM call
    Turn("hana", "my card was stolen"),  # C: NLU, sticky
    Turn("hana", "transfer 50 euros please"),  # held by NLU
    Turn("ivan", "what is my balance?"),  # A
    Turn("jo", "qwertz ???"),  # the LLM answers something else: NLU sticky
    Turn("kai", "/help me with a transfer"),  # not a payload: the LLM reads it without the slash
]


def llm_answer(prompt: str) -> str:
    """The demo's stand-in for a real LLM: reads the user message out of Rasa's prompt."""
    said = prompt.split('The user said: """', 1)[-1].split('"""', 1)[0].lower()
    if any(word in said for word in ("money", "balance", "transfer", "payee")):
        return "A"
    if any(word in said for word in ("hello", "how are you", "hi ")):
        return "B"
    if any(word in said for word in ("card", "statement")):
        return "C"
    return "I am not sure"


def _payload(turn: Turn) -> dict[str, Any]:
    message_id = uuid.uuid4().hex
    if turn.reset:
        return {"type": "session_reset", "message_id": message_id, "sender_id": turn.sender}
    body: dict[str, Any] = {
        "message_id": message_id,
        "sender_id": turn.sender,
        "text": turn.text,
        "input_channel": "demo",
    }
    if turn.intent is not None or not turn.text.startswith("/"):
        intent = {"name": turn.intent, "confidence": turn.confidence} if turn.intent else None
        body["parse_data"] = {"intent": intent, "entities": []}
    return body


async def _publish(bootstrap: str, topic: str, turns: list[Turn]) -> list[str]:
    """Publish the conversation; returns the message ids of the user messages, in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    published: list[str] = []
    try:
        for turn in turns:
            payload = _payload(turn)
            await producer.send_and_wait(topic, orjson.dumps(payload), key=turn.sender.encode())
            if not turn.reset:
                published.append(payload["message_id"])
    finally:
        await producer.stop()
    return published


async def _collect(bootstrap: str, topics: Topics, published: list[str]) -> list[dict[str, Any]]:
    """Read both inboxes until every published message came out; returns them in input order."""
    order = {message_id: n for n, message_id in enumerate(published)}
    expected = len(published)
    consumer = AIOKafkaConsumer(
        topics.calm, topics.nlu, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    decisions: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(60):
            while len(decisions) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    decisions.extend(orjson.loads(r.value) for r in records if r.value)
    finally:
        await consumer.stop()
    return sorted(decisions, key=lambda d: order.get(d["message"]["message_id"], expected))


def _print_table(title: str, decisions: list[dict[str, Any]], out: TextIO) -> None:
    rows = [("sender", "text", "intent", "route", "sticky", "reason", "llm")]
    for d in decisions:
        routing, message = d["routing"], d["message"]
        llm = routing.get("llm") or {}
        rows.append(
            (
                message["sender_id"],
                message["text"][:34],
                routing.get("intent") or "-",
                routing["route"],
                "yes" if routing["sticky"] else "no",
                routing["reason"],
                f"{llm.get('deployment')}: {llm.get('answer')!r}" if llm else "-",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    print(f"\n{title}", file=out)
    for n, row in enumerate(rows):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)


async def _counted(url: str) -> str:
    """What the worker's /metrics says it did, in one line."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "coexistence_router_decisions_total":
                route = sample.labels["route"]
                totals[f"{route} decisions"] = totals.get(f"{route} decisions", 0) + sample.value
            elif sample.name == "coexistence_router_llm_requests_total":
                totals["LLM attempts"] = totals.get("LLM attempts", 0) + sample.value
    return ", ".join(f"{name} {value:g}" for name, value in sorted(totals.items()))


async def _run_one(
    router: ExampleRouter,
    bootstrap: str,
    environ: dict[str, str],
    turns: list[Turn],
    rasa: RasaVersion,
    http_port: int | None,
    out: TextIO,
) -> list[dict[str, Any]]:
    paths = bundled_example(router)
    app = load_app_config(
        paths.config, paths.endpoints, paths.flows, environ, domain=paths.domain, rasa=rasa
    )
    topics = Topics().renamed(lambda name: f"demo-{router}-{name}")
    settings = dataclasses.replace(
        runtime_settings(app),
        topics=topics,
        group_id=f"demo-{router}",
        partitions=3,
        session_timeout=2.0,  # a quick group join on the embedded broker
        commit_interval=0.2,
    )
    # Created before publishing, so the producer does not auto-create the input topic with
    # the broker's default partition count.
    await ensure_topics(
        settings.connection, topics, create=True, partitions=3, replication_factor=1
    )
    http = HttpSettings("127.0.0.1", http_port) if http_port is not None else None
    service = RouterService(app, environ, settings, http=http)
    task = asyncio.create_task(service.run())
    try:
        published = await _publish(bootstrap, topics.input, turns)
        decisions = await _collect(bootstrap, topics, published)
        if service.http is not None:
            url = f"{service.http.url}/metrics"
            print(f"\n{router} worker: metrics at {url} (also /healthz, /readyz)", file=out)
            print(f"  {await _counted(url)}", file=out)
        return decisions
    finally:
        service.stop.set()
        await task


async def run_demo(
    which: str = "both",
    out: TextIO = sys.stdout,
    rasa: RasaVersion = DEFAULT_RASA,
    http_port: int | None = 0,
) -> int:
    """`http_port`: where each worker serves its endpoints on 127.0.0.1 (0: a free port;
    None: nowhere)."""
    async with EmbeddedBroker() as broker, FakeLLMServer(responder=llm_answer) as llm:
        environ = dict(os.environ)
        environ.update(
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
            FAKE_LLM_BASE=f"{llm.url}/v1",
            FAKE_LLM_KEY=DEMO_LLM_KEY,
        )
        print(f"embedded broker on {broker.bootstrap_servers}, fake LLM on {llm.url}", file=out)
        print(f"routing as {rasa} does", file=out)
        if which in ("intent", "both"):
            decisions = await _run_one(
                "intent",
                broker.bootstrap_servers,
                environ,
                INTENT_CONVERSATION,
                rasa,
                http_port,
                out,
            )
            _print_table("IntentBasedRouter (worker/examples/intent/config.yml)", decisions, out)
        if which in ("llm", "both"):
            decisions = await _run_one(
                "llm", broker.bootstrap_servers, environ, LLM_CONVERSATION, rasa, http_port, out
            )
            _print_table("LLMBasedRouter (worker/examples/llm/config.yml)", decisions, out)
    return 0
