"""Several worker processes in one consumer group: a crash, a newcomer, moving partitions.

Every test runs real `coexistence-router run` processes (tests/worker_processes.py) against the
real broker, with the IntentBasedRouter: its decisions are deterministic, so any difference
between two outputs of one message comes from the runtime, not from the router.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from tests.integration.test_worker_edges import RasaNluStub
from tests.kafka_support import (
    Outgoing,
    TopicReader,
    produce,
    running_worker,
    session_reset,
    user_message,
)
from tests.runtime_events import RecordedEvents
from tests.worker_processes import (
    Outputs,
    WorkerProcess,
    in_input_order_with_redeliveries,
    wait_for_balanced_group,
    write_bundle,
)
from worker.config.app_config import load_app_config
from worker.service import build_router, runtime_settings

OPENS = {"calm": "transfer_money", "nlu": "handoff"}  # intents that open a session on a route
OTHER = {"calm": "handoff", "nlu": "transfer_money"}  # what a free sender would be routed by


@dataclass
class Traffic:
    """Per-sender input order and the route each sender's session is held by."""

    order: dict[str, list[str]] = field(default_factory=dict)
    route: dict[str, str] = field(default_factory=dict)
    opener: dict[str, str] = field(default_factory=dict)

    def message(self, sender: str, text: str, intent: str) -> Outgoing:
        mid = uuid.uuid4().hex
        self.order.setdefault(sender, []).append(mid)
        return user_message(sender, text, intent, message_id=mid)

    def open(self, sender: str, route: str) -> list[Outgoing]:
        """Chitchat (NLU, router stays engaged), then the message that opens the session."""
        records = [self.message(sender, "hi", "chitchat")]
        records.append(self.message(sender, f"open {route}", OPENS[route]))
        self.route[sender], self.opener[sender] = route, self.order[sender][-1]
        return records

    def stay(self, sender: str) -> Outgoing:
        """An intent that would route elsewhere: the session must hold it."""
        return self.message(sender, "contradict", OTHER[self.route[sender]])

    def ids(self) -> set[str]:
        return {mid for mids in self.order.values() for mid in mids}


def without_time(routing: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in routing.items() if k != "decided_at"}


async def stop_all(*workers: WorkerProcess) -> list[int]:
    for worker in workers:
        worker.signal(signal.SIGTERM)
    return list(await asyncio.gather(*(w.wait() for w in workers)))


async def test_crash_and_newcomer_keep_every_message_its_decision_and_order(
    bootstrap: str, tmp_path: Path
) -> None:
    # No commits by time during the test: the crashed worker's work is redelivered for sure.
    bundle = write_bundle(tmp_path, bootstrap, partitions=6, commit_interval_ms=600_000)
    senders = [f"user-{i:02d}" for i in range(24)]
    traffic = Traffic()
    workers = [await WorkerProcess.start(bundle, f"w{i}") for i in (1, 2, 3)]
    w1, w2, w3 = workers
    try:
        shares = await wait_for_balanced_group(workers, 6)
        async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox:
            first = [
                r for i, s in enumerate(senders) for r in traffic.open(s, ["calm", "nlu"][i % 2])
            ]
            first += [traffic.stay(s) for s in senders]
            await produce(bootstrap, bundle.topics.input, first)
            await inbox.wait_for(len(first))

            # Mid-stream: more traffic on its way while w2 dies and w4 joins.
            await produce(bootstrap, bundle.topics.input, [traffic.stay(s) for s in senders])
            await w2.kill()
            w4 = await WorkerProcess.start(bundle, "w4")
            workers.append(w4)
            later = await wait_for_balanced_group([w1, w3, w4], 6)
            await produce(bootstrap, bundle.topics.input, [traffic.stay(s) for s in senders])
            expected = traffic.ids()
            await inbox.wait_until(lambda r: Outputs(r).ids() >= expected, "every message routed")
        codes = await stop_all(w1, w3, w4)
    finally:
        for worker in workers:
            worker.signal(signal.SIGKILL)
    assert codes == [0, 0, 0]
    assert shares["w2"] and later["w4"]  # w2 had partitions to lose, w4 got some

    # Everything the group published, now that nobody publishes any more.
    async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox:
        outputs = Outputs(await inbox.read_to_end())
    assert outputs.ids() == traffic.ids()
    duplicated = outputs.duplicated()
    assert duplicated, "w2 decided messages it never committed: they must have been redelivered"
    for mid, copies in duplicated.items():
        assert len({c["topic"] for c in copies}) == 1, mid
        assert all(without_time(c["routing"]) == without_time(copies[0]["routing"]) for c in copies)
        if mid in traffic.opener.values():
            # A decision that reached the changelog comes back byte for byte.
            assert all(c["routing"] == copies[0]["routing"] for c in copies), copies
    for (topic, sender), sequence in outputs.sequences().items():
        assert in_input_order_with_redeliveries(sequence, traffic.order[sender]), (topic, sender)
    for sender, mids in traffic.order.items():
        route = traffic.route[sender]
        after_opener = mids[mids.index(traffic.opener[sender]) :]
        for mid in after_opener:
            for copy in outputs.by_id[mid]:
                assert copy["routing"]["route"] == route, (sender, copy)
                assert copy["topic"] == getattr(bundle.topics, route)
        for mid in after_opener[1:]:
            assert {c["routing"]["reason"] for c in outputs.by_id[mid]} == {"sticky_session"}


