"""One worker process: configuration in, a running consumer-group member out.

Signals: SIGTERM/SIGINT drain, commit and leave the group; SIGHUP reloads the configuration.

A reload builds a whole new routing configuration — the router's flows, domain and prompt, the
gateways of its model groups — and swaps it in at once, between two decisions: a decision that
started before finishes on the old one (its LLM call on the old gateways, fallbacks included).
What cannot be applied live (the router's block in config.yml, `kafka:`, `nlu:`, the idle expiry
of sessions) refuses the whole reload with a log line, as does an invalid file: the running
configuration stays, whole.

Operations (worker.ops): with `http`, the metrics observe the worker and its gateways and the
HTTP endpoints run beside it; with the `OTEL_*` variables (and the otel extra), so do traces.
Without them nothing of either is attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from contracts.models import UserMessage
from worker import collector
from worker.config.app_config import AppConfig, load_app_config, reload_app_config
from worker.config.errors import ConfigError
from worker.llm.gateway import GatewayFactory, GatewayRegistry, ModelGroupGateway
from worker.llm.model_group import ModelGroup
from worker.llm.observer import AttemptObserver, AttemptObservers
from worker.llm.router_defaults import router_params
from worker.ops.health import BrokerProbe, Health
from worker.ops.metrics import RouterMetrics
from worker.ops.server import HttpSettings, OpsServer
from worker.ops.tracing import tracing_from_environment
from worker.rasa.releases import RasaVersion
from worker.routing.decision import RoutingDecision
from worker.routing.router_config import IntentBasedRouterConfig, LLMBasedRouterConfig, RouterConfig
from worker.routing.session import StickySession
from worker.runtime.coexistence_router import CoexistenceRouter
from worker.runtime.nlu_client import NluServer
from worker.runtime.settings import RuntimeSettings
from worker.runtime.worker import RoutingWorker

log = logging.getLogger(__name__)


def runtime_settings(app: AppConfig) -> RuntimeSettings:
    kafka = app.endpoints.kafka
    return RuntimeSettings.from_kafka(kafka, session_ttl=app.session_ttl)


def router_groups(app: AppConfig) -> dict[str, ModelGroup]:
    """The model groups the router calls: its own and the groups its fallbacks reach."""
    return app.router_groups


def nlu_server(app: AppConfig) -> NluServer | None:
    nlu_endpoint = app.endpoints.nlu
    if nlu_endpoint is None or not isinstance(app.router, IntentBasedRouterConfig):
        return None
    return NluServer(
        nlu_endpoint.url,
        token=nlu_endpoint.token.get_secret_value() if nlu_endpoint.token else None,
        token_name=nlu_endpoint.token_name,
        timeout=nlu_endpoint.timeout,
        retries=nlu_endpoint.retries,
    )


def build_router(
    app: AppConfig, gateways: GatewayRegistry | None, nlu: NluServer | None = None
) -> CoexistenceRouter:
    return CoexistenceRouter(
        app.assistant,
        nlu=nlu,
        gateways=gateways,
        model_group=app.llm_group.id if app.llm_group is not None else None,
    )


SERVICE_NAME = "coexistence-router"  # traces' service.name unless OTEL_SERVICE_NAME says


def _gateway_factory(app: AppConfig, observer: AttemptObserver | None) -> GatewayFactory:
    """Gateways whose requests carry the selected Rasa release's router defaults."""
    params = partial(router_params, llm=app.rasa.behaviour.llm)
    return lambda group, state: ModelGroupGateway(
        group, state=state, params=params, observer=observer
    )


def _without_prompt_text(router: RouterConfig) -> RouterConfig:
    # The prompt file's content reloads; config.yml itself (keys, the file's name) does not.
    if isinstance(router, LLMBasedRouterConfig):
        return router.model_copy(update={"prompt_text": None})
    return router


def not_live(current: AppConfig, fresh: AppConfig) -> list[str]:
    """What differs between two configurations that a reload cannot apply live."""
    differences = []
    if _without_prompt_text(fresh.router) != _without_prompt_text(current.router):
        differences.append(f"the router in {fresh.paths.config}")
    if fresh.endpoints.kafka != current.endpoints.kafka:
        differences.append(f"kafka: in {fresh.paths.endpoints}")
    elif fresh.session_ttl != current.session_ttl:  # the domain's session_config changed it
        differences.append(f"session_config in {fresh.paths.domain} (the idle expiry)")
    if fresh.endpoints.nlu != current.endpoints.nlu:
        differences.append(f"nlu: in {fresh.paths.endpoints}")
    return differences


