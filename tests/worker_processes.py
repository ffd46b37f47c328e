"""Real `coexistence-router run` processes for group tests, and readers that wait on records.

A `Bundle` is a generated set of Rasa files (config.yml, endpoints.yml, flows) for one test: its
own topics and consumer group, the broker on loopback. A `WorkerProcess` runs the CLI on it; tests
wait for what it logs ("assigned input partitions [...]") or for records on topics, always with a
bound, never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import orjson
from aiohttp import web
from aiokafka import ConsumerRecord

from tests.kafka_support import unique_topics
from worker.config.endpoints import Topics

COMMAND = [sys.executable, "-m", "worker.cli", "--log-level", "INFO"]
LLM_MODEL = "router-fake"
LLM_KEY = "sk-test-worker-processes"

INTENT_CONFIG = {
    "recipe": "default.v1",
    "pipeline": [
        {
            "name": "IntentBasedRouter",
            "nlu_entry": {"sticky": ["handoff"], "non_sticky": ["chitchat"]},
            "calm_entry": {"sticky": ["transfer_money"]},
        }
    ],
}
LLM_CONFIG = {
    "recipe": "default.v1",
    "pipeline": [
        {
            "name": "LLMBasedRouter",
            "calm_entry": {"sticky": "handles money transfers"},
            "llm": {"model_group": "router-llm"},
        }
    ],
}
FLOWS = {
    "flows": {
        "transfer_money": {
            "description": "Send money.",
            "nlu_trigger": [{"intent": "transfer_money"}],
            "steps": [{"action": "action_transfer_money"}],
        }
    }
}


@dataclass
class Bundle:
    directory: Path
    bootstrap: str
    topics: Topics
    group_id: str
    env: dict[str, str]

    @property
    def config(self) -> Path:
        return self.directory / "config.yml"

    @property
    def endpoints(self) -> Path:
        return self.directory / "endpoints.yml"

    @property
    def flows(self) -> Path:
        return self.directory / "flows.yml"


def write_bundle(
    directory: Path,
    bootstrap: str,
    *,
    router: Literal["intent", "llm"] = "intent",
    llm_url: str | None = None,
    nlu_url: str | None = None,
    **kafka: Any,
) -> Bundle:
    """Files for one test: unique topics and group; `kafka` overrides endpoints.yml settings;
    `nlu_url`: Rasa's NLU server, asked for messages without parse_data."""
    directory.mkdir(parents=True, exist_ok=True)
    topics = unique_topics()
    group_id = f"group-{uuid.uuid4().hex[:8]}"
    section: dict[str, Any] = {
        "url": bootstrap,
        "group_id": group_id,
        "topics": topics.model_dump(),
        "partitions": 6,
        "session_timeout": 1,  # Tansu delays a join by half of it
        "commit_interval_ms": 200,
        "shutdown_timeout": 10,
        "rebalance_timeout": 10,
    }
    section.update(kafka)
    endpoints: dict[str, Any] = {"kafka": section}
    if nlu_url is not None:
        endpoints["nlu"] = {"url": nlu_url, "retries": 0, "timeout": 60}
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(PYTHONUNBUFFERED="1", KAFKA_BOOTSTRAP_SERVERS=bootstrap, NO_PROXY="127.0.0.1")
    # No HTTP server unless a test asks for one: several workers run at once (and 8080 may be
    # taken on this machine).
    env["COEXISTENCE_ROUTER_HTTP_PORT"] = "0"
    if router == "llm":
        assert llm_url is not None, "an LLMBasedRouter bundle needs the fake LLM's url"
        endpoints["model_groups"] = [
            {
                "id": "router-llm",
                "models": [
                    {
                        "provider": "openai",
                        "model": LLM_MODEL,
                        "api_base": "${FAKE_LLM_BASE}",
                        "api_key": "${FAKE_LLM_KEY}",
                    }
                ],
            }
        ]
        env.update(FAKE_LLM_BASE=f"{llm_url}/v1", FAKE_LLM_KEY=LLM_KEY)
    bundle = Bundle(directory, bootstrap, topics, group_id, env)
    # JSON is YAML: no quoting surprises in generated files.
    bundle.config.write_text(json.dumps(INTENT_CONFIG if router == "intent" else LLM_CONFIG))
    bundle.endpoints.write_text(json.dumps(endpoints))
    bundle.flows.write_text(json.dumps(FLOWS))
    return bundle


_ASSIGNED = re.compile(r"assigned input partitions \[([0-9, ]*)\]")
_RELEASED = re.compile(r"released input partitions")


