"""The Serve deployment body: one model, ``@serve.batch`` across calls, per-call results in order.

``ModelServer`` is a plain class (``workers.app`` wraps it with ``serve.deployment``),
so it also runs in-process without Ray. Handle contract::

    await handle.infer.remote(items: list) -> list[Reply]  # same length and order (schemas.reply)
    await handle.options(multiplexed_model_id="ft-a").infer.remote(items)  # answered by checkpoint ft-a
    await handle.stats.remote() -> {"batches", "items", "mean", "max", "histogram", "checkpoints", ...}

A model with ``multiplex.checkpoints`` answers a call that names a checkpoint (Serve's multiplexed
model id) with that checkpoint, loaded on demand into a bounded number of slots; a batch never mixes
checkpoints (``workers.multiplex`` has the contract).

A call carrying more items than ``max_batch_size`` is split into chunks before it
is queued (Serve would fail it with "Size of item is greater than max_batch_size").

A call that finds the replica idle (no other call queued or running) runs at once, as one batch:
``@serve.batch`` would hold it for ``batch_wait_timeout_s`` waiting for company that is not coming
(a lone event at idle paid the whole wait). Calls that arrive while one runs are batched as before, so
fill under load is unchanged; route calls already carry micro-batches of many events. Batches running at
once, by either path, stay within ``max_concurrent_batches``.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import time
from typing import Any

from ray import serve

from schemas.reply import Reply
from schemas.topology import ModelConfig
from schemas.tracing import finishing, record_spans, tracer
from workers.base import BatchedModel, error_envelope, options_key
from workers.multiplex import CheckpointSlots, UnknownCheckpoint
from workers.registry import model_class

__all__ = ["BATCH_SIZE_BUCKETS", "ModelServer", "count_items"]

log = logging.getLogger(__name__)

BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


def count_items(requests: list[list[Any]]) -> int:
    """``batch_size_fn`` for ``@serve.batch``: a batch's size is its items, not its calls."""
    return sum(len(r) for r in requests)


