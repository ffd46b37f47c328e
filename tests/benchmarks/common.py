"""Shared plumbing of the benchmark suite: the machine, the broker, workloads, measuring tools.

Every benchmark module runs as its own process (`python -m tests.benchmarks.<module> ...`) and
prints one JSON object on its last stdout line; `run.py` starts them, one after another, against
one broker, and collects what they print.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
RESULT_PREFIX = "BENCH-RESULT "

# The IntentBasedRouter configuration and flow triggers every intent benchmark routes with.
INTENT_ROUTER = {
    "nlu_entry": {"sticky": ["handoff", "check_balance"], "non_sticky": ["chitchat"]},
    "calm_entry": {"sticky": ["transfer_money", "check_balance"]},
}
# (intent or None, share of messages): ~3.5 messages per sender, so about a third of the
# messages open a sticky session (a changelog write) and most others are routed by one.
INTENT_MIX: tuple[tuple[str | None, int], ...] = (
    ("transfer_money", 40),  # CALM sticky (listed)
    ("chitchat", 20),  # NLU, not sticky: the router runs again on the next message
    ("handoff", 20),  # NLU sticky (listed)
    (None, 10),  # no intent: NLU sticky
    ("block_card", 10),  # a flow's nlu_trigger: CALM sticky
)
MESSAGES_PER_SENDER = 3.5


# ---- the machine -------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    with contextlib.suppress(ImportError):
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Hypervisor vendor:"):
                info["hypervisor"] = line.split(":", 1)[1].strip()
    return info


def machine_line(info: dict[str, Any]) -> str:
    extra = f", {info['memory_gib']} GiB" if "memory_gib" in info else ""
    virt = f", {info['hypervisor']} VM" if "hypervisor" in info else ""
    return (
        f"{info['cpu_model']}, {info['cores']} cores{extra}{virt}, "
        f"Python {info['python']}, {info['platform']}"
    )


# ---- results between processes -----------------------------------------------------------------


def emit(result: dict[str, Any]) -> None:
    """The last line a benchmark process prints: its result, for run.py."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def parse_result(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            value: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return value
    raise RuntimeError("the benchmark process printed no result")


def python_module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"tests.benchmarks.{module}", *args]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


# ---- workloads --------------------------------------------------------------------------------


def tag() -> str:
    return uuid.uuid4().hex[:8]


def sender_ids(count: int, seed: int = 1) -> list[str]:
    """Sender ids shaped like a web channel's: 32 hex characters (a uuid4 without dashes)."""
    rng = random.Random(seed)
    return [f"{rng.getrandbits(128):032x}" for _ in range(count)]


def intent_messages(count: int, seed: int = 7) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) input records of the intent benchmarks: the INTENT_MIX over count/3.5
    senders, each message with `parse_data` and a `timestamp` (time.time() when generated)."""
    rng = random.Random(seed)
    senders = sender_ids(max(1, int(count / MESSAGES_PER_SENDER)), seed)
    intents = [name for name, share in INTENT_MIX for _ in range(share)]
    for _ in range(count):
        sender = rng.choice(senders)
        intent = rng.choice(intents)
        body: dict[str, Any] = {
            "message_id": f"{rng.getrandbits(128):032x}",
            "sender_id": sender,
            "text": "I want to send some money to my sister",
            "input_channel": "rest",
            "timestamp": time.time(),
            "metadata": {},
            "parse_data": {
                "intent": {"name": intent, "confidence": 0.93} if intent else None,
                "entities": [],
            },
        }
        yield sender.encode(), orjson.dumps(body)


def llm_messages(count: int, senders: int, seed: int = 11) -> Iterator[tuple[bytes, bytes]]:
    """Input records of the LLM benchmark: plain user texts (no parse_data)."""
    rng = random.Random(seed)
    ids = sender_ids(senders, seed)
    for i in range(count):
        sender = ids[i % len(ids)]
        body = {
            "message_id": f"{rng.getrandbits(128):032x}",
            "sender_id": sender,
            "text": "can you tell me a joke about bank transfers?",
            "input_channel": "rest",
            "timestamp": time.time(),
        }
        yield sender.encode(), orjson.dumps(body)


Headers = list[tuple[str, bytes]]

# ---- Kafka helpers ----------------------------------------------------------------------------


async def produce_all(
    bootstrap: str,
    topic: str,
    records: Iterable[
        tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, Headers]
    ],
    *,
    partition_of: Callable[[int], int] | None = None,
    chunk: int = 5000,
) -> dict[int, int]:
    """Produce as fast as aiokafka batches; returns the end offset (last + 1) per partition."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    ends: dict[int, int] = {}
    try:
        pending: list[asyncio.Future[Any]] = []

        async def settle() -> None:
            for meta in await asyncio.gather(*pending):
                ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
            pending.clear()

        for i, (key, value, *extra) in enumerate(records):
            partition = partition_of(i) if partition_of is not None else None
            headers = extra[0] if extra else None
            pending.append(
                await producer.send(topic, value, key=key, partition=partition, headers=headers)
            )
            if len(pending) >= chunk:
                await settle()
        await settle()
    finally:
        await producer.stop()
    return ends


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


class CommitProgress:
    """The positions a committer in this process reports (the worker's observer seam, the
    passthrough's commit loop), and the moment they reach the ends.

    A run is timed by this, not by asking the broker over and over: polling the group's offsets
    every 20 ms cost the measured process about 3 % of its CPU. CommitWatch then checks once
    that the broker agrees.
    """

    def __init__(self, ends: dict[int, int]) -> None:
        self._ends = {p: end for p, end in ends.items() if end > 0}
        self._positions: dict[int, int] = {}
        self._reached = asyncio.Event()
        self._at = 0.0

    def committed(self, partition: int, position: int) -> None:
        self._positions[partition] = max(self._positions.get(partition, 0), position)
        done = all(self._positions.get(p, 0) >= end for p, end in self._ends.items())
        if done and not self._reached.is_set():
            self._at = time.perf_counter()
            self._reached.set()

    async def wait(self, timeout: float) -> float:
        """time.perf_counter() when every partition's commit reached its end."""
        await asyncio.wait_for(self._reached.wait(), timeout)
        return self._at


