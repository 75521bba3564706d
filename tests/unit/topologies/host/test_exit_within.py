"""A stopped worker's process ends within a bound even when Ray's disconnect never returns."""

from __future__ import annotations

import subprocess
import sys
import time

_CHILD = """
import logging, sys, time
import ray
from topologies.host import app
logging.basicConfig(stream=sys.stderr, level=logging.INFO)
ray.shutdown = lambda: time.sleep({hang_s})  # a disconnect that waits on a busy GCS
app._exit_within({bound_s}, 3)
"""


def _run(hang_s: float, bound_s: float) -> tuple[int, float, str]:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _CHILD.format(hang_s=hang_s, bound_s=bound_s)],
                          capture_output=True, text=True, timeout=120)
    return done.returncode, time.monotonic() - t0, done.stderr


def test_a_disconnect_that_hangs_is_cut_at_the_bound_with_the_threads_logged() -> None:
    code, took, err = _run(hang_s=600, bound_s=1.0)
    assert code == 3, err
    assert "still running after 1s" in err and "--- thread" in err, err  # says where it waited
    assert took < 60, took  # the imports take a second or two; the hang would take 600


def test_a_quick_disconnect_exits_at_once_with_the_code() -> None:
    code, took, err = _run(hang_s=0, bound_s=30.0)
    assert code == 3, err
    assert "still running" not in err and took < 30, (took, err)
