"""settle_heap: what it changes in the collector (the CLI's choice of it: tests/unit/infertide/test_settings.py)."""

import gc

import pytest

from topologies.host.heap import YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def collector_restored():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_freezes_the_heap_and_raises_only_the_young_threshold(collector_restored):
    gc.unfreeze()
    _, older, oldest = gc.get_threshold()
    survivor = [{"held": i} for i in range(100)]  # alive now: frozen with the rest

    settle_heap()

    assert gc.get_freeze_count() > len(survivor)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, older, oldest)
    assert not any(o is survivor[0] for o in gc.get_objects())  # tracked still, but no pass walks it
