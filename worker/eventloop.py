"""The event loop every process of the project runs on: uvloop where it is installed (a dependency
on Linux and macOS), else asyncio's own.

The LLM router's worker is CPU-bound in its event loop (the HTTP client of the gateway, the Kafka
client, the tasks of the sender lanes); uvloop runs the same code with a cheaper loop and cheaper
sockets. `COEXISTENCE_ROUTER_LOOP=asyncio` selects asyncio's loop instead (to compare, or to rule
the loop out when chasing a problem).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

LOOP_VARIABLE = "COEXISTENCE_ROUTER_LOOP"


def loop_factory(
    environ: Mapping[str, str] | None = None,
) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's `new_event_loop` when installed and not turned off, else asyncio's."""
    wanted = (environ if environ is not None else os.environ).get(LOOP_VARIABLE, "uvloop")
    if wanted.strip().lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """`uvloop` or `asyncio`: which loop a process runs on (for logs and benchmark reports)."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    return "uvloop" if isinstance(loop, uvloop.Loop) else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop of `loop_factory()`."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
