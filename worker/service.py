"""One worker process: configuration in, a running consumer-group member out.

Signals: SIGTERM/SIGINT drain, commit and leave the group; SIGHUP re-reads endpoints.yml and swaps
the model groups (an invalid file is refused and the running groups kept).

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
from worker.routing.router_config import IntentBasedRouterConfig
from worker.runtime.coexistence_router import CoexistenceRouter
from worker.runtime.nlu_client import NluServer
from worker.runtime.settings import RuntimeSettings
from worker.runtime.worker import RoutingWorker

log = logging.getLogger(__name__)


def runtime_settings(app: AppConfig) -> RuntimeSettings:
    kafka = app.endpoints.kafka
    return RuntimeSettings.from_kafka(kafka, session_ttl=app.session_ttl)


def router_groups(app: AppConfig) -> dict[str, ModelGroup]:
    """The model groups the router calls: only the LLMBasedRouter's own group."""
    return {app.llm_group.id: app.llm_group} if app.llm_group is not None else {}


def build_router(app: AppConfig, gateways: GatewayRegistry | None) -> CoexistenceRouter:
    nlu_endpoint = app.endpoints.nlu
    nlu = None
    if nlu_endpoint is not None and isinstance(app.router, IntentBasedRouterConfig):
        nlu = NluServer(
            nlu_endpoint.url,
            token=nlu_endpoint.token.get_secret_value() if nlu_endpoint.token else None,
            token_name=nlu_endpoint.token_name,
            timeout=nlu_endpoint.timeout,
            retries=nlu_endpoint.retries,
        )
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
        self.router = build_router(app, self.gateways)
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
        """Re-read the configuration files; apply new model groups, or keep the running ones."""
        try:
            fresh = reload_app_config(self.app, self._environ)
        except ConfigError as error:
            log.error(
                "reload refused, keeping the running configuration: %s",
                " | ".join(error.problems),
            )
            return False
        if (
            fresh.endpoints.kafka != self.app.endpoints.kafka
            or fresh.router != self.app.router
            or fresh.flows.flows != self.app.flows.flows
            or fresh.domain != self.app.domain
        ):
            log.warning(
                "kafka:, config.yml, flows and domain changes take effect only after a restart"
            )
        if self.gateways is not None:
            try:
                self.gateways.replace(router_groups(fresh))
            except ValueError as error:
                log.error("reload refused, keeping the running model groups: %s", error)
                return False
        self.app = fresh
        log.info("reloaded %s", fresh.paths.endpoints)
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
    with contextlib.suppress(asyncio.CancelledError):
        await service.run()
