"""The runtime under an LLMBasedRouter whose calls are slow: concurrency, order, backpressure,
redelivery without a second call, and a drain on SIGTERM. Real worker processes, real broker,
the fake LLM at 200 ms a call behind a meter that sees which calls overlap."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.kafka_support import Outgoing, TopicReader, produce, session_reset, user_message
from tests.worker_processes import (
    LLM_MODEL,
    LlmMeter,
    Outputs,
    WorkerProcess,
    value,
    wait_for_balanced_group,
    write_bundle,
)
from worker.fake_llm import FakeLLMServer

LATENCY = 0.2


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


def message(sender: str, text: str) -> Outgoing:
    """The sender's name leads the text: the meter attributes calls by it."""
    return user_message(sender, f"{sender} {text}", message_id=uuid.uuid4().hex)


def sent(outgoing: Outgoing) -> dict[str, str]:
    assert outgoing.value is not None
    body: dict[str, str] = orjson.loads(outgoing.value)
    return body


async def test_senders_are_decided_concurrently_one_sender_in_order_within_the_bound(
    bootstrap: str, llm: FakeLLMServer, tmp_path: Path
) -> None:
    # Every answer is B: NLU for this turn only, so each message of a sender needs the router
    # again, and its calls can only be made one after the other.
    llm.script(LLM_MODEL, latency=LATENCY, answer="B")
    bound = 4
    async with LlmMeter(llm.url) as meter:
        bundle = write_bundle(
            tmp_path, bootstrap, router="llm", llm_url=meter.url, max_in_flight=bound
        )
        worker = await WorkerProcess.start(bundle)
        try:
            await wait_for_balanced_group([worker], 6)
            chatty = [message("seq", f"turn {i}") for i in range(6)]
            others = [message(f"other{i}", "hello") for i in range(16)]
            # Interleaved, as a connector would publish them.
            outgoing = [r for pair in zip(others, chatty, strict=False) for r in pair]
            outgoing += others[len(chatty) :]
            await produce(bootstrap, bundle.topics.input, outgoing)
            async with TopicReader(bootstrap, bundle.topics.nlu) as inbox:
                records = await inbox.wait_for(len(outgoing))
            assert await worker.stop() == 0
        finally:
            worker.signal(signal.SIGKILL)
    assert len(meter.calls) == len(outgoing)  # every turn needed the router
    assert meter.total_peak > 1, "different senders must be decided concurrently"
    assert meter.total_peak <= bound, "never more LLM calls in flight than max_in_flight"
    assert llm.max_in_flight[LLM_MODEL] <= bound
    assert meter.peak["seq"] == 1, "one sender's calls must be strictly sequential"
    texts = [sent(r)["text"] for r in chatty]
    assert [t for t in meter.calls if t.startswith("seq ")] == texts
    published = [value(r)["message"]["text"] for r in records]
    assert [t for t in published if t.startswith("seq ")] == texts
    assert {value(r)["routing"]["reason"] for r in records} == {"llm_answer"}


async def test_redelivered_decisions_are_replayed_without_a_second_llm_call(
    bootstrap: str, llm: FakeLLMServer, tmp_path: Path
) -> None:
    llm.script(LLM_MODEL, latency=LATENCY, answer="A")  # CALM sticky: the session opens
    # No commit by time or count: everything w1 decided is redelivered after its crash.
    bundle = write_bundle(
        tmp_path, bootstrap, router="llm", llm_url=llm.url, commit_interval_ms=600_000
    )
    senders = [f"r{i}" for i in range(6)]
    first = [message(s, "send money") for s in senders]
    second = [message(s, "and more") for s in senders]
    # One sender changes sessions within the uncommitted window: CALM, reset, NLU.
    changing = [message("multi", "send money"), message("multi", "my card"), message("multi", "ok")]
    w1 = await WorkerProcess.start(bundle, "w1")
    workers = [w1]
    try:
        await wait_for_balanced_group([w1], 6)
        async with (
            TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox,
            TopicReader(bootstrap, bundle.topics.sessions) as changelog,
        ):
            await produce(bootstrap, bundle.topics.input, first + second)
            await inbox.wait_for(len(first) + len(second))
            # One sender alone now, so the answers come in the order of its calls.
            llm.script(LLM_MODEL, latency=LATENCY, answers=["A", "C"])
            await produce(
                bootstrap, bundle.topics.input, [changing[0], session_reset("multi"), *changing[1:]]
            )
            total = len(first) + len(second) + len(changing)
            await inbox.wait_for(total)
            # The decisions reached the changelog (an opening per sender, multi's reset and
            # second opening) ...
            await changelog.wait_for(len(senders) + 3)
            assert llm.count(LLM_MODEL) == len(senders) + 2
            # ... but no offset was committed: w1 dies right here.
            await w1.kill()
            w2 = await WorkerProcess.start(bundle, "w2")
            workers.append(w2)
            await inbox.wait_for(2 * total)
        assert await w2.stop() == 0
    finally:
        for worker in workers:
            worker.signal(signal.SIGKILL)
    assert llm.count(LLM_MODEL) == len(senders) + 2, "a redelivered decision must not ask again"
    by_id: dict[str, list[bytes]] = {}
    for record in inbox.records:
        assert record.value is not None
        by_id.setdefault(value(record)["message"]["message_id"], []).append(record.value)
    assert len(by_id) == total
    opened = {sent(r)["message_id"] for r in [*first, *changing[:2]]}
    for mid, copies in by_id.items():
        assert len(copies) == 2, mid
        if mid in opened:
            # The opening decision (LLM answer, attempts, latency, decided_at): byte for byte.
            assert copies[0] == copies[1]
        else:
            routings = [orjson.loads(c)["routing"] for c in copies]
            assert all(r["reason"] == "sticky_session" for r in routings)
            assert len({r["route"] for r in routings}) == 1
    multi = [orjson.loads(by_id[sent(r)["message_id"]][0])["routing"] for r in changing]
    assert [(r["route"], r["reason"]) for r in multi] == [
        ("calm", "llm_answer"),
        ("nlu", "llm_answer"),
        ("nlu", "sticky_session"),
    ]


