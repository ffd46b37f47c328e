"""CPU per call of the gateway's HTTP/1.1 client (worker/llm/http.py), and of candidate parsers.

    python -m tests.benchmarks.bench_http_client client [--headers small|openai] [--rounds 3]
    python -m tests.benchmarks.bench_http_client compare OTHER/worker/llm/http.py [--rounds 10]
    python -m tests.benchmarks.bench_http_client parsers [--headers small|openai]

`client`: 100 concurrent callers POST 1 KB of JSON over keep-alive connections to a loopback
server in another process (which answers every request with the same bytes), on uvloop; a round
is 20,000 calls, the figure is the client process's CPU time (user + system, not wall time) per
call, median of the rounds after one warm-up round (client and server pinned to two CPUs).
`parsers`: the CPU per response of parsing the same answer bytes with httptools (llhttp) and
h11, no sockets.

`compare`: this client and another version of it (its http.py loaded from the path given, which
must import with this checkout's packages), round after round in one process against one
server, so that the noise of a shared machine falls on both alike; paired differences printed.

`--headers small` answers as the fake LLM does (aiohttp's four headers); `openai` with the
twenty-odd headers api.openai.com sends. The client it measures is whatever `worker` is
importable: run it with PYTHONPATH pointing at another checkout to measure that one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
from typing import Any

from worker import eventloop

CONCURRENCY = 100
CALLS_PER_ROUND = 20_000
REQUEST_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x" * 880}],
        "temperature": 0.0,
        "max_tokens": 1,
    },
    separators=(",", ":"),
).encode()
ANSWER_BODY = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,'
    b'"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"A"},"finish_reason":"length"}],'
    b'"usage":{"prompt_tokens":220,"completion_tokens":1,"total_tokens":221}}'
)
HEADERS = {
    "small": [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Content-Length", str(len(ANSWER_BODY))),
        ("Date", "Mon, 30 Nov 2026 19:00:00 GMT"),
        ("Server", "Python/3.11 aiohttp/3.14.5"),
    ],
    "openai": [
        ("Date", "Mon, 30 Nov 2026 19:00:00 GMT"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(ANSWER_BODY))),
        ("Connection", "keep-alive"),
        ("access-control-expose-headers", "X-Request-ID"),
        ("openai-organization", "user-abcdefghijklmnopqrstuvwx"),
        ("openai-processing-ms", "181"),
        ("openai-version", "2020-10-01"),
        ("x-envoy-upstream-service-time", "186"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "10000000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "9999780"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "1ms"),
        ("x-request-id", "req_0123456789abcdef0123456789abcdef"),
        ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
        ("cf-cache-status", "DYNAMIC"),
        ("set-cookie", "__cf_bm=abcdefghijklmnopqrstuvwxyz0123456789; path=/; HttpOnly"),
        ("X-Content-Type-Options", "nosniff"),
        ("Server", "cloudflare"),
        ("CF-RAY", "8e0a1b2c3d4e5f60-FRA"),
        ("alt-svc", 'h3=":443"; ma=86400'),
    ],
}


def answer_bytes(headers: str) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in HEADERS[headers])
    return b"HTTP/1.1 200 OK\r\n" + head.encode("latin-1") + b"\r\n" + ANSWER_BODY


# ---- the loopback server (its own process: its CPU is not the client's) ----------------------


class _Answering(asyncio.Protocol):
    """Answers every complete request (head + Content-Length body) with the same bytes."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        answers = 0
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(buffer[:end]).lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
            if len(buffer) < end + 4 + length:
                break
            del buffer[: end + 4 + length]
            answers += 1
        if answers and self._transport is not None:
            self._transport.write(self._answer * answers)