class ModelServer:
    """One model behind a dynamic batcher.

    Args:
        model_name: the deployment name (the key under ``models:``), used in metrics.
        user_config: the model config as plain data. Under Serve leave it out: Serve
            passes the deployment's ``user_config`` to ``reconfigure`` right after
            construction, and a later change to it reconfigures the live replica
            instead of restarting it (a changed constructor argument would restart).
        checkpoint_slots: ``multiplex.max_models_per_replica``, passed to the constructor so that a
            change restarts the replicas (Serve's multiplex cache size is fixed once created);
            ``None``: read it from the config.
    """

    def __init__(self, model_name: str, user_config: dict[str, Any] | None = None,
                 checkpoint_slots: int | None = None) -> None:
        self.model_name = model_name
        self.cfg: ModelConfig | None = None
        self.model: BatchedModel | None = None
        self.checkpoints: CheckpointSlots | None = None
        self._checkpoint_slots = checkpoint_slots
        self._batcher: Any = None
        self._batcher_concurrency = 0
        self._slots = asyncio.Semaphore(1)
        self._calls = 0  # calls in this replica now (queued in the batcher or running)
        self.reset_stats()
        self._metric = self._make_metric()
        self._tracer = tracer(f"infertide-{model_name}")
        if user_config is not None:
            self.reconfigure(user_config)

    # -- config ------------------------------------------------------------------------
    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new config: reload weights if model/revision/device/half changed, else
        apply options (thresholds, labels) in place; update batching either way."""
        cfg = ModelConfig.model_validate(user_config)
        old = self.cfg
        if self.model is None or old is None or options_key(cfg) != options_key(old):
            log.info("loading %s: %s (%s)", self.model_name, cfg.model or cfg.task, cfg.task)
            self.model = model_class(cfg.task)(cfg, name=self.model_name)
        elif cfg.options != old.options:
            self.model.set_options(cfg.options)
        if cfg.multiplex is not None and self.checkpoints is None:
            self.checkpoints = CheckpointSlots(
                self.model_name, self._checkpoint_slots or cfg.multiplex.max_models_per_replica)
        if self.checkpoints is not None:
            self.checkpoints.configure(cfg)
        b = cfg.batching
        if self._batcher is None or b.max_concurrent_batches != self._batcher_concurrency:
            # Batches running at once, whichever path they came by (the batcher's, or a call run at once on an
            # idle replica): max_concurrent_batches bounds both.
            self._slots = asyncio.Semaphore(b.max_concurrent_batches)
            self._batcher = serve.batch(
                max_batch_size=b.max_batch_size,
                batch_wait_timeout_s=b.batch_wait_timeout_s,
                max_concurrent_batches=b.max_concurrent_batches,
                batch_size_fn=count_items,
            )(self._run_batches)
            self._batcher_concurrency = b.max_concurrent_batches
        else:
            self._batcher.set_max_batch_size(b.max_batch_size)
            self._batcher.set_batch_wait_timeout_s(b.batch_wait_timeout_s)
        self.cfg = cfg

    # -- calls -------------------------------------------------------------------------
    async def infer(self, items: list[Any], trace: list[str] | None = None) -> list[Reply]:
        """Results for ``items`` in order (see the module docstring for the shapes).

        ``trace``: ``traceparent``s of the caller's spans for the traced items; with tracing configured
        in the replica, a ``serve <model>`` span is recorded under each.
        """
        if trace and self._tracer is not None:
            return await self._traced(items, trace)
        return await self._infer(items)

    async def _traced(self, items: list[Any], trace: list[str]) -> list[Reply]:
        start = time.time_ns()
        with finishing(lambda error: record_spans(self._tracer, f"serve {self.model_name}", trace, start, error,
                                                  {"infertide.model": self.model_name, "infertide.items": len(items)})):
            return await self._infer(items)

    async def _infer(self, items: list[Any]) -> list[Reply]:
        if not isinstance(items, list):
            raise TypeError(f"infer takes a list of items, got {type(items).__name__}")
        if not items:
            return []
        if self.cfg is None:
            raise RuntimeError("ModelServer has no config yet; call reconfigure(user_config) first")
        n = self.cfg.batching.max_batch_size
        idle = self._calls == 0
        self._calls += 1
        try:
            if len(items) <= n:
                if idle:  # nothing to batch with: do not wait for batch_wait_timeout_s
                    self.idle_runs += 1
                    return (await self._run_batches([items]))[0]
                return await self._batcher(items)
            chunks = await asyncio.gather(*(self._batcher(items[i:i + n]) for i in range(0, len(items), n)))
            return [r for chunk in chunks for r in chunk]
        finally:
            self._calls -= 1

    async def __call__(self, items: list[Any]) -> list[Reply]:
        return await self.infer(items)

    async def _run_batches(self, requests: list[list[Any]]) -> list[list[Reply]]:
        flat = [x for r in requests for x in r]
        self._record(len(flat))
        # Serve splits batches by multiplexed model id: this whole batch names one checkpoint, or none.
        checkpoint = serve.get_multiplexed_model_id()
        model = self.model
        if checkpoint:
            try:
                if self.checkpoints is None:
                    raise UnknownCheckpoint(
                        f"model {self.model_name!r} hosts no checkpoints, but a call named {checkpoint!r}; fix: add "
                        f"`models.{self.model_name}.multiplex.checkpoints.{checkpoint}: <path>` or call without one")
                model = await self.checkpoints.get(checkpoint)
                self.checkpoints.items[checkpoint] += len(flat)
            except Exception as exc:  # noqa: BLE001 - unknown or unloadable: every item's error, not a retry
                return [[error_envelope(exc) for _ in r] for r in requests]
        assert model is not None
        # In a thread, so the replica keeps queueing the next batch while this one runs.
        async with self._slots:
            results = await asyncio.to_thread(model.run_batch, flat)
        out, i = [], 0
        for r in requests:
            out.append(results[i:i + len(r)])
            i += len(r)
        return out

    # -- stats -------------------------------------------------------------------------
    @staticmethod
    def _make_metric() -> Any:
        try:
            import ray

            if not ray.is_initialized():
                return None
            from ray.serve.metrics import Histogram

            return Histogram(
                "infertide_serve_batch_size",
                description="Items per model batch run by @serve.batch.",
                boundaries=BATCH_SIZE_BUCKETS,
                tag_keys=("model",),
            )
        except Exception:  # noqa: BLE001 - metrics are optional outside a cluster
            return None

    def _record(self, size: int) -> None:
        self._batches += 1
        self._items += size
        self._max = max(self._max, size)
        self._hist[bisect.bisect_left(BATCH_SIZE_BUCKETS, size)] += 1
        if self._metric is not None:
            self._metric.observe(size, tags={"model": self.model_name})

    def reset_stats(self) -> None:
        """Forget the batch sizes seen so far (benchmarks call it between runs)."""
        self._batches = self._items = self._max = 0
        self.idle_runs = 0  # calls run at once because the replica was idle
        self._hist = [0] * (len(BATCH_SIZE_BUCKETS) + 1)

    def stats(self) -> dict[str, Any]:
        """Batch-size statistics and the loaded model's identity."""
        labels = [f"<={b}" for b in BATCH_SIZE_BUCKETS] + [f">{BATCH_SIZE_BUCKETS[-1]}"]
        return {
            "deployment": self.model_name,
            "pid": os.getpid(),
            "model": self.model.identity.as_dict() if self.model else None,
            "batches": self._batches,
            "count": self._batches,
            "items": self._items,
            "mean": self._items / self._batches if self._batches else 0.0,
            "max": self._max,
            "idle_runs": self.idle_runs,
            "histogram": {k: v for k, v in zip(labels, self._hist) if v},
            "max_batch_size": self.cfg.batching.max_batch_size if self.cfg else None,
            "options": dict(self.cfg.options) if self.cfg else {},
            "checkpoints": self.checkpoints.stats() if self.checkpoints else None,
        }
