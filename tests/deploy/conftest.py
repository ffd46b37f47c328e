"""Fixtures shared by the deployment tests (compose and Kubernetes)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def validate() -> Callable[[Iterable[str], Mapping[str, str]], subprocess.CompletedProcess[str]]:
    """`coexistence-router validate ARGS` in a process of its own, from the project's root, with
    `env` and the PATH as the only environment: what a deployment's files and arguments give."""

    def run(args: Iterable[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", "validate", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
            cwd=ROOT,
        )

    return run
