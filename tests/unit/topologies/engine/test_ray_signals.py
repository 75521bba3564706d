"""ray.init may replace our SIGTERM handler; keeping_signal_handlers puts ours back (main thread only)."""

from __future__ import annotations

import signal
import threading

from topologies.engine.ray_signals import keeping_signal_handlers


def test_handlers_come_back_after_the_body_replaced_them() -> None:
    ours = lambda *_: None  # noqa: E731
    before = signal.signal(signal.SIGTERM, ours)
    try:
        with keeping_signal_handlers():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # what ray.init does, with its own handler
        assert signal.getsignal(signal.SIGTERM) is ours
        with keeping_signal_handlers(signal.SIGTERM, signal.SIGINT):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


def test_handlers_come_back_when_the_body_raises() -> None:
    ours = lambda *_: None  # noqa: E731
    before = signal.signal(signal.SIGTERM, ours)
    try:
        try:
            with keeping_signal_handlers():
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                raise RuntimeError("ray.init failed")
        except RuntimeError:
            pass
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, before)


def test_off_the_main_thread_it_only_runs_the_body() -> None:
    ran = []

    def body() -> None:
        with keeping_signal_handlers():
            ran.append(True)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert ran == [True]
