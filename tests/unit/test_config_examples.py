"""The bundled example configuration (the demo's) loads and validates."""

from __future__ import annotations

import pytest

from worker.config.app_config import load_app_config, validate_files
from worker.config.examples import ExampleRouter, bundled_example
from worker.routing.router_config import IntentBasedRouterConfig, LLMBasedRouterConfig

DEMO_ENVIRON = {"FAKE_LLM_BASE": "http://127.0.0.1:8765/v1", "FAKE_LLM_KEY": "fake-key"}


@pytest.mark.parametrize("router", ["intent", "llm"])
def test_bundled_example_is_valid(router: ExampleRouter) -> None:
    paths = bundled_example(router)
    warnings: list[str] = []
    problems = validate_files(
        paths.config,
        [paths.endpoints],
        paths.flows,
        DEMO_ENVIRON,
        domain=paths.domain,
        warnings=warnings,
    )
    assert problems == []
    assert warnings == []


def test_intent_example() -> None:
    paths = bundled_example("intent")
    app = load_app_config(
        paths.config, paths.endpoints, paths.flows, DEMO_ENVIRON, domain=paths.domain
    )
    assert isinstance(app.router, IntentBasedRouterConfig)
    assert app.router.nlu_entry.non_sticky
    assert app.router.calm_entry.sticky
    assert app.llm_group is None
    # The add_payee flow triggers only from confidence 0.8 on.
    assert app.assistant.triggers.calm("add_payee", 0.8)
    assert not app.assistant.triggers.calm("add_payee", 0.5)
    # The domain's session_config keeps the routing across Rasa's session expiry.
    assert app.domain is not None and app.session_ttl == 0


def test_llm_example() -> None:
    paths = bundled_example("llm")
    app = load_app_config(paths.config, paths.endpoints, paths.flows, DEMO_ENVIRON)
    assert isinstance(app.router, LLMBasedRouterConfig)
    assert app.llm_group is not None
    assert app.llm_group.id == "router-llm"
    assert app.llm_group.settings.routing_strategy == "simple-shuffle"
    assert {m.api_base for m in app.llm_group.models} == {DEMO_ENVIRON["FAKE_LLM_BASE"]}
    assert app.endpoints.kafka.topics.input == "user-messages"


def test_demo_broker_comes_from_the_environment() -> None:
    paths = bundled_example("intent")
    environ = DEMO_ENVIRON | {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:39092"}
    app = load_app_config(paths.config, paths.endpoints, paths.flows, environ)
    assert app.endpoints.kafka.url == ["127.0.0.1:39092"]