class WorkerProcess:
    """One `coexistence-router run` process; its log lines (stderr) can be awaited."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls, bundle: Bundle, name: str = "worker", args: Sequence[str] = ()
    ) -> WorkerProcess:
        """`args`: more options of `run` (after the bundle's files)."""
        process = await asyncio.create_subprocess_exec(
            *COMMAND,
            "run",
            "--config", str(bundle.config),
            "--endpoints", str(bundle.endpoints),
            "--flows", str(bundle.flows),
            *args,
            env=bundle.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(name, process)

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self._notify()
        self._notify()

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    @property
    def exited(self) -> bool:
        return self._reader.done() and self.process.returncode is not None

    @property
    def next_line(self) -> asyncio.Event:
        """Set on the next log line (or at exit). Take it before looking at `lines`, so that a
        line arriving in between is not missed."""
        return self._changed

    async def changed(self) -> None:
        """Returns on the next log line (or at exit)."""
        if not self._reader.done():
            await self._changed.wait()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.lines if regex.search(line))

    async def wait_for_line(self, pattern: str, timeout: float = 30.0, *, after: int = 0) -> str:
        """The first line matching `pattern` among lines[after:]."""
        regex = re.compile(pattern)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for line in self.lines[after:]:
                        if regex.search(line):
                            return line
                    if self.exited:
                        raise AssertionError(f"{self.name} exited before logging {pattern!r}")
                    await self.changed()
        except TimeoutError:
            raise AssertionError(
                f"{self.name} did not log {pattern!r} within {timeout}s:\n{self.output}"
            ) from None

    @property
    def assignment(self) -> set[int] | None:
        """The partitions of its latest assignment; None while it holds none or is released."""
        for line in reversed(self.lines):
            if _RELEASED.search(line):
                return None
            found = _ASSIGNED.search(line)
            if found:
                return {int(n) for n in found.group(1).replace(" ", "").split(",") if n}
        return None

    def signal(self, sig: signal.Signals) -> None:
        if self.process.returncode is None:
            self.process.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        """The exit code, within `timeout`."""
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
            await self._reader
        return code

    async def stop(self, timeout: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        return await self.wait(timeout)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        await self.wait()


async def until_logged(
    workers: Sequence[WorkerProcess], predicate: Callable[[], bool], timeout: float, what: str
) -> None:
    """Wait until `predicate()` holds, re-checked whenever any worker logs a line."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                events = [w.next_line for w in workers if not w.exited]
                if predicate():
                    return
                if not events:
                    raise AssertionError(f"every worker exited before {what}")
                waiters = [asyncio.create_task(event.wait()) for event in events]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
    except TimeoutError:
        logs = "\n".join(f"--- {w.name}\n{w.output}" for w in workers)
        raise AssertionError(f"not {what} within {timeout}s\n{logs}") from None


async def wait_for_balanced_group(
    workers: Sequence[WorkerProcess], partitions: int, timeout: float = 60.0
) -> dict[str, set[int]]:
    """Wait until every worker holds a non-empty share and the shares cover all partitions once.

    Eager rebalancing makes each member log "released" before re-joining, so a stale
    "assigned" line of a member that is mid-rebalance is never counted.
    """

    def balanced() -> bool:
        shares = [w.assignment for w in workers]
        if any(not share for share in shares):
            return False
        union: set[int] = set()
        for share in shares:
            assert share is not None
            if union & share:
                return False
            union |= share
        return union == set(range(partitions))

    await until_logged(workers, balanced, timeout, "a balanced group")
    return {w.name: w.assignment or set() for w in workers}


def value(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    assert record.value is not None
    decoded: dict[str, Any] = orjson.loads(record.value)
    return decoded


@dataclass
class Outputs:
    """Inbox records by message id, in arrival order per inbox partition."""

    records: list[ConsumerRecord[bytes, bytes]]
    by_id: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for record in self.records:
            routed = value(record) | {"topic": record.topic}
            self.by_id.setdefault(routed["message"]["message_id"], []).append(routed)

    def ids(self) -> set[str]:
        return set(self.by_id)

    def duplicated(self) -> dict[str, list[dict[str, Any]]]:
        return {mid: outs for mid, outs in self.by_id.items() if len(outs) > 1}

    def sequences(self) -> dict[tuple[str, str], list[str]]:
        """(inbox topic, sender) -> message ids in the order the inbox holds them.

        One sender's records share a key, hence one inbox partition whose order is the order the
        worker published them in.
        """
        ordered = sorted(self.records, key=lambda r: (r.topic, r.partition, r.offset))
        sequences: dict[tuple[str, str], list[str]] = {}
        for record in ordered:
            message = value(record)["message"]
            sequences.setdefault((record.topic, message["sender_id"]), []).append(
                message["message_id"]
            )
        return sequences


def in_input_order_with_redeliveries(sequence: Iterable[str], input_order: list[str]) -> bool:
    """What at-least-once delivery with per-sender order allows an inbox to hold for a sender.

    New messages appear in input order; a step back re-emits messages already seen (a redelivery
    from the committed offset on), and such restarts never go back before an earlier restart,
    because committed offsets only move forward.
    """
    position = {mid: i for i, mid in enumerate(input_order)}
    seen: set[str] = set()
    previous = last_new = restart = -1
    for mid in sequence:
        at = position[mid]
        if at <= previous:
            if mid not in seen or at < restart:
                return False
            restart = at
        elif mid not in seen:
            if at < last_new:
                return False
            last_new = at
        seen.add(mid)
        previous = at
    return True


def said(prompt: str) -> str:
    """The user message inside a prompt rendered from Rasa's default router template."""
    return prompt.split('The user said: """', 1)[1].split('"""', 1)[0]


class LlmMeter:
    """A pass-through in front of the fake LLM that counts the router's calls in flight, in all
    and per sender (the sender is the first word of the user message, by the tests' convention).

    Workers run in other processes: this is how a test sees which of their calls overlap.
    """

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self.active: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.total = 0
        self.total_peak = 0
        self.calls: list[str] = []  # user messages, in the order their calls started
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.url = ""

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._http is not None
        body = await request.read()
        text = said(orjson.loads(body)["messages"][0]["content"])
        sender = text.split()[0]
        self.calls.append(text)
        self.active[sender] += 1
        self.peak[sender] = max(self.peak[sender], self.active[sender])
        self.total += 1
        self.total_peak = max(self.total_peak, self.total)
        try:
            async with self._http.post(
                self._upstream + request.path_qs,
                data=body,
                headers={"Content-Type": "application/json"},
            ) as upstream:
                answer = await upstream.read()
                return web.Response(
                    body=answer, status=upstream.status, content_type="application/json"
                )
        finally:
            self.active[sender] -= 1
            self.total -= 1

    async def __aenter__(self) -> LlmMeter:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._http is not None
        await self._http.close()
        await self._runner.cleanup()
