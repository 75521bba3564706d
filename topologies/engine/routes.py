"""A worker's routes: one :class:`topologies.engine.consumer.RouteRunner` per route, started and stopped
together, and what the app host asks of them (readiness, lag, progress)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

from schemas.topology import Topology
from topologies.engine.consumer import RouteRunner
from topologies.engine.pipeline import InferFn, ObserveFn
from topologies.engine.topic_limits import read_topic_limits
from topologies.kafka_settings import confluent_config

__all__ = ["RouteConsumer"]


class RouteConsumer:
    """Every route of a worker process, started and stopped together.

    Args:
        topology: the validated topology.
        infer: the model call (Serve handles in production, a fake in tests).
        summary_topic: the summary topic (``<consumer_group>-summaries``) (None: no analytics summaries).
        observe: dashboard callback per batch.
        on_fatal: called once when producing fails; the worker must then exit without committing.
        bootstrap: overrides ``kafka.bootstrap_servers``.
        worker_id: names this worker's transactional producers (``INFERTIDE_WORKER_ID``, else the host name);
            keep it stable across restarts and distinct between workers.
    """

    def __init__(self, topology: Topology, *, infer: InferFn, summary_topic: str | None,
                 observe: ObserveFn | None = None, on_fatal: Callable[[BaseException], None] | None = None,
                 bootstrap: str | None = None, worker_id: str | None = None) -> None:
        worker_id = worker_id or os.environ.get("INFERTIDE_WORKER_ID") or socket.gethostname()
        self.failed: BaseException | None = None
        self._on_fatal = on_fatal
        self.runners = [RouteRunner(topology, route, infer=infer, summary_topic=summary_topic, observe=observe,
                                    on_fatal=self._fatal, bootstrap=bootstrap, worker_id=worker_id)
                        for route in topology.routes]
        self.started = False

    async def start(self) -> None:
        outputs = {t for r in self.runners for t in r.pipeline.processor.output_topics()}
        limits = await read_topic_limits(outputs, confluent_config(self.runners[0].topology.kafka,
                                                                   self.runners[0].bootstrap))
        for runner in self.runners:
            await runner.start(limits)
        self.started = True

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.runners))

    @property
    def rebalancing(self) -> bool:
        return any(r.rebalancing for r in self.runners)

    def assigned(self) -> int:
        return sum(len(r.ledger.parts) for r in self.runners)

    def lag(self) -> int:
        return sum(r.lag for r in self.runners)

    def stalled_for(self) -> float:
        """Seconds since the longest-waiting route with lag last moved its committed offsets."""
        now = time.monotonic()
        return max((now - r.delivery.last_progress for r in self.runners if r.lag), default=0.0)

    def _fatal(self, err: BaseException) -> None:
        if self.failed is None:
            self.failed = err
            if self._on_fatal is not None:
                self._on_fatal(err)
