"""The idle expiry of a sticky session: where Rasa drops the routing slot at a session expiry.

core/actions/action.py ActionSessionStart carries every slot, the routing slot too, into the new
session when session_config.carry_over_slots_to_new_session is true (Rasa's default); from 3.16
core/processor.py _update_tracker_session starts no new session on expiry with
start_session_after_expiry: false; shared/core/domain.py SessionConfig: 60 minutes by default,
0 = sessions never expire (3.11.20, 3.21.0).
"""

from __future__ import annotations

import pytest

from worker.config.app_config import session_ttl
from worker.routing.domain import SessionConfig


@pytest.mark.parametrize(
    ("session", "seconds"),
    [
        (SessionConfig(), 0.0),  # Rasa's defaults: the routing survives the expiry
        (SessionConfig(60, carry_over_slots=False), 3600.0),
        (SessionConfig(5, carry_over_slots=False), 300.0),
        (SessionConfig(0, carry_over_slots=False), 0.0),  # sessions never expire
        (SessionConfig(60, carry_over_slots=False, start_session_after_expiry=False), 0.0),
    ],
)
def test_rasa_drops_the_routing_only_without_carry_over(
    session: SessionConfig, seconds: float
) -> None:
    warnings: list[str] = []
    assert session_ttl(None, session, file="endpoints.yml", warnings=warnings) == seconds
    assert warnings == []


def test_kafka_setting_overrides_and_says_where_it_differs_from_rasa() -> None:
    warnings: list[str] = []
    assert session_ttl(1800.0, SessionConfig(), file="endpoints.yml", warnings=warnings) == 1800.0
    assert warnings == [
        "endpoints.yml: kafka.session_expiration_time: ends idle sessions after 30 min "
        "(0 = never), while Rasa keeps the routing across a session expiry for this domain's "
        "session_config"
    ]
    same: list[str] = []
    session = SessionConfig(30, carry_over_slots=False)
    assert session_ttl(1800.0, session, file="endpoints.yml", warnings=same) == 1800.0
    assert same == []
