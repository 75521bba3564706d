"""Benchmarks of infertide: end to end against baselines, rate sweeps, the model workers, and the GPU run.

- :mod:`infertide.bench.core`: ``infertide bench`` (pipeline vs bare model, naive loop, passthrough),
  for the built-in one-model topology or any topology file (``--config``), with N workers.
- :mod:`infertide.bench.sweep`: ``infertide bench --sweep`` (latency against throughput, with a chart).
- :mod:`infertide.bench.workers`: ``make bench-workers`` (Serve handle vs bare model, tiny models).
- :mod:`infertide.bench.gpu`: ``make bench-gpu`` (real-size models, random weights; ``--quick`` on CPU).

The bench only produces events, reads result topics, scrapes each worker's
``/metrics`` and asks Serve deployments for their batch stats, so it measures
whatever route engine the workers run.
"""

from infertide.bench.options import BenchOptions, Reporter, percentile

__all__ = ["BenchOptions", "Reporter", "percentile"]
