"""The worker's HTTP endpoints, served by aiohttp on the worker's event loop.

    GET /metrics   Prometheus text format (OpenMetrics when the scraper asks for it), from the
                   worker's own registry, by prometheus_client's aiohttp handler
    GET /healthz   200 while the worker's loops run, 503 when the fetch loop is stuck
    GET /readyz    200 while in the group, every assigned partition restored and the broker
                   answering; 503 otherwise

The probes answer a JSON object, `{"ok": …, "reason": "…"}`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from worker.ops.health import BrokerProbe, Health, Verdict
from worker.ops.metrics import RouterMetrics

log = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 8080
DEFAULT_HTTP_HOST = "0.0.0.0"  # noqa: S104 - a pod's probes and Prometheus come from outside
HTTP_PORT_VARIABLE = "COEXISTENCE_ROUTER_HTTP_PORT"


@dataclass(frozen=True)
class HttpSettings:
    """Where the endpoints are served; port 0: one the system picks (`run` has no server at
    all with `--http-port 0`)."""

    host: str = DEFAULT_HTTP_HOST
    port: int = DEFAULT_HTTP_PORT


class HttpPortInUse(RuntimeError):
    """The configured address is taken: `run` refuses to start, before touching Kafka."""


class OpsServer:
    """/metrics, /healthz and /readyz on `host`:`port` (port 0 here: one the system picks)."""

    def __init__(
        self,
        host: str,
        port: int,
        health: Health,
        metrics: RouterMetrics,
        broker: BrokerProbe | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._health = health
        self._metrics = metrics
        self._broker = broker
        self._runner: web.AppRunner | None = None
        self._probing: asyncio.Task[None] | None = None
        self.port = port  # the port bound, once started

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def _app(self) -> web.Application:
        scrape = make_aiohttp_handler(self._metrics.registry)

        async def metrics(request: web.Request) -> web.StreamResponse:
            await self._metrics.refresh()
            return await scrape(request)

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", _probe(self._health.liveness))
        app.router.add_get("/readyz", _probe(self._health.readiness))
        return app

    async def start(self) -> None:
        """Raises HttpPortInUse when the address is taken."""
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise HttpPortInUse(f"{self._host}:{self._port} is already in use") from None
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        if self._broker is not None:
            self._probing = asyncio.create_task(self._broker.run(), name="broker-probe")
        log.info("serving /metrics, /healthz and /readyz on %s", self.url)

    async def stop(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
            await asyncio.gather(self._probing, return_exceptions=True)
            self._probing = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _probe(verdict: Callable[[], Verdict]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def answer(request: web.Request) -> web.Response:
        result = verdict()
        return web.Response(
            status=200 if result.ok else 503,
            body=orjson.dumps(result.body()),
            content_type="application/json",
        )

    return answer