def _pin(cpu: int) -> None:
    """Run this process on one CPU (client and server on two different ones), where it can."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[cpu]})


def _serve(answer: bytes, port: Any, stop: Any) -> None:
    _pin(1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Answering(answer), "127.0.0.1", 0)
        port.value = server.sockets[0].getsockname()[1]
        while not stop.is_set():
            await asyncio.sleep(0.1)
        server.close()

    eventloop.run(main())


# ---- the client ------------------------------------------------------------------------------


async def _round(client: Any, target: Any, headers: dict[str, str], calls: int) -> float:
    left = calls

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            response = await client.post(target, headers, REQUEST_BODY, 10.0)
            assert response.status == 200 and response.body == ANSWER_BODY

    started = time.process_time()
    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    return (time.process_time() - started) / calls


async def _measure_client(port: int, rounds: int) -> list[float]:
    from yarl import URL

    from worker.llm.http import HttpClient, Target

    target = Target(URL(f"http://127.0.0.1:{port}/v1/chat/completions"))
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": "Bearer sk-bench-0000000000000000",
    }
    client = HttpClient()
    try:
        await _round(client, target, headers, CALLS_PER_ROUND)  # warm-up: connections, caches
        return [await _round(client, target, headers, CALLS_PER_ROUND) for _ in range(rounds)]
    finally:
        await client.close()


async def _compare_clients(port: int, rounds: int, other: Any) -> dict[str, list[float]]:
    from yarl import URL

    import worker.llm.http as this

    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": "Bearer sk-bench-0000000000000000",
    }
    url = URL(f"http://127.0.0.1:{port}/v1/chat/completions")
    clients = {
        "this": (this.HttpClient(), this.Target(url)),
        "other": (other.HttpClient(), other.Target(url)),
    }
    try:
        for client, target in clients.values():
            await _round(client, target, headers, CALLS_PER_ROUND)  # warm-up
        per_call: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(rounds):
            for name, (client, target) in clients.items():
                per_call[name].append(await _round(client, target, headers, CALLS_PER_ROUND))
        return per_call
    finally:
        for client, _ in clients.values():
            await client.close()


def _with_server(headers: str, measure: Any) -> Any:
    context = multiprocessing.get_context("spawn")
    port = context.Value("i", 0)
    stop = context.Event()
    server = context.Process(target=_serve, args=(answer_bytes(headers), port, stop), daemon=True)
    server.start()
    try:
        deadline = time.monotonic() + 30
        while port.value == 0:
            if time.monotonic() > deadline or not server.is_alive():
                raise RuntimeError("the loopback server did not start")
            time.sleep(0.05)
        _pin(0)
        return eventloop.run(measure(port.value))
    finally:
        stop.set()
        server.join(10)


def client_cpu(headers: str, rounds: int) -> dict[str, Any]:
    per_call = _with_server(headers, lambda port: _measure_client(port, rounds))
    import worker.llm.http as http

    return {
        "client": http.__file__,
        "headers": headers,
        "cpu_us_per_call": [round(x * 1e6, 1) for x in per_call],
        "median_us": round(statistics.median(per_call) * 1e6, 1),
    }


def compare_cpu(other_path: str, headers: str, rounds: int) -> dict[str, Any]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("other_http_client", other_path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {other_path}")
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    per_call = _with_server(headers, lambda port: _compare_clients(port, rounds, other))
    this, theirs = per_call["this"], per_call["other"]
    return {
        "headers": headers,
        "this_us": [round(x * 1e6, 1) for x in this],
        "other_us": [round(x * 1e6, 1) for x in theirs],
        "this_median_us": round(statistics.median(this) * 1e6, 1),
        "other_median_us": round(statistics.median(theirs) * 1e6, 1),
        "median_paired_difference_us": round(
            statistics.median(a - b for a, b in zip(this, theirs, strict=True)) * 1e6, 1
        ),
    }


# ---- parsers alone ---------------------------------------------------------------------------


def _parse_httptools(data: bytes, n: int) -> float:
    import httptools

    class Sink:
        def __init__(self) -> None:
            self.fields: list[tuple[bytes, bytes]] = []
            self.body = bytearray()
            self.done = False

        def on_header(self, name: bytes, value: bytes) -> None:
            self.fields.append((name, value))

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            self.done = True

    sink = Sink()
    parser = httptools.HttpResponseParser(sink)
    started = time.process_time()
    for _ in range(n):
        sink.fields = []
        sink.body = bytearray()
        parser.feed_data(data)
        assert sink.done
    return (time.process_time() - started) / n


def _parse_h11(data: bytes, n: int) -> float:
    import h11

    # One connection for every exchange, as a keep-alive client would use it.
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")]
    )
    started = time.process_time()
    for _ in range(n):
        connection.send(request)
        connection.send(h11.EndOfMessage())
        connection.receive_data(data)
        body = bytearray()
        while True:
            event = connection.next_event()
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif event is h11.NEED_DATA:
                raise AssertionError("incomplete")
        connection.start_next_cycle()
    return (time.process_time() - started) / n


def parser_cpu(headers: str) -> dict[str, Any]:
    data = answer_bytes(headers)
    n = 50_000
    results: dict[str, Any] = {"headers": headers}
    for name, parse in (("httptools", _parse_httptools), ("h11", _parse_h11)):
        parse(data, n // 10)
        runs = [parse(data, n) for _ in range(3)]
        results[f"{name}_us_per_response"] = round(statistics.median(runs) * 1e6, 2)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("what", choices=["client", "compare", "parsers"])
    parser.add_argument("other", nargs="?", help="compare: the other version's http.py")
    parser.add_argument("--headers", choices=sorted(HEADERS), default="small")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    if args.what == "client":
        result = client_cpu(args.headers, args.rounds or 3)
    elif args.what == "compare":
        if not args.other:
            parser.error("compare needs the path of the other version's http.py")
        result = compare_cpu(args.other, args.headers, args.rounds or 10)
    else:
        result = parser_cpu(args.headers)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
