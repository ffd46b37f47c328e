"""Restoring sticky sessions from `routing-sessions`: time, and resident memory per session.

    python -m tests.benchmarks.bench_restore all --bootstrap HOST:PORT --sessions 1000000
    python -m tests.benchmarks.bench_restore restore --bootstrap HOST:PORT --topic T ... (internal)

`all` writes one changelog record per session (as the worker writes a session it opens: route,
opening offset, message id, the opening decision, seen_at, the `x-input-offset` header), spread
over the partitions, then starts a separate process that restores every partition with the
worker's own `restore_sessions` and measures it: wall time of the restore, and resident memory
(RSS) after the restore (consumer stopped, garbage collected) minus RSS just before it, divided by
the number of sessions. The input topic counts as committed past every opening message (the
usual restart), so no decision is kept for replay.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from enum import Enum
from typing import Any

from tests.benchmarks.common import (
    ROOT,
    Headers,
    child_env,
    create_topics,
    emit,
    parse_result,
    produce_all,
    python_module_command,
    sender_ids,
    tag,
)


def changelog_records(count: int, partitions: int) -> Iterator[tuple[bytes, bytes, Headers]]:
    from contracts.models import Reason, Route, RouterName, Routing, SessionRecord, encode_session
    from worker.runtime.changelog import input_offset_headers

    now = time.time()
    senders = sender_ids(count, seed=3)
    for i, sender in enumerate(senders):
        route = Route.CALM if i % 3 else Route.NLU
        offset = i // partitions + 1000  # the opening message's input offset in its partition
        routing = Routing(
            route=route,
            sticky=True,
            router=RouterName.INTENT,
            reason=Reason.LISTED_INTENT,
            intent="transfer_money" if route is Route.CALM else "handoff",
            decided_at=now,
        )
        value = encode_session(
            SessionRecord(
                route=route,
                since_offset=offset,
                message_id=f"{i:032x}",
                routing=routing,
                seen_at=now,
            )
        )
        yield sender.encode(), value, input_offset_headers(offset)


async def produce_changelog(bootstrap: str, topic: str, count: int, partitions: int) -> float:
    await create_topics(bootstrap, [topic], partitions)
    started = time.perf_counter()
    await produce_all(
        bootstrap,
        topic,
        changelog_records(count, partitions),
        partition_of=lambda i: i % partitions,
        chunk=20000,
    )
    return time.perf_counter() - started


def rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


async def restore(
    bootstrap: str, topic: str, partitions: int, profile: str | None
) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    from worker.runtime.changelog import restore_sessions

    # The worker's restorer (a group-less consumer with default fetch settings), except for
    # auto_offset_reset: with the default ("latest") aiokafka resets the new assignment to the end
    # while restore_sessions awaits end_offsets, and its seek_to_beginning can come too late, so
    # only the tail of a long changelog is read (seen once here: 974 of 1,000,000 sessions).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    numbers = list(range(partitions))
    committed = dict.fromkeys(numbers, 2**62)
    gc.collect()
    before = rss()
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
    started = time.perf_counter()
    restored = await restore_sessions(consumer, topic, numbers, committed)
    seconds = time.perf_counter() - started
    if profiler is not None:
        assert profile is not None  # a profiler runs only when asked for its file
        profiler.stop()
        with open(profile, "w") as out:
            out.write(profiler.output_text(unicode=False, color=False))
    await consumer.stop()
    del consumer
    gc.collect()
    after = rss()
    sessions = [r.sessions for r in restored.values()]
    count = sum(len(s) for s in sessions)
    return {
        "sessions": count,
        "restore_seconds": round(seconds, 2),
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "bytes_per_session": round((after - before) / max(1, count), 1),
        "object_bytes_per_session": round(object_bytes(sessions) / max(1, count), 1),
    }


def object_bytes(tables: list[Any]) -> int:
    """sys.getsizeof of the session tables and of every object they alone reach (dicts, sender
    ids, packed ints or session objects and their attribute values): what the objects take
    before allocator overhead and fragmentation. Walked by reference, not by the tables'
    layout, so a new layout is measured as it is."""
    seen: set[int] = set()
    total = 0
    stack: list[object] = list(tables)
    while stack:
        obj = stack.pop()
        # Types, enum members (routes) and singletons are shared with the whole process.
        if obj is None or isinstance(obj, type | bool | Enum) or id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            # A dict with only str keys does not report them as referents.
            stack.extend(obj.keys())
            stack.extend(obj.values())
        else:
            stack.extend(gc.get_referents(obj))
    return total


async def run_all(
    bootstrap: str, sessions: int, partitions: int, repeats: int, profile: str | None
) -> dict[str, Any]:
    """Write the changelog once, restore it `repeats` times (each in a fresh process); the
    figures are the medians, every run is listed."""
    topic = f"bench-sessions-{tag()}"
    produce_seconds = await produce_changelog(bootstrap, topic, sessions, partitions)
    runs: list[dict[str, Any]] = []
    for repeat in range(repeats):
        args = ["restore", "--bootstrap", bootstrap, "--topic", topic]
        args += ["--partitions", str(partitions)]
        if profile and repeat == repeats - 1:
            args += ["--profile", profile]
        done = await asyncio.to_thread(
            subprocess.run,
            python_module_command("bench_restore", *args),
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            raise RuntimeError(f"restore process failed:\n{done.stderr[-3000:]}")
        runs.append(parse_result(done.stdout))
    result = dict(runs[0])
    for name in ("restore_seconds", "bytes_per_session", "rss_after_mib"):
        result[name] = round(statistics.median(run[name] for run in runs), 2)
    result["sessions"] = min(run["sessions"] for run in runs)
    result["restore_seconds_runs"] = [run["restore_seconds"] for run in runs]
    result["bytes_per_session_runs"] = [run["bytes_per_session"] for run in runs]
    result["produce_seconds"] = round(produce_seconds, 1)
    result["partitions"] = partitions
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    everything = sub.add_parser("all")
    everything.add_argument("--bootstrap", required=True)
    everything.add_argument("--sessions", type=int, default=1_000_000)
    everything.add_argument("--partitions", type=int, default=6)
    everything.add_argument("--repeats", type=int, default=1)
    everything.add_argument("--profile")
    one = sub.add_parser("restore")
    one.add_argument("--bootstrap", required=True)
    one.add_argument("--topic", required=True)
    one.add_argument("--partitions", type=int, default=6)
    one.add_argument("--profile")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.command == "all":
        emit(
            asyncio.run(
                run_all(args.bootstrap, args.sessions, args.partitions, args.repeats, args.profile)
            )
        )
    else:
        emit(asyncio.run(restore(args.bootstrap, args.topic, args.partitions, args.profile)))


if __name__ == "__main__":
    main()
