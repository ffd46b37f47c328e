"""LLM benchmarks: the gateway against litellm's Router, and the LLMBasedRouter worker end to end.

    python -m tests.benchmarks.bench_llm client --impl gateway|litellm --url URL ...
    python -m tests.benchmarks.bench_llm worker --bootstrap HOST:PORT --url URL ...

Both use three deployments of one model group on the fake LLM (its own process, every call
answered after the scripted latency), `simple-shuffle`, `num_retries: 2`, `allowed_fails: 3`,
`cooldown_time: 5`, and the LLMBasedRouter's request (the Rasa 3.11 prompt, temperature 0,
max_tokens 1, the gpt-4o logit_bias).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from tests.benchmarks.common import (
    emit,
    llm_messages,
    produce_all,
    rusage_cpu,
    start_profiler,
    stop_profiler,
    timed_worker_run,
)
from worker import eventloop

T = TypeVar("T")

DEPLOYMENTS = ("gpt-4o-mini-eu", "gpt-4o-mini-us", "gpt-4o-mini-asia")
GROUP_ID = "router-llm"
CALM_DESCRIPTION = "handles money transfers, card blocking and payee management"
ROUTER_SETTINGS = {
    "routing_strategy": "simple-shuffle",
    "num_retries": 2,
    "allowed_fails": 3,
    "cooldown_time": 5,
}


# ---- loopback only ----------------------------------------------------------------------------


class NetworkGuard:
    """Refuses (and counts) every connection or name lookup that is not for a loopback address:
    the benchmark talks to the fake LLM and the broker only.

    Python's audit hook sees what goes through the socket module (asyncio's own loop, blocking
    clients). uvloop connects and resolves in libuv, where no audit event is raised: on uvloop
    the loop itself is guarded too (`loop_factory`)."""

    def __init__(self) -> None:
        self.refused: list[str] = []

    def install(self) -> None:
        sys.addaudithook(self._hook)

    @staticmethod
    def _loopback(host: object) -> bool:
        if host is None:
            return True
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if not isinstance(host, str):
            return False
        if host in ("localhost", ""):
            return True
        try:
            return ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            return False

    def check(self, event: str, host: object) -> None:
        if not self._loopback(host):
            self.refused.append(f"{event} {host!r}")
            raise PermissionError(f"benchmark: no network beyond loopback ({host!r})")

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.getaddrinfo":
            self.check(event, args[0])
        elif event == "socket.connect":
            address = args[1]
            if isinstance(address, tuple) and address:  # not a unix socket
                self.check(event, address[0])

    def loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop]:
        """The project's loop (worker.eventloop); uvloop's with its connects and lookups
        checked here, since they never reach the audit hook."""
        factory = eventloop.loop_factory()
        if factory is asyncio.new_event_loop:
            return factory
        import uvloop

        guard = self

        class GuardedLoop(uvloop.Loop):
            async def create_connection(
                self, protocol_factory: Any, host: Any = None, port: Any = None, **kw: Any
            ) -> Any:
                if kw.get("sock") is None:
                    guard.check("loop.create_connection", host)
                return await super().create_connection(protocol_factory, host, port, **kw)

            async def getaddrinfo(self, host: Any, port: Any, **kw: Any) -> Any:
                guard.check("loop.getaddrinfo", host)
                return await super().getaddrinfo(host, port, **kw)

            async def sock_connect(self, sock: Any, address: Any) -> None:
                if isinstance(address, tuple) and address:
                    guard.check("loop.sock_connect", address[0])
                await super().sock_connect(sock, address)

            async def create_datagram_endpoint(
                self,
                protocol_factory: Any,
                local_addr: Any = None,
                remote_addr: Any = None,
                **kw: Any,
            ) -> Any:
                if remote_addr is not None:
                    guard.check("loop.create_datagram_endpoint", remote_addr[0])
                return await super().create_datagram_endpoint(
                    protocol_factory, local_addr, remote_addr, **kw
                )

        return GuardedLoop

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=self.loop_factory()) as runner:
            return runner.run(main)


# ---- the model group --------------------------------------------------------------------------


def model_group(url: str) -> Any:
    from worker.llm.model_group import ModelGroup

    return ModelGroup.model_validate(
        {
            "id": GROUP_ID,
            "models": [
                {
                    "provider": "openai",
                    "model": name,
                    "api_base": f"{url}/v1",
                    "api_key": "sk-bench-not-a-secret",
                }
                for name in DEPLOYMENTS
            ],
            "router": ROUTER_SETTINGS,
        }
    )


def router_prompt(text: str) -> str:
    from worker.routing.prompt import RouterPrompt
    from worker.routing.router_config import LLMBasedRouterConfig

    config = LLMBasedRouterConfig.model_validate({"calm_entry": {"sticky": CALM_DESCRIPTION}})
    return RouterPrompt(config).render(text)


Call = Callable[[], Awaitable[str]]


async def gateway_client(url: str, prompt: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from worker.llm.gateway import ModelGroupGateway

    gateway = ModelGroupGateway(model_group(url))

    async def call() -> str:
        return (await gateway.complete(prompt)).text

    return call, gateway.close


async def litellm_client(url: str, prompt: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import litellm
    from litellm import Router

    from worker.llm.router_defaults import router_params

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    litellm.turn_off_message_logging = True
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)

    group = model_group(url)
    router = Router(
        model_list=[
            {
                "model_name": GROUP_ID,
                "litellm_params": {
                    "model": f"openai/{d.model}",
                    "api_base": d.api_base,
                    "api_key": d.api_key.get_secret_value(),
                    "timeout": 7.0,
                },
            }
            for d in group.models
        ],
        **ROUTER_SETTINGS,
    )
    # The same request body the gateway sends (every deployment has the same defaults).
    params = router_params(group.models[0])
    messages = [{"role": "user", "content": prompt}]

    async def call() -> str:
        response = await router.acompletion(model=GROUP_ID, messages=messages, **params)
        return str(response.choices[0].message.content)

    async def close() -> None:
        with contextlib.suppress(Exception):
            await litellm.close_litellm_async_clients()

    return call, close


async def run_client(
    guard: NetworkGuard,
    impl: str,
    url: str,
    seconds: float,
    warmup: float,
    concurrency: int,
    profile: str | None,
) -> dict[str, Any]:
    prompt = router_prompt("can you tell me a joke about bank transfers?")
    factory = gateway_client if impl == "gateway" else litellm_client
    call, close = await factory(url, prompt)
    answers: dict[str, int] = {}
    state = {"measuring": False, "calls": 0, "errors": 0}
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + warmup + seconds
    latencies: list[float] = []

    async def one_caller() -> None:
        while loop.time() < stop_at:
            started = loop.time()
            try:
                text = await call()
            except Exception:  # noqa: BLE001 - counted, never expected
                state["errors"] += 1
                continue
            if state["measuring"]:
                state["calls"] += 1
                answers[text] = answers.get(text, 0) + 1
                latencies.append(loop.time() - started)

    callers = [asyncio.create_task(one_caller()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    profiler = start_profiler(profile)
    state["measuring"] = True
    cpu0, t0 = rusage_cpu(), time.perf_counter()
    await asyncio.sleep(seconds)
    state["measuring"] = False
    cpu1, t1 = rusage_cpu(), time.perf_counter()
    stop_profiler(profiler, profile)
    await asyncio.gather(*callers)
    await close()
    calls = state["calls"]
    latencies.sort()
    return {
        "impl": impl,
        "loop": eventloop.loop_name(loop),
        "calls": calls,
        "seconds": round(t1 - t0, 3),
        "calls_per_s": round(calls / (t1 - t0), 1),
        "cpu_ms_per_call": round((cpu1 - cpu0) * 1000 / max(1, calls), 3),
        "latency_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "errors": state["errors"],
        "answers": answers,
        "refused_network": guard.refused[:5],
        "refused_network_count": len(guard.refused),
    }


# ---- the LLMBasedRouter worker end to end -----------------------------------------------------


async def run_worker(
    guard: NetworkGuard,
    bootstrap: str,
    url: str,
    messages: int,
    senders: int,
    in_flight: int,
    partitions: int,
    profile: str | None,
) -> dict[str, Any]:
    from worker.config.endpoints import KafkaSettings, Topics
    from worker.kafka.topics import ensure_topics
    from worker.llm.gateway import GatewayRegistry
    from worker.routing.router_config import LLMBasedRouterConfig
    from worker.routing.rules import Assistant
    from worker.runtime.coexistence_router import CoexistenceRouter
    from worker.runtime.settings import RuntimeSettings

    run = uuid.uuid4().hex[:8]
    topics = Topics(
        input=f"llm-in-{run}",
        calm=f"llm-calm-{run}",
        nlu=f"llm-nlu-{run}",
        sessions=f"llm-sessions-{run}",
        dlq=f"llm-dlq-{run}",
    )
    connection = {"bootstrap_servers": bootstrap}
    await ensure_topics(
        connection, topics, create=True, partitions=partitions, replication_factor=1
    )
    ends = await produce_all(bootstrap, topics.input, llm_messages(messages, senders))
    config = LLMBasedRouterConfig.model_validate({"calm_entry": {"sticky": CALM_DESCRIPTION}})
    gateways = GatewayRegistry({GROUP_ID: model_group(url)})
    router = CoexistenceRouter(Assistant(config), gateways=gateways, model_group=GROUP_ID)
    kafka = KafkaSettings(
        url=[bootstrap],
        topics=topics,
        group_id=f"bench-llm-{run}",
        partitions=partitions,
        max_in_flight=in_flight,
        commit_interval_ms=200,
        session_timeout=1.0,
    )
    settings = RuntimeSettings.from_kafka(kafka)
    try:
        t0, t1, cpu = await timed_worker_run(settings, router, ends, timeout=600, profile=profile)
    finally:
        await router.close()
        await gateways.close()
    rate = messages / (t1 - t0)
    bound = in_flight / LLM_LATENCY
    return {
        "loop": eventloop.loop_name(asyncio.get_running_loop()),
        "messages": messages,
        "senders": senders,
        "in_flight": in_flight,
        "seconds": round(t1 - t0, 3),
        "messages_per_s": round(rate, 1),
        "littles_law_bound": bound,
        "llm_bound_ratio": round(rate / bound, 3),
        "cpu_ms_per_message": round(cpu * 1000 / messages, 3),
        "refused_network_count": len(guard.refused),
    }


LLM_LATENCY = 0.05


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    client = sub.add_parser("client")
    client.add_argument("--impl", choices=("gateway", "litellm"), required=True)
    client.add_argument("--url", required=True)
    client.add_argument("--seconds", type=float, default=10.0)
    client.add_argument("--warmup", type=float, default=2.0)
    client.add_argument("--concurrency", type=int, default=100)
    client.add_argument("--profile")
    worker = sub.add_parser("worker")
    worker.add_argument("--bootstrap", required=True)
    worker.add_argument("--url", required=True)
    worker.add_argument("--messages", type=int, default=20000)
    worker.add_argument("--senders", type=int, default=5000)
    worker.add_argument("--in-flight", type=int, default=100)
    worker.add_argument("--partitions", type=int, default=6)
    worker.add_argument("--profile")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    guard = NetworkGuard()
    guard.install()
    if args.command == "client":
        result = guard.run(
            run_client(
                guard,
                args.impl,
                args.url,
                args.seconds,
                args.warmup,
                args.concurrency,
                args.profile,
            )
        )
    else:
        result = guard.run(
            run_worker(
                guard,
                args.bootstrap,
                args.url,
                args.messages,
                args.senders,
                args.in_flight,
                args.partitions,
                args.profile,
            )
        )
    emit(result)


if __name__ == "__main__":
    main()