async def test_sessions_written_by_one_worker_are_honoured_by_another(
    bootstrap: str, tmp_path: Path
) -> None:
    bundle = write_bundle(tmp_path, bootstrap, partitions=6)
    senders = [f"sender-{i:02d}" for i in range(12)]
    traffic = Traffic()
    a = await WorkerProcess.start(bundle, "a")
    workers = [a]
    try:
        await wait_for_balanced_group([a], 6)
        async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox:
            opening = [
                r for i, s in enumerate(senders) for r in traffic.open(s, ["calm", "nlu"][i % 2])
            ]
            await produce(bootstrap, bundle.topics.input, opening)
            await inbox.wait_for(len(opening))

            # B joins: half of A's partitions move to it; then A leaves: all of them do.
            b = await WorkerProcess.start(bundle, "b")
            workers.append(b)
            await wait_for_balanced_group([a, b], 6)
            assert await a.stop() == 0
            await wait_for_balanced_group([b], 6)

            probes = [traffic.stay(s) for s in senders]
            await produce(bootstrap, bundle.topics.input, probes)
            expected = traffic.ids()
            records = await inbox.wait_until(
                lambda r: Outputs(r).ids() >= expected, "the probes routed"
            )
        assert await b.stop() == 0
    finally:
        for worker in workers:
            worker.signal(signal.SIGKILL)
    outputs = Outputs(records)
    for sender in senders:
        [probe] = outputs.by_id[traffic.order[sender][-1]]
        assert probe["routing"]["route"] == traffic.route[sender], sender
        assert probe["routing"]["reason"] == "sticky_session", sender
    # B read every session from the changelog exactly once: its own partitions, returned to
    # it by the eager rebalance when A left, were kept, not read again.
    restored = [int(n) for line in b.lines for n in _restored_counts(line)]
    assert sum(restored) == len(senders), b.output


def _restored_counts(line: str) -> list[str]:
    marker = "restored "
    if marker not in line or " sessions " not in line:
        return []
    return [line.split(marker, 1)[1].split(" ", 1)[0]]


async def test_a_worker_back_from_a_pause_does_not_reuse_stale_sessions(
    bootstrap: str, tmp_path: Path
) -> None:
    """A member thrown out of the group (here: stopped past its session timeout) must not keep
    the sessions it had: another member changed them meanwhile."""
    bundle = write_bundle(tmp_path, bootstrap, partitions=4)
    senders = [f"p-{i}" for i in range(8)]
    traffic = Traffic()
    a = await WorkerProcess.start(bundle, "a")
    b = await WorkerProcess.start(bundle, "b")
    try:
        await wait_for_balanced_group([a, b], 4)
        async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox:
            opening = [r for s in senders for r in traffic.open(s, "calm")]
            await produce(bootstrap, bundle.topics.input, opening)
            await inbox.wait_for(len(opening))

            a.signal(signal.SIGSTOP)
            await wait_for_balanced_group([b], 4)  # A's partitions moved to B
            # B ends every session and opens NLU ones instead.
            changes: list[Outgoing] = []
            for sender in senders:
                changes.append(session_reset(sender))
                changes.append(traffic.message(sender, "human please", "handoff"))
                traffic.route[sender], traffic.opener[sender] = "nlu", traffic.order[sender][-1]
            await produce(bootstrap, bundle.topics.input, changes)
            expected = traffic.ids()
            await inbox.wait_until(lambda r: Outputs(r).ids() >= expected, "the changes routed")

            a.signal(signal.SIGCONT)
            await wait_for_balanced_group([a, b], 4)
            await produce(bootstrap, bundle.topics.input, [traffic.stay(s) for s in senders])
            expected = traffic.ids()
            records = await inbox.wait_until(
                lambda r: Outputs(r).ids() >= expected, "the probes routed"
            )
        codes = await stop_all(a, b)
    finally:
        a.signal(signal.SIGCONT)
        for worker in (a, b):
            worker.signal(signal.SIGKILL)
    assert codes == [0, 0]
    outputs = Outputs(records)
    for sender in senders:
        [probe] = outputs.by_id[traffic.order[sender][-1]]
        assert (probe["routing"]["route"], probe["routing"]["reason"]) == (
            "nlu",
            "sticky_session",
        ), sender