class CommitWatch:
    """Polls a group's committed offsets until they reach the given ends (the moment the last
    input record is committed: the end of an end-to-end run)."""

    def __init__(self, bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> None:
        self._bootstrap = bootstrap
        self._group = group
        self._topic = topic
        self._ends = ends

    async def wait(self, timeout: float, period: float = 0.02) -> float:
        """time.perf_counter() when every partition's commit reached its end."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        # OffsetFetch through a consumer of the group that never subscribes (so it never joins):
        # the way the worker reads its own commits (Tansu's answer to the admin client's
        # OffsetFetch does not parse).
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=self._group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            waiting = {p for p, end in self._ends.items() if end > 0}
            deadline = time.perf_counter() + timeout
            while time.perf_counter() < deadline:
                for partition in sorted(waiting):
                    offset = await consumer.committed(TopicPartition(self._topic, partition))
                    if offset is not None and offset >= self._ends[partition]:
                        waiting.discard(partition)
                if not waiting:
                    return time.perf_counter()
                await asyncio.sleep(period)
            raise TimeoutError(f"group {self._group} did not commit everything in {timeout}s")
        finally:
            await consumer.stop()


@contextlib.asynccontextmanager
async def broker(log_path: Path | None = None) -> AsyncIterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS, else the embedded Tansu broker on a loopback port."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    from worker.kafka.broker import EmbeddedBroker

    embedded = EmbeddedBroker(log_path=log_path)
    await embedded.start()
    try:
        yield embedded.bootstrap_servers
    finally:
        await embedded.stop()


# ---- the fake LLM in its own process ----------------------------------------------------------


@dataclass
class FakeLLMProcess:
    """`python -m tests.benchmarks.fake_llm_proc`: the project's FakeLLMServer, own process."""

    latency: float
    answer: str
    process: subprocess.Popen[str] | None = None
    url: str = ""

    def __enter__(self) -> FakeLLMProcess:
        self.process = subprocess.Popen(
            python_module_command(
                "fake_llm_proc", "--latency", str(self.latency), "--answer", self.answer
            ),
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("listening "):
            self.process.kill()
            raise RuntimeError(f"fake LLM did not start: {line!r}")
        self.url = line.split()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # the server stops when its stdin closes
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rusage_cpu() -> float:
    """CPU seconds (user + system) of this process so far."""
    return time.process_time()


# ---- profiling and timed worker runs --------------------------------------------------------


def start_profiler(path: str | None) -> Any:
    if not path:
        return None
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    return profiler


def stop_profiler(profiler: Any, path: str | None) -> None:
    if profiler is None or not path:
        return
    profiler.stop()
    with open(path, "w") as out:
        out.write(
            profiler.output_text(
                unicode=False, color=False, show_all=bool(os.environ.get("BENCH_PROFILE_ALL"))
            )
        )


async def timed_worker_run(
    settings: Any,
    router: Any,
    ends: dict[int, int],
    *,
    timeout: float,
    profile: str | None,
    observer: Callable[[CommitProgress], Any] | None = None,
    beside: Callable[[Any], contextlib.AbstractAsyncContextManager[Any]] | None = None,
) -> tuple[float, float, float]:
    """Run a RoutingWorker over pre-produced input: (t0 = partitions assigned and restored,
    t1 = every input offset committed, worker CPU seconds in between).

    `observer(progress)`: the worker's one observer, which must tell `progress` of commits
    (default: one that hears only them). `beside(worker)`: what runs next to the worker for the
    whole run (the metrics' HTTP server and a scraper)."""
    from worker import collector
    from worker.runtime.observer import RuntimeObserver
    from worker.runtime.worker import RoutingWorker

    progress = CommitProgress(ends)

    class Commits(RuntimeObserver):
        def committed(self, positions: Any) -> None:
            for partition, position in positions.items():
                progress.committed(partition, position)

    worker = RoutingWorker(settings, router, observer=observer(progress) if observer else Commits())
    async with contextlib.AsyncExitStack() as stack:
        # As `run` tunes it; the process's other measurements (the intent ratio's raw aiokafka
        # passthrough) get CPython's defaults again after it.
        stack.enter_context(collector.tuned())
        if beside is not None:
            await stack.enter_async_context(beside(worker))
        return await _timed(worker, settings, progress, ends, timeout, profile)


async def _timed(
    worker: Any,
    settings: Any,
    progress: CommitProgress,
    ends: dict[int, int],
    timeout: float,
    profile: str | None,
) -> tuple[float, float, float]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="bench-worker")
    ready = asyncio.create_task(worker.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
        raise RuntimeError("worker stopped before it was ready")
    if ready not in done:
        stop.set()
        raise RuntimeError("worker got no partitions within 60 s")
    t0, cpu0 = time.perf_counter(), rusage_cpu()
    profiler = start_profiler(profile)
    try:
        t1 = await progress.wait(timeout)
        cpu1 = rusage_cpu()
    finally:
        stop_profiler(profiler, profile)
    try:
        watch = CommitWatch(
            settings.connection["bootstrap_servers"], settings.group_id, settings.topics.input, ends
        )
        await watch.wait(30)  # the broker holds what the worker said it committed
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    return t0, t1, cpu1 - cpu0
