"""`run` tunes the cycle collector once start-up is done (worker.collector)."""

from __future__ import annotations

import gc

from worker import collector


def test_tuned_freezes_start_up_raises_only_the_young_threshold_and_undoes_it_after() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with collector.tuned():
        assert gc.get_threshold() == (collector.GEN0_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > frozen
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
