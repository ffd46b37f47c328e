"""`run` tunes the cycle collector once start-up is done (worker.collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from worker import collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_tune_freezes_start_up_and_raises_only_the_young_threshold() -> None:
    _, gen1, gen2 = gc.get_threshold()
    collector.tune()
    assert gc.get_threshold() == (collector.GEN0_THRESHOLD, gen1, gen2)
    assert gc.get_freeze_count() > 0
