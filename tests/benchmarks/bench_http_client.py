"""CPU per call of the gateway's HTTP/1.1 client (worker/llm/http.py), and of candidate parsers.

    python -m tests.benchmarks.bench_http_client client [--headers small|openai] [--rounds 3]
    python -m tests.benchmarks.bench_http_client parsers [--headers small|openai]

`client`: 100 concurrent callers POST 1 KB of JSON over keep-alive connections to a loopback
server in another process (which answers every request with the same bytes), on uvloop; a round
is 20,000 calls, the figure is the client process's CPU time (user + system, not wall time) per
call, median of the rounds after one warm-up round (client and server pinned to two CPUs). `parsers`: the CPU per response of parsing
the same answer bytes with httptools (llhttp) and h11, no sockets.

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


def client_cpu(headers: str, rounds: int) -> dict[str, Any]:
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
        per_call = eventloop.run(_measure_client(port.value, rounds))
    finally:
        stop.set()
        server.join(10)
    import worker.llm.http as http

    return {
        "client": http.__file__,
        "headers": headers,
        "cpu_us_per_call": [round(x * 1e6, 1) for x in per_call],
        "median_us": round(statistics.median(per_call) * 1e6, 1),
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
    parser.add_argument("what", choices=["client", "parsers"])
    parser.add_argument("--headers", choices=sorted(HEADERS), default="small")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.what == "client":
        result = client_cpu(args.headers, args.rounds)
    else:
        result = parser_cpu(args.headers)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
