"""The cycle collector's settings in a worker process, made once the service has started.

Nearly everything the worker allocates per message (the record, the decoded message, futures,
a lane's task) is freed by reference counting; the cycle collector finds little. At CPython's
default gen-0 threshold (700 allocations) it still runs about once per twenty LLM-routed
messages, and each of its older passes walks every message waiting in the lanes (up to
`max_in_flight` per partition): measured in the LLM benchmark, about 10 µs of CPU per message.
A larger gen-0 threshold runs it far less often, for garbage cycles that live a little longer
(bounded by the threshold's count of allocations); `gc.freeze()` keeps what start-up made (the
modules, the configuration, the assistant) out of every later pass.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

GEN0_THRESHOLD = 10_000


def tune() -> None:
    """Call once, when start-up is done and before the traffic begins."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


@contextlib.contextmanager
def tuned() -> Iterator[None]:
    """Tuned as `tune` does while inside, CPython's settings again after: for a process that
    runs a worker beside other things it measures or tests (the benchmarks, the tests)."""
    threshold = gc.get_threshold()
    tune()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
