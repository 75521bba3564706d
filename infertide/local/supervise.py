"""Worker restart policy (capped exponential backoff) and the parent-death tie for children we start.

The policy is pure (it is given the time), so :class:`infertide.local.stack.LocalStack` stays a thin loop around it
and the backoff can be tested with a fake clock.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RestartPolicy", "die_with_parent"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when its parent dies (even by SIGKILL); ``None`` off Linux.

    The signal fires when the *thread* that forked the child exits, so start children from the main thread
    (or a thread that lives as long as the process), as ``infertide up`` / ``demo`` do.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Resolved here, in the parent: the child (between fork and exec, maybe with Ray's threads' locks copied
    # held) only makes the one system call.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    sig = int(signal.SIGTERM)

    def _set_pdeathsig() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return _set_pdeathsig


@dataclass
class RestartPolicy:
    """When to restart one worker: the first failure waits ``initial`` s, each further one doubles, up to ``cap``.

    A worker that has stayed healthy ``reset_after`` s since its last restart starts over from ``initial`` (and
    its failure count from 0). A failing ``/healthz`` counts only after ``unhealthy_checks`` consecutive failures,
    so one slow answer does not cost a restart. ``max_restarts`` failures in a row without a healthy stretch: give up.
    """

    initial: float = 1.0
    cap: float = 30.0
    reset_after: float = 60.0
    unhealthy_checks: int = 3
    max_restarts: int = 3
    failures: int = 0
    bad_checks: int = 0
    since: float | None = None  # when the current process started (None: never restarted yet)

    def healthy(self, now: float) -> None:
        """A passing check: clears the run of bad checks; after ``reset_after`` s healthy the backoff resets too."""
        self.bad_checks = 0
        if self.since is not None and now - self.since >= self.reset_after:
            self.failures = 0

    def unhealthy(self) -> bool:
        """A failing ``/healthz``; True when it is the ``unhealthy_checks``-th in a row (time to restart)."""
        self.bad_checks += 1
        return self.bad_checks >= self.unhealthy_checks

    def failed(self, now: float) -> float | None:
        """The worker died or was declared unhealthy at ``now``: seconds to wait before restarting, None to give up."""
        if self.since is not None and now - self.since >= self.reset_after:
            self.failures = 0
        if self.failures >= self.max_restarts:
            return None
        delay = min(self.cap, self.initial * 2 ** self.failures)
        self.failures += 1
        self.bad_checks = 0
        return delay

    def restarted(self, now: float) -> None:
        """The replacement process started at ``now``."""
        self.since = now
