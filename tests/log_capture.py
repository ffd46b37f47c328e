"""A logger's lines, captured for a test and awaitable as they arrive."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class CapturedLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []  # "LEVEL message"
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")
        self._changed.set()

    def messages(self, starting: str) -> list[str]:
        """The messages (without their level) that start with `starting`."""
        found = (line.split(" ", 1)[1] for line in self.lines)
        return [message for message in found if message.startswith(starting)]

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until `predicate()` holds, checked at each line logged (callers bound the wait)."""
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def dump(self, last: int = 60) -> str:
        return f"log (last {last} lines):\n" + "\n".join(self.lines[-last:])


@contextmanager
def captured(logger_name: str) -> Iterator[CapturedLog]:
    """Every line of `logger_name` at DEBUG and above, while the block runs."""
    logger = logging.getLogger(logger_name)
    handler, level = CapturedLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