async def test_sigterm_drains_in_flight_calls_and_commits_them(
    bootstrap: str, llm: FakeLLMServer, tmp_path: Path
) -> None:
    llm.script(LLM_MODEL, latency=LATENCY, answer="A")
    bundle = write_bundle(tmp_path, bootstrap, router="llm", llm_url=llm.url)
    first = [message(f"d{i}", "send money") for i in range(20)]
    w1 = await WorkerProcess.start(bundle, "w1")
    workers = [w1]
    try:
        await wait_for_balanced_group([w1], 6)
        await produce(bootstrap, bundle.topics.input, first)
        await llm.wait_for_requests(len(first), LLM_MODEL, timeout=30)
        # No await between the check and the signal: the fake (this event loop) cannot answer
        # in between, so these calls are in flight when the worker gets SIGTERM.
        assert llm.in_flight[LLM_MODEL] > 0
        w1.signal(signal.SIGTERM)
        assert await w1.wait() == 0
        assert "draining in-flight messages" in w1.output
        async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox:
            drained = Outputs(await inbox.read_to_end())
        # Everything fetched was decided and published before the exit.
        assert drained.ids() == {sent(r)["message_id"] for r in first}
        assert not drained.duplicated()

        # A successor of the same group starts after the committed offsets: nothing again.
        w2 = await WorkerProcess.start(bundle, "w2")
        workers.append(w2)
        await wait_for_balanced_group([w2], 6)
        markers = [
            Outgoing(message(f"m{p}", "marker").value, f"m{p}".encode(), partition=p)
            for p in range(6)
        ]
        await produce(bootstrap, bundle.topics.input, markers)
        async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox:
            await inbox.wait_for(len(first) + len(markers))
        # Its drain flushes anything it might have re-emitted before the markers.
        assert await w2.stop() == 0
        async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox:
            everything = Outputs(await inbox.read_to_end())
    finally:
        for worker in workers:
            worker.signal(signal.SIGKILL)
    assert len(everything.records) == len(first) + len(markers)
    assert not everything.duplicated()
    assert llm.count(LLM_MODEL) == len(first) + len(markers)


async def test_shutdown_is_bounded_and_abandoned_work_is_redelivered(
    bootstrap: str, llm: FakeLLMServer, tmp_path: Path
) -> None:
    llm.script(LLM_MODEL, hang=True)  # the LLM never answers
    bundle = write_bundle(tmp_path, bootstrap, router="llm", llm_url=llm.url, shutdown_timeout=1)
    stuck = message("stuck", "send money")
    w1 = await WorkerProcess.start(bundle, "w1")
    workers = [w1]
    try:
        await wait_for_balanced_group([w1], 6)
        await produce(bootstrap, bundle.topics.input, [stuck])
        await llm.wait_for_requests(1, LLM_MODEL, timeout=30)
        w1.signal(signal.SIGTERM)
        # shutdown_timeout for the drain, at most as long again to leave: not the LLM timeout.
        assert await w1.wait(timeout=10) == 0
        assert "abandoning 1 undecided messages" in w1.output
        # Not decided, so not committed: the next member of the group routes it.
        llm.script(LLM_MODEL, answer="A")
        w2 = await WorkerProcess.start(bundle, "w2")
        workers.append(w2)
        async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox:
            [record] = await inbox.wait_for(1)
        assert await w2.stop() == 0
    finally:
        for worker in workers:
            worker.signal(signal.SIGKILL)
    assert value(record)["message"]["message_id"] == sent(stuck)["message_id"]
    assert value(record)["routing"]["route"] == "calm"
