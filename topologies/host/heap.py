"""The worker's heap after start-up, kept out of the cyclic garbage collector's way.

A worker imports torch, Ray, transformers and Faust: about 180,000 container objects that live as long
as the process. Python's collector walked all of them in each full (oldest-generation) pass, and the
route's in-flight batches (thousands of dicts, lists and records each) set off such a pass every second
or two: 23 passes of ~105 ms in a 10 s echo drain of 300,000 events, the event loop and Ray's reply
threads waiting on the GIL through each. Once the worker has started, :func:`settle_heap` moves what
exists into the permanent generation (``gc.freeze``, which every later pass skips) and raises the
youngest generation's threshold, so fewer passes promote batches that reference counting frees anyway.
docs/performance.md ("The cyclic collector") has the measurements.

``infertide worker --python-gc default`` (or ``INFERTIDE_PYTHON_GC=default``) leaves Python's collector as
it is: to compare, or for code in the worker that relies on cycles being collected promptly.
"""

from __future__ import annotations

import gc
import logging
import time

__all__ = ["YOUNG_THRESHOLD", "settle_heap"]

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 20_000  # allocations between young collections (Python's default: 700)


def settle_heap(young_threshold: int = YOUNG_THRESHOLD) -> None:
    """Collect once, freeze what survives, raise the young threshold (the older ones keep Python's)."""
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)
    log.info("heap settled: %d objects frozen out of the collector's passes in %.0f ms; young threshold %d",
             gc.get_freeze_count(), (time.perf_counter() - t0) * 1000, young_threshold)
