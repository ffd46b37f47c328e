"""Loading Rasa's own configuration files: config.yml, endpoints.yml, flows and domain."""

from worker.config.app_config import (
    AppConfig,
    ConfigPaths,
    load_app_config,
    reload_app_config,
    validate_files,
)
from worker.config.domain import load_domain
from worker.config.endpoints import Endpoints, KafkaSettings, NluEndpoint, Topics, load_endpoints
from worker.config.errors import ConfigError
from worker.config.flows import load_flows
from worker.config.rasa_config import load_router_config

__all__ = [
    "AppConfig",
    "ConfigError",
    "ConfigPaths",
    "Endpoints",
    "KafkaSettings",
    "NluEndpoint",
    "Topics",
    "load_app_config",
    "load_endpoints",
    "load_domain",
    "load_flows",
    "load_router_config",
    "reload_app_config",
    "validate_files",
]
