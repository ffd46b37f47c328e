"""Restoring a changelog partition: the sessions, and the history kept for redeliveries."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from contracts.models import (
    INPUT_OFFSET_HEADER,
    Reason,
    Route,
    RouterName,
    Routing,
    SessionRecord,
    encode_session,
)
from worker.runtime.changelog import RestoredPartition

TOPIC = "routing-sessions"


def routing(route: Route, at: float) -> Routing:
    return Routing(
        route=route, sticky=True, router=RouterName.LLM, reason=Reason.LLM_ANSWER, decided_at=at
    )


def record(
    offset: int,
    key: str,
    *,
    route: Route | None = None,
    since: int = -1,
    message_id: str | None = None,
    decision: Routing | None = None,
    written_for: int | None = None,
    seen_at: float = 0.0,
) -> ConsumerRecord[bytes, bytes]:
    value = None
    if route is not None:
        value = encode_session(
            SessionRecord(
                route=route,
                since_offset=since,
                message_id=message_id,
                routing=decision,
                seen_at=seen_at,
            )
        )
    headers = [] if written_for is None else [(INPUT_OFFSET_HEADER, str(written_for).encode())]
    return ConsumerRecord(
        TOPIC, 0, offset, 0, 0, key.encode(), value, None, len(key), len(value or b""), headers
    )


def restore(committed: int, *records: ConsumerRecord[bytes, bytes]) -> RestoredPartition:
    restored = RestoredPartition()
    for r in records:
        restored.apply(TOPIC, r, committed)
    return restored


def test_sessions_of_committed_messages_need_no_replay() -> None:
    opened = routing(Route.CALM, 1.0)
    restored = restore(
        5,
        record(0, "u", route=Route.CALM, since=3, message_id="m3", decision=opened, written_for=3),
    )
    session = restored.sessions.get("u")
    assert session is not None and session.route is Route.CALM and session.since_offset == 3
    assert restored.replay == {}


def test_a_restored_session_was_last_written_when_last_seen() -> None:
    restored = restore(
        2**41,  # all committed: a plain restart
        record(0, "u", route=Route.NLU, since=2**40, written_for=2**40, seen_at=1763800000.25),
        record(1, "u", route=Route.NLU, since=2**40, written_for=2**40 + 3, seen_at=1763800100.5),
    )
    session = restored.sessions.get("u")
    assert session is not None
    assert (session.route, session.since_offset) == (Route.NLU, 2**40)
    # The changelog last heard of it at its latest seen_at: a refresh is due half a TTL later.
    assert session.seen_at == session.written_at == 1763800100.5


def test_the_opening_decision_of_an_uncommitted_message_is_kept_as_it_was() -> None:
    opened = routing(Route.CALM, 1.5)
    restored = restore(
        3,
        record(0, "u", route=Route.CALM, since=4, message_id="m4", decision=opened, written_for=4),
        record(1, "u", route=Route.CALM, since=4, message_id="m4", written_for=6),  # a refresh
    )
    history = restored.replay["u"]
    assert history.decision_for(4, "m4") == opened
    assert history.decision_for(4, "another message") is None
    assert history.decision_for(6, "m4") is None  # the refresh decided nothing
    assert history.session_before(4) is None  # the router decided it without a session
    before_5 = history.session_before(5)
    assert before_5 is not None and before_5.route is Route.CALM
    assert history.covers(6) and not history.covers(7)


def test_a_reset_and_a_new_session_within_the_window_replay_in_order() -> None:
    calm, nlu = routing(Route.CALM, 1.0), routing(Route.NLU, 2.0)
    restored = restore(
        2,
        record(0, "u", route=Route.CALM, since=1, message_id="m1", decision=calm, written_for=1),
        record(1, "u", written_for=3),  # session_reset at input offset 3
        record(2, "u", route=Route.NLU, since=5, message_id="m5", decision=nlu, written_for=5),
    )
    history = restored.replay["u"]
    held = history.session_before(2)
    assert held is not None and held.route is Route.CALM  # opened before the committed offset
    assert history.session_before(4) is None  # after the reset
    assert history.decision_for(5, "m5") == nlu
    after = restored.sessions.get("u")  # what the sender's next message meets
    assert after is not None and after.route is Route.NLU and after.since_offset == 5


def test_an_idle_expiry_applies_after_the_senders_last_message() -> None:
    calm = routing(Route.CALM, 1.0)
    restored = restore(
        0,
        record(0, "u", route=Route.CALM, since=2, message_id="m2", decision=calm, written_for=2),
        record(1, "u"),  # an expiry tombstone: no input offset
    )
    history = restored.replay["u"]
    assert history.last_offset == 2
    assert history.session_before(2) is None
    assert "u" not in restored.sessions


def test_records_without_the_header_count_as_written_for_their_opening_message() -> None:
    calm = routing(Route.CALM, 1.0)
    restored = restore(1, record(0, "u", route=Route.CALM, since=1, message_id="m1", decision=calm))
    assert restored.replay["u"].decision_for(1, "m1") == calm


def test_unreadable_records_are_skipped() -> None:
    bad = ConsumerRecord(TOPIC, 0, 0, 0, 0, b"u", b"{nope", None, 1, 5, [])
    restored = restore(0, bad)
    assert len(restored.sessions) == 0 and restored.replay == {}
