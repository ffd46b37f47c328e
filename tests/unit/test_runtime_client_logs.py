"""aiokafka's repeated errors during a broker outage are thinned out, not hidden."""

from __future__ import annotations

import logging

from worker.kafka.client_logs import RepeatFilter


def make(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_one_line_per_kind_per_window_with_a_count_of_the_rest() -> None:
    now = [0.0]
    quiet = RepeatFilter(window=30, clock=lambda: now[0])
    assert quiet.filter(make("aiokafka", "Unable connect to node %s", 1))
    assert not quiet.filter(make("aiokafka", "Unable connect to node %s", 1))
    assert quiet.filter(make("aiokafka", "Unable to update metadata from %s", [1]))  # other kind
    assert not quiet.filter(make("aiokafka", "Unable connect to node %s", 1))
    now[0] = 31.0
    again = make("aiokafka", "Unable connect to node %s", 1)
    assert quiet.filter(again)
    assert again.getMessage() == "Unable connect to node 1 (and 2 more like it in 30s)"


def test_info_and_debug_pass_untouched() -> None:
    quiet = RepeatFilter(window=30, clock=lambda: 0.0)
    for _ in range(3):
        assert quiet.filter(make("aiokafka", "Joined group", level=logging.INFO))
