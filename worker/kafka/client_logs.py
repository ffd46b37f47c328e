"""aiokafka's logs while the broker is away: one line per kind of trouble, not dozens a second.

aiokafka retries a lost broker every `retry_backoff_ms` (100 ms) in several loops at once
(metadata, coordinator, fetcher), each logging an ERROR per attempt: about 75 lines a second
for as long as the outage lasts. The worker keeps the first line of each kind and then at most
one per window, saying how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

CLIENT_LOGGERS = (
    "aiokafka",
    "aiokafka.conn",
    "aiokafka.cluster",
    "aiokafka.admin.client",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",
)


class RepeatFilter(logging.Filter):
    """Lets a message (by logger and format string) through once per `window` seconds."""

    def __init__(self, window: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, str(record.msg))
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.window:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        self._last[kind] = now
        left_out = self._suppressed.pop(kind, 0)
        if left_out:
            # Plain text, no %: the record's own args still format the original message.
            record.msg = f"{record.msg} (and {left_out} more like it in {self.window:g}s)"
        return True


_installed: RepeatFilter | None = None


def quiet_client_logs(window: float = 30.0) -> None:
    """Install the filter on aiokafka's loggers (once per process)."""
    global _installed
    if _installed is not None:
        return
    _installed = RepeatFilter(window)
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).addFilter(_installed)
