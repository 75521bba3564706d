"""settle_heap: what it changes in the collector, and INFERTIDE_GC=default leaving it alone."""

import gc

import pytest

from topologies.host.heap import YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def collector_restored():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_freezes_the_heap_and_raises_only_the_young_threshold(collector_restored, monkeypatch):
    monkeypatch.delenv("INFERTIDE_GC", raising=False)
    gc.unfreeze()
    _, older, oldest = gc.get_threshold()
    survivor = [{"held": i} for i in range(100)]  # alive now: frozen with the rest

    assert settle_heap() is True

    assert gc.get_freeze_count() > len(survivor)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, older, oldest)
    assert not any(o is survivor[0] for o in gc.get_objects())  # tracked still, but no pass walks it


def test_default_leaves_the_collector_as_python_set_it(collector_restored, monkeypatch):
    monkeypatch.setenv("INFERTIDE_GC", "default")
    gc.unfreeze()
    before = gc.get_threshold()

    assert settle_heap() is False

    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
