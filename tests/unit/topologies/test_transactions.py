"""DaemonCalls: a blocking call past its bound is reported wedged, from the event loop and from a thread."""

from __future__ import annotations

import threading

import pytest

from topologies.transactions import DaemonCalls, Wedged


async def test_a_call_that_does_not_return_is_reported_wedged_and_the_thread_does_not_block_exit() -> None:
    calls = DaemonCalls("test-calls")
    release = threading.Event()
    with pytest.raises(Wedged, match="wait did not return"):
        await calls.call(release.wait, limit_s=0.2)
    release.set()
    assert await calls.call(lambda: 7) == 7, "the thread serves the next call once the stuck one returns"
    calls.shutdown()
    assert all(t.daemon for t in threading.enumerate() if t.name == "test-calls")


def test_the_same_bound_from_a_thread_of_its_own() -> None:
    calls = DaemonCalls("test-sync-calls")
    release = threading.Event()
    with pytest.raises(Wedged, match="wait did not return in 0s"):
        calls.call_sync(release.wait, limit_s=0.2)
    release.set()
    assert calls.call_sync(lambda a, b: a + b, 2, 3, limit_s=5) == 5
    with pytest.raises(ZeroDivisionError):  # the call's own error reaches the caller
        calls.call_sync(lambda: 1 / 0, limit_s=5)
    calls.shutdown()