class LiveRouter(CoexistenceRouter):
    """The router the worker holds for its whole life: each decision is made by the routing
    configuration current when it starts (`swap` replaces it between two decisions)."""

    def __init__(self, current: CoexistenceRouter) -> None:
        # No CoexistenceRouter.__init__: every decision is the current router's.
        self._current = current

    @property
    def current(self) -> CoexistenceRouter:
        return self._current

    def swap(self, fresh: CoexistenceRouter) -> None:
        self._current = fresh

    def decide_now(
        self, session: StickySession | None, message: UserMessage
    ) -> RoutingDecision | None:
        return self._current.decide_now(session, message)

    async def decide(self, session: StickySession | None, message: UserMessage) -> RoutingDecision:
        return await self._current.decide(session, message)

    async def close(self) -> None:
        await self._current.close()


class RouterService:
    """The worker with its router, gateways and signal handling, for `run` and `demo`."""

    def __init__(
        self,
        app: AppConfig,
        environ: Mapping[str, str],
        settings: RuntimeSettings | None = None,
        *,
        http: HttpSettings | None = None,
    ) -> None:
        self.app = app
        self._environ = environ
        settings = settings or runtime_settings(app)
        self.tracing = tracing_from_environment(environ, SERVICE_NAME)
        self.metrics = RouterMetrics(lambda: self.worker.status()) if http is not None else None
        self.gateways = (
            GatewayRegistry(
                router_groups(app), factory=_gateway_factory(app, self._attempt_observer())
            )
            if app.llm_group is not None
            else None
        )
        # One NLU client for the process: `nlu:` does not reload.
        self._nlu = nlu_server(app)
        self.router = LiveRouter(build_router(app, self.gateways, self._nlu))
        self.worker = RoutingWorker(
            settings,
            self.router,
            observer=self.metrics.runtime if self.metrics is not None else None,
            tracing=self.tracing,
        )
        self.http: OpsServer | None = None
        if http is not None and self.metrics is not None:
            self.metrics.watch(self.gateways)
            probe = BrokerProbe(settings.connection)
            health = Health(self.worker.status, probe)
            self.http = OpsServer(http.host, http.port, health, self.metrics, probe)
        self.stop = asyncio.Event()

    def _attempt_observer(self) -> AttemptObserver | None:
        """What sees the gateways' attempts: the metrics, the traces, both or nothing."""
        watching: list[AttemptObserver] = []
        if self.metrics is not None:
            watching.append(self.metrics.gateways)
        if self.tracing is not None:
            watching.append(self.tracing)
        if len(watching) > 1:
            return AttemptObservers(*watching)
        return watching[0] if watching else None

    def reload(self) -> bool:
        """Re-read the configuration files and swap in the new routing configuration whole, or
        keep the running one whole (an invalid file, a change that cannot be applied live)."""
        try:
            fresh = reload_app_config(self.app, self._environ)
        except ConfigError as error:
            log.error(
                "reload refused, keeping the running configuration: %s",
                " | ".join(error.problems),
            )
            return False
        differences = not_live(self.app, fresh)
        if differences:
            log.error(
                "reload refused, keeping the running configuration: %s changed, which takes "
                "effect only after a restart",
                "; ".join(differences),
            )
            return False
        if self.gateways is not None:
            try:
                # Builds every new gateway first: a group that cannot be built changes nothing.
                self.gateways.replace(router_groups(fresh))
            except (ValueError, KeyError) as error:
                log.error("reload refused, keeping the running configuration: %s", error)
                return False
        # No await since the gateways were replaced: no decision sees half of each.
        self.router.swap(build_router(fresh, self.gateways, self._nlu))
        self.app = fresh
        log.info(
            "reloaded %s, %s, the flows and the domain", fresh.paths.endpoints, fresh.paths.config
        )
        return True

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        log.info("%s: draining in-flight messages, committing, leaving the group", sig.name)
        self.stop.set()

    async def run(self) -> None:
        """Serve the HTTP endpoints (HttpPortInUse before anything touches Kafka), then run
        the worker until `stop`."""
        try:
            if self.http is not None:
                await self.http.start()
            await self.worker.run(self.stop)
        finally:
            if self.http is not None:
                await self.http.stop()
            await self.router.close()
            if self.gateways is not None:
                await self.gateways.close()
            if self.tracing is not None:
                await self.tracing.close()


async def serve(
    config: str,
    endpoints: str,
    flows: str | None,
    environ: Mapping[str, str],
    *,
    domain: str | None,
    rasa: RasaVersion,
    http: HttpSettings | None = None,
) -> None:
    """`coexistence-router run`: raises ConfigError before touching Kafka when a file is bad,
    HttpPortInUse when the HTTP port is taken."""
    app = load_app_config(
        Path(config),
        Path(endpoints),
        Path(flows) if flows else None,
        environ,
        domain=Path(domain) if domain else None,
        rasa=rasa,
    )
    log.info("routing as %s does (releases %s of the table)", app.rasa, app.rasa.behaviour.releases)
    service = RouterService(app, environ, http=http)
    service.install_signal_handlers()
    collector.tune()  # start-up is done: what it made stays out of the collector's passes
    with contextlib.suppress(asyncio.CancelledError):
        await service.run()