async def test_a_partition_back_from_a_clean_revocation_keeps_its_replay(
    bootstrap: str, tmp_path: Path
) -> None:
    """W1 decides X@1 (chitchat: NLU, not sticky) and X@2 (opens CALM) while a slow NLU call of
    another sender holds the commit at 0, and is SIGKILLed. W2 restores the partition (X has a
    replay history), is revoked cleanly by a rebalance before it fetched anything, and gets the
    partition straight back: its kept state must still say how X@1 and X@2 were decided."""
    answer = asyncio.Event()
    async with RasaNluStub({"plain": "handoff"}, held_until=answer) as nlu:
        bundle = write_bundle(tmp_path, bootstrap, partitions=1, nlu_url=nlu.url)
        x = Traffic()
        slow = user_message("slow", "plain")  # no parse_data: waits for the NLU server
        greet = x.message("x", "hi", "chitchat")
        opener = x.message("x", "send money", "transfer_money")
        w1 = await WorkerProcess.start(bundle, "w1")
        try:
            await wait_for_balanced_group([w1], 1)
            async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox:
                await produce(bootstrap, bundle.topics.input, [slow, greet, opener])
                await inbox.wait_for(2)  # X's two messages; the slow one still waits
                async with TopicReader(bootstrap, bundle.topics.sessions) as changelog:
                    await changelog.wait_for(1)
            await w1.kill()
        finally:
            w1.signal(signal.SIGKILL)
        answer.set()

        app = load_app_config(bundle.config, bundle.endpoints, bundle.flows, bundle.env)
        # The broker holds a fetch until fetch_min_bytes are there or fetch_max_wait_ms passed:
        # W2's first fetch after its restore stays out for three seconds, long enough for the
        # rebalance below to revoke the partition before W2 took any of its messages.
        settings = dataclasses.replace(
            runtime_settings(app), fetch_max_wait_ms=3000, fetch_min_bytes=50_000_000
        )
        router = build_router(app, None)
        events = RecordedEvents()
        async with running_worker(settings, router, events):
            await events.wait_until(lambda: bool(events.named("restored")), "restored", 30)
            # A second member (of another topic) joins: an eager rebalance revokes everything.
            other = AIOKafkaConsumer(
                f"elsewhere-{uuid.uuid4().hex[:8]}",
                bootstrap_servers=bootstrap,
                group_id=bundle.group_id,
                session_timeout_ms=1000,
                heartbeat_interval_ms=300,
            )
            await other.start()
            try:
                async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox:
                    records = await inbox.wait_until(
                        lambda r: (
                            len(Outputs(r).by_id.get(greet_id(greet), [])) == 2
                            and len(Outputs(r).by_id.get(greet_id(opener), [])) == 2
                        ),
                        "X's messages routed again",
                    )
            finally:
                await other.stop()
        await router.close()
    restored = events.named("restored")
    assert [(e.args[0].kept, e.args[0].replaying) for e in restored[:2]] == [
        (False, 1),
        (True, 1),  # the partition came straight back: its whole state was kept
    ]
    outputs = Outputs(records)
    for copy in outputs.by_id[greet_id(greet)]:
        assert copy["topic"] == bundle.topics.nlu
        assert (copy["routing"]["reason"], copy["routing"]["sticky"]) == ("listed_intent", False)
    first, again = outputs.by_id[greet_id(opener)]
    assert first["topic"] == again["topic"] == bundle.topics.calm
    assert first["routing"] == again["routing"]  # the stored decision, byte for byte


def greet_id(outgoing: Outgoing) -> str:
    assert outgoing.value is not None
    message_id: str = orjson.loads(outgoing.value)["message_id"]
    return message_id


async def test_a_member_thrown_out_while_stopped_publishes_nothing_it_decided(
    bootstrap: str, tmp_path: Path
) -> None:
    """A waits for the NLU server on a message when it is stopped (SIGSTOP) past its session
    timeout; B takes the partition over and routes the message. When A comes back, the NLU
    server's answer to A arrives too: A must not publish it (B's partition now)."""
    answer = asyncio.Event()
    async with RasaNluStub({"zombie": "transfer_money"}, held_until=answer, hold=1) as nlu:
        bundle = write_bundle(tmp_path, bootstrap, partitions=2, nlu_url=nlu.url)
        a = await WorkerProcess.start(bundle, "a")
        b = await WorkerProcess.start(bundle, "b")
        try:
            shares = await wait_for_balanced_group([a, b], 2)
            [partition] = shares["a"]
            waiting = user_message("z", "zombie")  # no parse_data: the NLU server is asked
            waiting.partition = partition
            async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox:
                await produce(bootstrap, bundle.topics.input, [waiting])
                async with asyncio.timeout(30):
                    await nlu.called.wait()  # A asked; its answer is held
                a.signal(signal.SIGSTOP)
                await wait_for_balanced_group([b], 2)  # B holds A's partition now ...
                await inbox.wait_for(1)  # ... and routed the message (its own NLU call)
                a.signal(signal.SIGCONT)
                answer.set()  # the answer to A's call, which A must not publish
                await wait_for_balanced_group([a, b], 2)  # A is back, as a new member
            codes = await stop_all(a, b)
        finally:
            a.signal(signal.SIGCONT)
            for worker in (a, b):
                worker.signal(signal.SIGKILL)
    assert codes == [0, 0]
    assert len(nlu.calls) == 2  # A's, held across the stop, and B's
    async with TopicReader(bootstrap, bundle.topics.calm, bundle.topics.nlu) as inbox:
        outputs = Outputs(await inbox.read_to_end())
    [routed_once] = outputs.by_id[greet_id(waiting)]
    assert routed_once["routing"]["route"] == "calm"
