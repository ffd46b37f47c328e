"""The project's FakeLLMServer in a process of its own, for the benchmarks.

Every deployment (any `model` / Azure deployment name) answers `--answer` `--latency` seconds
after the request arrived. Prints `listening URL` once up; stops when its stdin closes. The
server's request log is cleared every second, so a long run does not grow it without bound.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from worker import eventloop
from worker.fake_llm import DEFAULT_SCRIPT, FakeLLMServer


async def serve(latency: float, answer: str) -> None:
    server = FakeLLMServer("127.0.0.1", 0)
    server.script(DEFAULT_SCRIPT, answer=answer, latency=latency)
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        while await reader.read(4096):
            pass
        closed.set()

    async with server:
        print(f"listening {server.url}", flush=True)
        watcher = asyncio.create_task(watch_stdin())
        while not closed.is_set():
            try:
                await asyncio.wait_for(closed.wait(), 1.0)
            except TimeoutError:
                server.clear_requests()
        watcher.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--answer", default="B")
    args = parser.parse_args()
    eventloop.run(serve(args.latency, args.answer))


if __name__ == "__main__":
    main()
