"""IntentBasedRouter benchmarks: throughput against a raw aiokafka passthrough, and latency.

    python -m tests.benchmarks.bench_intent throughput --bootstrap HOST:PORT --messages N
    python -m tests.benchmarks.bench_intent latency --bootstrap HOST:PORT --rate R --seconds S
    python -m tests.benchmarks.bench_intent serve --bootstrap HOST:PORT --topics JSON  (internal)

Throughput: the same pre-produced input records are read by (a) a raw aiokafka consume-produce
passthrough and (b) the RoutingWorker, each as a new consumer group, alternately. A run is timed
from partition assignment to the moment the group's committed offsets cover every input record
(polled every 20 ms through the admin API, the same way for both).

`--metrics on|off|both` (default both): the worker with its metrics observer attached and
/metrics, /healthz and /readyz served (with the broker probe) and scraped every second, as `run`
runs by default; without them; or both in every round, their order alternating. With `both` the
result adds `metrics_throughput_ratio` and `metrics_cpu_ratio` (with ÷ without, the median of
the rounds' pairs) and the CPU per message each way;
`intent_throughput_ratio` is always the worker with metrics on when they were measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tests.benchmarks.common import (
    INTENT_ROUTER,
    ROOT,
    CommitProgress,
    CommitWatch,
    child_env,
    create_topics,
    emit,
    intent_messages,
    percentile,
    produce_all,
    python_module_command,
    rusage_cpu,
    start_profiler,
    stop_profiler,
    tag,
    timed_worker_run,
)
from worker import collector, eventloop

COMMIT_INTERVAL = 0.2
SESSION_TIMEOUT = 10.0  # the worker's default: no rebalance when a busy loop heartbeats late


def make_topics(prefix: str) -> Any:
    from worker.config.endpoints import Topics

    run = tag()
    return Topics(
        input=f"{prefix}-in-{run}",
        calm=f"{prefix}-calm-{run}",
        nlu=f"{prefix}-nlu-{run}",
        sessions=f"{prefix}-sessions-{run}",
        dlq=f"{prefix}-dlq-{run}",
    )


def make_router() -> Any:
    from worker.routing.flows import Flow, Flows, NluTrigger
    from worker.routing.router_config import IntentBasedRouterConfig
    from worker.routing.rules import Assistant
    from worker.runtime.coexistence_router import CoexistenceRouter

    config = IntentBasedRouterConfig.model_validate(INTENT_ROUTER)
    flows = Flows([Flow("block_card", (NluTrigger("block_card", "block_card"),))])
    return CoexistenceRouter(Assistant(config, flows))


def make_settings(bootstrap: str, topics: Any, partitions: int, **extra: Any) -> Any:
    from worker.config.endpoints import KafkaSettings
    from worker.runtime.settings import RuntimeSettings

    kafka = KafkaSettings(
        url=[bootstrap],
        topics=topics,
        group_id=f"bench-intent-{tag()}",
        partitions=partitions,
        commit_interval_ms=int(COMMIT_INTERVAL * 1000),
        session_timeout=SESSION_TIMEOUT,
    )
    return RuntimeSettings.from_kafka(kafka, **extra)


# ---- the baseline: a raw aiokafka passthrough -------------------------------------------------


async def passthrough(
    bootstrap: str, source: str, target: str, ends: dict[int, int], profile: str | None
) -> tuple[float, float, float]:
    """Consume `source`, produce every record unchanged to `target`, commit what is acknowledged
    (every COMMIT_INTERVAL, like the worker). Same client settings as the worker's."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.abc import ConsumerRebalanceListener

    assigned = asyncio.Event()

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            return None

        async def on_partitions_assigned(self, new: Any) -> None:
            assigned.set()

    group = f"bench-passthrough-{tag()}"
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=256,
        session_timeout_ms=int(SESSION_TIMEOUT * 1000),
        heartbeat_interval_ms=max(100, int(SESSION_TIMEOUT * 1000 / 3)),
    )
    await producer.start()
    await consumer.start()
    consumer.subscribe([source], listener=Listener())
    pending: deque[tuple[int, int, asyncio.Future[Any]]] = deque()
    progress = CommitProgress(ends)
    stop = asyncio.Event()

    async def commit_loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), COMMIT_INTERVAL)
            offsets: dict[Any, int] = {}
            while pending and pending[0][2].done():
                partition, offset, fut = pending.popleft()
                fut.result()
                offsets[TopicPartition(source, partition)] = offset + 1
            if offsets:
                await consumer.commit(offsets)
                for tp, position in offsets.items():
                    progress.committed(tp.partition, position)

    async def pump() -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=256)
            for tp, records in batch.items():
                for record in records:
                    fut = await producer.send(target, record.value, key=record.key)
                    pending.append((tp.partition, record.offset, fut))

    pump_task = asyncio.create_task(pump())
    await asyncio.wait_for(assigned.wait(), 60)
    t0, cpu0 = time.perf_counter(), rusage_cpu()
    profiler = start_profiler(profile)
    committer = asyncio.create_task(commit_loop())
    try:
        try:
            t1 = await progress.wait(600)
            cpu1 = rusage_cpu()
        finally:
            stop_profiler(profiler, profile)
        await CommitWatch(bootstrap, group, source, ends).wait(30)  # the broker agrees
    finally:
        stop.set()
        await asyncio.gather(pump_task, committer, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
    return t0, t1, cpu1 - cpu0


# ---- the worker with its metrics on, as `run` serves them --------------------------------------

METRICS_MODES = ("off", "on", "both")
SCRAPE_INTERVAL = 1.0  # seconds: fifteen times Prometheus's default scrape interval


def metered(progress: CommitProgress) -> Any:
    """The service's runtime metrics class as the worker's one observer (as RouterService
    attaches them: no fan-out), also telling the harness of commits."""
    from worker.ops.metrics import RuntimeMetrics

    class MeteredCommits(RuntimeMetrics):
        def committed(self, positions: Any) -> None:
            for partition, position in positions.items():
                progress.committed(partition, position)

    return MeteredCommits


@contextlib.asynccontextmanager
async def metrics_served(worker: Any, metrics: Any) -> AsyncIterator[None]:
    """/metrics, /healthz and /readyz on a loopback port, with the broker probe, as `run` serves
    them, and a scraper in this process asking /metrics every SCRAPE_INTERVAL."""
    import aiohttp

    from worker.ops.health import BrokerProbe, Health
    from worker.ops.server import OpsServer

    probe = BrokerProbe(worker.settings.connection)
    server = OpsServer("127.0.0.1", 0, Health(worker.status, probe), metrics, probe)
    await server.start()

    started = asyncio.Event()

    async def scrape() -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(server.url + "/metrics") as response:
                    await response.read()
                started.set()
                await asyncio.sleep(SCRAPE_INTERVAL)

    scraper = asyncio.create_task(scrape())
    # Started before the timed run: the first scrape and the probe's connection are not the
    # run's cost (a service pays them once).
    await asyncio.wait_for(started.wait(), 30)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not probe.reachable and loop.time() < deadline:
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        scraper.cancel()
        await asyncio.gather(scraper, return_exceptions=True)
        await server.stop()


async def worker_run(
    settings: Any, ends: dict[int, int], *, metrics: bool, profile: str | None
) -> tuple[float, float, float]:
    if not metrics:
        return await timed_worker_run(settings, make_router(), ends, timeout=600, profile=profile)
    from worker.ops.metrics import RouterMetrics

    made: dict[str, Any] = {}

    def observer(progress: CommitProgress) -> Any:
        made["metrics"] = RouterMetrics(lambda: made["worker"].status(), runtime=metered(progress))
        return made["metrics"].runtime

    def beside(worker: Any) -> contextlib.AbstractAsyncContextManager[None]:
        made["worker"] = worker
        return metrics_served(worker, made["metrics"])

    return await timed_worker_run(
        settings,
        make_router(),
        ends,
        timeout=600,
        profile=profile,
        observer=observer,
        beside=beside,
    )


def metrics_cost(
    rates: dict[bool, list[float]], cpu_us: dict[bool, list[float]], base: float
) -> dict[str, Any]:
    """What the metrics cost, from rounds that ran the worker with them (True) and without.

    Each round's two runs are a pair, measured back to back in alternating order, so a neighbour's
    load or the broker's growing memory storage moves both: the ratios are the medians of the
    rounds' own ratios. `metrics_cpu_ratio` is the same for the CPU per message (without ÷ with,
    so that below 1 is a cost, like the rate's): a wait, such as a rebalance, does not move it;
    a busy machine does, as much as the rate."""
    off = statistics.median(rates[False])
    paired = [with_ / without for with_, without in zip(rates[True], rates[False], strict=True)]
    cpu_paired = [
        without / with_ for with_, without in zip(cpu_us[True], cpu_us[False], strict=True)
    ]
    return {
        "intent_throughput_ratio_without_metrics": round(off / base, 3),
        "worker_messages_per_s_without_metrics": round(off, 1),
        "worker_cpu_us_per_message_without_metrics": round(statistics.median(cpu_us[False]), 1),
        "worker_rates_without_metrics": [round(r, 1) for r in rates[False]],
        "worker_cpu_us_without_metrics": [round(c, 2) for c in cpu_us[False]],
        "worker_cpu_us_with_metrics": [round(c, 2) for c in cpu_us[True]],
        # With ÷ without (1.0: the metrics cost nothing).
        "metrics_throughput_ratio": round(statistics.median(paired), 3),
        "metrics_throughput_ratios": [round(r, 3) for r in paired],
        "metrics_cpu_ratio": round(statistics.median(cpu_paired), 3),
        "metrics_cpu_us_per_message": round(
            statistics.median(w - wo for w, wo in zip(cpu_us[True], cpu_us[False], strict=True)),
            2,
        ),
    }


async def run_throughput(
    bootstrap: str,
    messages: int,
    partitions: int,
    rounds: int,
    profile: str | None,
    metrics: str = "both",
) -> dict[str, Any]:
    """`metrics`: the worker with its metrics served and scraped (on), without (off), or both
    in every round (their order alternating); `intent_throughput_ratio` is the worker with
    metrics on when they were measured, as `run` runs by default."""
    from worker.kafka.topics import ensure_topics

    topics = make_topics("intent")
    connection = {"bootstrap_servers": bootstrap}
    await ensure_topics(
        connection, topics, create=True, partitions=partitions, replication_factor=1
    )
    ends = await produce_all(bootstrap, topics.input, intent_messages(messages))
    assert sum(ends.values()) == messages, ends
    modes = {"off": [False], "on": [True], "both": [False, True]}[metrics]
    passthrough_rates: list[float] = []
    passthrough_cpu: list[float] = []
    rates: dict[bool, list[float]] = {m: [] for m in modes}
    cpu_us: dict[bool, list[float]] = {m: [] for m in modes}
    for round_ in range(rounds):
        target = f"{topics.input}-copy-{round_}"
        t0, t1, cpu = await passthrough(bootstrap, topics.input, target, ends, None)
        passthrough_rates.append(messages / (t1 - t0))
        passthrough_cpu.append(cpu * 1e6 / messages)
        order = modes if round_ % 2 == 0 else list(reversed(modes))
        for on in order:
            # Every run: its own output, changelog and DLQ topics (the changelog starts empty).
            run = f"{round_}-{'m' if on else 'n'}"
            run_topics = topics.model_copy(
                update={
                    "calm": f"{topics.calm}-{run}",
                    "nlu": f"{topics.nlu}-{run}",
                    "sessions": f"{topics.sessions}-{run}",
                    "dlq": f"{topics.dlq}-{run}",
                }
            )
            settings = make_settings(bootstrap, run_topics, partitions)
            last = round_ == rounds - 1 and on == order[-1]
            t0, t1, cpu = await worker_run(
                settings, ends, metrics=on, profile=profile if last else None
            )
            rates[on].append(messages / (t1 - t0))
            cpu_us[on].append(cpu * 1e6 / messages)
    base = statistics.median(passthrough_rates)
    shown = True in rates
    worker = statistics.median(rates[shown])
    result: dict[str, Any] = {
        "loop": eventloop.loop_name(asyncio.get_running_loop()),
        "messages": messages,
        "partitions": partitions,
        "rounds": rounds,
        "metrics": metrics,
        "passthrough_messages_per_s": round(base, 1),
        "worker_messages_per_s": round(worker, 1),
        "intent_throughput_ratio": round(worker / base, 3),
        "passthrough_cpu_us_per_message": round(statistics.median(passthrough_cpu), 1),
        "worker_cpu_us_per_message": round(statistics.median(cpu_us[shown]), 1),
        "passthrough_rates": [round(r, 1) for r in passthrough_rates],
        "worker_rates": [round(r, 1) for r in rates[shown]],
    }
    if metrics == "both":
        result.update(metrics_cost(rates, cpu_us, base))
    return result


# ---- latency at a fixed rate ------------------------------------------------------------------


async def serve(bootstrap: str, topics_json: str, partitions: int) -> None:
    """A worker in this process until stdin closes; prints `ready` once it has its partitions."""
    from worker.config.endpoints import Topics
    from worker.runtime.worker import RoutingWorker

    topics = Topics.model_validate_json(topics_json)
    worker = RoutingWorker(make_settings(bootstrap, topics, partitions), make_router())
    stop = asyncio.Event()
    with collector.tuned():
        task = asyncio.create_task(worker.run(stop))
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        await worker.ready.wait()
        print("ready", flush=True)
        while await reader.read(4096):
            pass
        stop.set()
        await asyncio.wait_for(task, 60)


async def run_latency(
    bootstrap: str, rate: float, seconds: float, warmup: float, partitions: int
) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from worker.kafka.topics import ensure_topics

    topics = make_topics("latency")
    await ensure_topics(
        {"bootstrap_servers": bootstrap},
        topics,
        create=True,
        partitions=partitions,
        replication_factor=1,
    )
    server = subprocess.Popen(
        python_module_command(
            "bench_intent",
            "serve",
            "--bootstrap",
            bootstrap,
            "--topics",
            topics.model_dump_json(),
            "--partitions",
            str(partitions),
        ),
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    try:
        line = await asyncio.to_thread(server.stdout.readline)
        if line.strip() != "ready":
            raise RuntimeError(f"the worker process did not start: {line!r}")
        # A connector: acks=all, no linger. The reader polls with a short max wait, so it
        # measures the worker, not its own long-poll.
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=0
        )
        reader = AIOKafkaConsumer(
            topics.calm,
            topics.nlu,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
        )
        await producer.start()
        await reader.start()
        total = int(rate * (seconds + warmup))
        latencies: list[tuple[float, float]] = []  # (sent at, latency)
        received = 0
        started = time.time()
        done_producing = asyncio.Event()

        async def read() -> None:
            nonlocal received
            deadline = time.monotonic() + seconds + warmup + 60
            while received < total and time.monotonic() < deadline:
                batch = await reader.getmany(timeout_ms=100)
                now = time.time()
                for records in batch.values():
                    for record in records:
                        sent = orjson.loads(record.value)["message"]["timestamp"]
                        latencies.append((sent, now - sent))
                        received += 1

        async def write() -> None:
            source = intent_messages(total, seed=23)
            sent = 0
            tick = 0.005
            while sent < total:
                due = min(total, int((time.time() - started) * rate) + 1)
                while sent < due:
                    key, value = next(source)
                    # The message's own `timestamp` is the send time (the generator is lazy,
                    # but stamp it here, right before the send).
                    body = orjson.loads(value)
                    body["timestamp"] = time.time()
                    await producer.send(topics.input, orjson.dumps(body), key=key)
                    sent += 1
                await asyncio.sleep(tick)
            await producer.flush()
            done_producing.set()

        cpu0 = rusage_cpu()
        await asyncio.gather(read(), write())
        cpu = rusage_cpu() - cpu0
        await producer.stop()
        await reader.stop()
    finally:
        with contextlib.suppress(OSError):
            server.stdin.close()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    measured = [lat for sent, lat in latencies if sent >= started + warmup]
    drift = latency_windows(latencies, started)
    # The same rate and duration without the worker: what the broker alone adds.
    hop = await broker_hop(bootstrap, rate, seconds + warmup, partitions)
    return {
        "rate": rate,
        "seconds": seconds,
        "received": received,
        "expected": total,
        "measured": len(measured),
        "latency_p50_ms": round(percentile(measured, 50) * 1000, 2),
        "latency_p90_ms": round(percentile(measured, 90) * 1000, 2),
        "latency_p99_ms": round(percentile(measured, 99) * 1000, 2),
        "latency_max_ms": round(max(measured) * 1000, 2) if measured else None,
        "harness_cpu_s": round(cpu, 2),
        "windows_start_s_p50_p99_ms": drift,
        "broker_hop": hop,
    }


def latency_windows(latencies: list[tuple[float, float]], started: float) -> list[list[float]]:
    """[window start s, p50 ms, p99 ms] per 5-second window of send time: shows whether
    latency drifts during a run."""
    windows: dict[int, list[float]] = {}
    for sent, latency in latencies:
        windows.setdefault(int((sent - started) // 5), []).append(latency)
    return [
        [5 * w, round(percentile(v, 50) * 1000, 1), round(percentile(v, 99) * 1000, 1)]
        for w, v in sorted(windows.items())
    ]


async def broker_hop(
    bootstrap: str, rate: float, seconds: float, partitions: int
) -> dict[str, Any]:
    """One produce -> consume hop through the broker with no worker, at the same rate: with the
    consumer's default fetch_max_wait_ms (500, what the worker's consumer uses) and with 5 ms.
    Shows how much of the end-to-end latency is the broker's fetch long-poll."""
    result: dict[str, Any] = {"rate": rate, "seconds": seconds}
    for wait in (500, 5):
        started = time.time()
        pairs = await one_hop(bootstrap, rate, seconds, partitions, wait)
        latencies = [latency for _, latency in pairs]
        name = f"fetch_max_wait_{wait}ms"
        result[f"{name}_p50_ms"] = round(percentile(latencies, 50) * 1000, 2)
        result[f"{name}_p99_ms"] = round(percentile(latencies, 99) * 1000, 2)
        result[f"{name}_windows_start_s_p50_p99_ms"] = latency_windows(pairs, started)
    return result


async def one_hop(
    bootstrap: str, rate: float, seconds: float, partitions: int, wait_ms: int
) -> list[tuple[float, float]]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"hop-{tag()}"
    await create_topics(bootstrap, [topic], partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=0
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=wait_ms,
    )
    await producer.start()
    await consumer.start()
    total = int(rate * seconds)
    latencies: list[tuple[float, float]] = []  # (sent at, latency)

    async def read() -> None:
        deadline = time.monotonic() + seconds + 30
        while len(latencies) < total and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batch.values():
                for record in records:
                    sent = float(record.value or b"0")
                    latencies.append((sent, now - sent))

    async def write() -> None:
        began, sent = time.time(), 0
        while sent < total:
            due = min(total, int((time.time() - began) * rate) + 1)
            while sent < due:
                key = f"sender-{sent % 997}".encode()
                await producer.send(topic, repr(time.time()).encode(), key=key)
                sent += 1
            await asyncio.sleep(0.005)

    try:
        await asyncio.gather(read(), write())
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    throughput = sub.add_parser("throughput")
    throughput.add_argument("--bootstrap", required=True)
    throughput.add_argument("--messages", type=int, default=50000)
    throughput.add_argument("--partitions", type=int, default=6)
    throughput.add_argument("--rounds", type=int, default=1)
    throughput.add_argument("--profile")
    throughput.add_argument(
        "--metrics",
        choices=METRICS_MODES,
        default="both",
        help="the worker with its metrics served and scraped, without, or both (default)",
    )
    latency = sub.add_parser("latency")
    latency.add_argument("--bootstrap", required=True)
    latency.add_argument("--rate", type=float, required=True)
    latency.add_argument("--seconds", type=float, default=20.0)
    latency.add_argument("--warmup", type=float, default=3.0)
    latency.add_argument("--partitions", type=int, default=6)
    serve_ = sub.add_parser("serve")
    serve_.add_argument("--bootstrap", required=True)
    serve_.add_argument("--topics", required=True)
    serve_.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.command == "throughput":
        emit(
            eventloop.run(
                run_throughput(
                    args.bootstrap,
                    args.messages,
                    args.partitions,
                    args.rounds,
                    args.profile,
                    args.metrics,
                )
            )
        )
    elif args.command == "latency":
        emit(
            eventloop.run(
                run_latency(args.bootstrap, args.rate, args.seconds, args.warmup, args.partitions)
            )
        )
    else:
        eventloop.run(serve(args.bootstrap, args.topics, args.partitions))


if __name__ == "__main__":
    main()
