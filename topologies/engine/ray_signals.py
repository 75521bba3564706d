"""Keep this process's signal handlers across ``ray.init`` (and the Serve calls after it).

``ray.init`` installs its own SIGTERM handler, which aborts the process: a Faust
worker must stop cleanly on SIGTERM (commit what was acknowledged) and ``infertide
up`` must tear down in order, so every ``ray.init`` of ours runs inside
:func:`keeping_signal_handlers`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["keeping_signal_handlers"]


@contextmanager
def keeping_signal_handlers(*signums: signal.Signals) -> Iterator[None]:
    """Restore the handlers of ``signums`` (default: SIGTERM) on exit, whatever the body installed.

    Only the main thread may set handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signums or (signal.SIGTERM,))}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:  # None: set from C, not restorable from Python
                signal.signal(signum, handler)
