"""The example configuration shipped in `worker/examples/`, run by `coexistence-router demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from worker.config.app_config import ConfigPaths

ExampleRouter = Literal["intent", "llm"]


def examples_dir() -> Path:
    # The demo hands these paths to the same loaders as user files, so they must be real files:
    # true for a source checkout and for an installed wheel (pip never runs from a zip).
    # importlib.resources is avoided: setuptools' editable finder can turn `worker` into a
    # namespace package, which it cannot serve.
    return Path(__file__).resolve().parent.parent / "examples"


def bundled_example(router: ExampleRouter) -> ConfigPaths:
    """config.yml of the chosen router, the shared endpoints.yml, flows directory and domain.

    endpoints.yml needs FAKE_LLM_BASE and FAKE_LLM_KEY in the environment (the demo's fake LLM
    server), and KAFKA_BOOTSTRAP_SERVERS when the broker is not on localhost:9092.
    """
    root = examples_dir()
    return ConfigPaths(
        config=root / router / "config.yml",
        endpoints=root / "endpoints.yml",
        flows=root / "flows",
        domain=root / "domain.yml",
    )
