"""What one bench run does (:class:`BenchOptions`), the progress callback type, and the percentile rule."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BenchOptions", "Reporter", "SWEEP_FRACTIONS", "percentile"]

# (phase, done, total): total None = indeterminate; done None = start a phase.
Reporter = Callable[[str, int | None, int | None], None]

# Offered rates of a sweep, as fractions of the measured saturation throughput.
SWEEP_FRACTIONS = (0.10, 0.25, 0.50, 0.75, 0.90, 1.00)


@dataclass
class BenchOptions:
    """What one bench run does.

    Args:
        events: events per route through the pipeline (and through the passthrough baseline).
        rate: produce rate in events/s; 0 = as fast as possible.
        model: built-in topology only: ``sentiment`` (tiny BERT) or ``echo`` (null model).
        batch_size: built-in topology only: micro-batch size = Serve ``max_batch_size`` = bare batch.
            With ``config`` each route keeps its own ``batch_size``.
        naive_events: events through the naive per-event loop (it is slow: keep it bounded).
        bootstrap: an existing Kafka; default: start a local broker in the work folder.
        timeout_s: give up waiting for one run's results after this long (the run still reports what came).
        workdir: logs and configs (default: a temp folder).
        workers: worker processes in one consumer group.
        partitions: partitions per topic (default: max(4, workers)).
        route: bench only this route of the topology (default: every route, one after another).
        config: a topology YAML to benchmark instead of the built-in one-route topology.
        tiny: with ``config``: replace every checkpoint by the tiny random-weight model of its task.
        sweep: run a rate sweep (see :mod:`infertide.bench.sweep`) instead of the baselines.
        sweep_fractions: offered rates of the sweep, as fractions of the saturation throughput.
        step_s: a sweep step offers events for about this long (bounded by ``events``).
        image_size: width and height of the JPEGs image and video events carry.
        microbatch: built-in topology: the route's micro-batch (events per Serve call; default 4 x
            ``batch_size``). The replica splits a call into model batches of ``batch_size``: the model
            runs at the same batch as the bare baseline, with a quarter of the handle calls (each costs
            the worker about 2 ms of CPU: docs/performance.md).
        chart: where the sweep writes its chart (.png or .svg; default: ``<workdir>/sweep.png``).
        guarantee: the routes' ``delivery.processing_guarantee``.
        latency: after saturation, also measure latency at half the drain rate and of a lone event
            (one every 0.5 s), as the guarantees' comparison reports them.
        shadow: built-in echo topology only: the live drain without a shadow, with a shadow of the same model
            and with a slow shadow, side by side (:mod:`infertide.bench.shadow`) instead of the baselines.
        shadow_delay_ms: the slow shadow's model (echo's ``delay_ms`` option) sleeps this long per model batch.
        shadow_rounds: rounds of the three runs (each round in another order); the no-shadow runs' spread is
            the noise the ratios are read against.
        shadow_queue: each shadow's ``queue_size`` (default: 4 x the route's micro-batch).
        shadow_settle_s: after a live drain, wait at most this long for the shadow's queue to empty.
    """

    events: int = 20_000
    rate: float = 0.0
    guarantee: str = "at-least-once"
    latency: bool = False
    model: str = "sentiment"
    batch_size: int = 256
    microbatch: int | None = None
    naive_events: int = 2_000
    bootstrap: str | None = None
    timeout_s: float = 300.0
    workdir: Path | None = None
    max_in_flight: int = 4
    batch_within_s: float = 0.05
    warmup_events: int = 64
    workers: int = 1
    partitions: int | None = None
    route: str | None = None
    config: Path | None = None
    tiny: bool = False
    sweep: bool = False
    sweep_fractions: tuple[float, ...] = field(default=SWEEP_FRACTIONS)
    step_s: float = 10.0
    image_size: tuple[int, int] = (64, 48)
    chart: Path | None = None
    shadow: bool = False
    shadow_delay_ms: float = 1000.0
    shadow_rounds: int = 2
    shadow_queue: int | None = None
    shadow_settle_s: float = 30.0

    @property
    def route_batch(self) -> int:
        return self.microbatch or 4 * self.batch_size

    @property
    def shadow_queue_size(self) -> int:
        return self.shadow_queue or 4 * self.route_batch

    @property
    def topic_partitions(self) -> int:
        return self.partitions or max(4, self.workers)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))  # rank ceil(q% of n), 1-based
    return float(s[k])
