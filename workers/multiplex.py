"""Many fine-tuned checkpoints of one task in one replica: Serve model multiplexing, with loads and evictions counted.

Contract (``models.<name>.multiplex`` in the topology):

- A call made through ``handle.options(multiplexed_model_id=ID)`` is answered by checkpoint ``ID``
  (``multiplex.checkpoints[ID]``); a call without one by the deployment's own ``model``. Serve routes
  a call to a replica that already holds ``ID`` when there is one.
- **A model batch never mixes checkpoints.** Serve (2.60) splits every ``@serve.batch`` batch by
  multiplexed model id and ``serve.get_multiplexed_model_id()`` inside the batch function names the
  batch's one checkpoint (``ray/serve/batching.py``, ``_split_batch_by_model_id``); the batch
  function loads that checkpoint and runs the whole batch on it.
- At most ``max_models_per_replica`` checkpoints are loaded in a replica; loading one more evicts the
  least recently used (Serve's LRU in ``@serve.multiplexed``). Each load and eviction is counted per
  checkpoint: ``infertide_checkpoint_loads_total`` / ``infertide_checkpoint_evictions_total``
  (tags ``model``, ``checkpoint``) and in the deployment's ``stats()``.
- An unknown checkpoint id, or one whose weights fail to load, answers every item of its calls with
  an error reply (``UnknownCheckpoint`` / ``CheckpointError``, one line with the key and the fix),
  not a failed call: a retry would fail the same way.
- A changed checkpoint source or weight setting (``user_config``) reloads that checkpoint at its next
  use; changed options apply in place. ``max_models_per_replica`` is fixed per replica (a change
  restarts the replicas: it is a constructor argument, see ``workers.app``).

Ray's own multiplex metrics (``serve_multiplexed_models_load_counter`` and friends) count the same
events per replica without the checkpoint id.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from ray import serve

from schemas.topology import ModelConfig
from workers.base import BatchedModel, options_key
from workers.registry import model_class

__all__ = ["CheckpointSlots", "UnknownCheckpoint"]

log = logging.getLogger(__name__)


class UnknownCheckpoint(LookupError):
    """A call named a checkpoint id the deployment's ``multiplex.checkpoints`` does not list."""


class _Loaded:
    """One checkpoint in a slot. Serve's multiplexer calls ``__del__`` when it evicts it (LRU); a
    batch still running on the model keeps its own reference, so eviction only counts."""

    def __init__(self, slots: CheckpointSlots, checkpoint: str, model: BatchedModel, cfg: ModelConfig) -> None:
        self.slots = slots
        self.checkpoint = checkpoint
        self.model = model
        self.key = options_key(cfg)
        self._gone = False

    def __del__(self) -> None:
        # Serve calls it on eviction, and Python again when the object is collected: count once.
        if not self._gone:
            self._gone = True
            self.slots._evicted(self.checkpoint)


class CheckpointSlots:
    """The checkpoints one replica may host for one deployment, loaded on demand into ``slots`` places.

    Args:
        deployment: the deployment name (the model's key under ``models:``), in metrics and errors.
        slots: ``max_num_models_per_replica`` for ``@serve.multiplexed``.
        build: ``(cfg, name) -> BatchedModel``, the loader (default: the task's model class); tests pass a fake.
    """

    def __init__(self, deployment: str, slots: int,
                 build: Callable[[ModelConfig, str], BatchedModel] | None = None) -> None:
        self.deployment = deployment
        self.slots = slots
        self.cfg: ModelConfig | None = None
        self._build = build or (lambda cfg, name: model_class(cfg.task)(cfg, name=name))
        self.loads: Counter[str] = Counter()
        self.evictions: Counter[str] = Counter()
        self.items: Counter[str] = Counter()
        self.loaded: set[str] = set()
        self._metrics = _make_metrics()

        async def load_checkpoint(checkpoint: str) -> _Loaded:
            return await self._load(checkpoint)

        # A plain function, not a bound method: Serve keeps its LRU cache as an attribute of the
        # decorated function's object (a bound method takes no attributes).
        self._multiplexed = serve.multiplexed(max_num_models_per_replica=slots)(load_checkpoint)

    def configure(self, cfg: ModelConfig) -> None:
        """The deployment's current config (its ``multiplex.checkpoints`` and the shared settings)."""
        if cfg.multiplex is not None and cfg.multiplex.max_models_per_replica != self.slots:
            log.warning("%s: max_models_per_replica %d -> %d takes effect when the replicas restart",
                        self.deployment, self.slots, cfg.multiplex.max_models_per_replica)
        self.cfg = cfg

    def config_of(self, checkpoint: str) -> ModelConfig:
        """The model config that answers as ``checkpoint``.

        Raises:
            UnknownCheckpoint: it is not under ``models.<deployment>.multiplex.checkpoints``.
        """
        assert self.cfg is not None, "configure() first"
        try:
            return self.cfg.checkpoint_config(checkpoint)
        except KeyError as err:
            raise UnknownCheckpoint(
                f"model {self.deployment!r}: {err.args[0]}; fix: add it under "
                f"`models.{self.deployment}.multiplex.checkpoints` or call with a listed id") from None

    async def get(self, checkpoint: str) -> BatchedModel:
        """The loaded model of ``checkpoint`` (loading it, and evicting the least recently used, if needed)."""
        cfg = self.config_of(checkpoint)
        loaded: _Loaded = await self._multiplexed(checkpoint)
        if loaded.key != options_key(cfg):  # its source or weight settings changed since it was loaded
            loaded.model = await self._build_async(cfg, checkpoint)
            loaded.key = options_key(cfg)
            self._count_load(checkpoint)
        elif loaded.model.cfg.options != cfg.options:
            loaded.model.set_options(cfg.options)
        return loaded.model

    def stats(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "loaded": sorted(self.loaded),
            "loads": dict(self.loads),
            "evictions": dict(self.evictions),
            "items": dict(self.items),
        }

    # -- internals -----------------------------------------------------------------------------
    async def _load(self, checkpoint: str) -> _Loaded:
        cfg = self.config_of(checkpoint)
        model = await self._build_async(cfg, checkpoint)
        self._count_load(checkpoint)
        self.loaded.add(checkpoint)
        return _Loaded(self, checkpoint, model, cfg)

    async def _build_async(self, cfg: ModelConfig, checkpoint: str) -> BatchedModel:
        # In a thread: loading weights takes 0.1-0.5 s for a tiny model, seconds for a real one, and the
        # replica keeps serving the checkpoints it holds meanwhile.
        name = f"{self.deployment}.multiplex.checkpoints.{checkpoint}"
        log.info("loading checkpoint %s of %s: %s", checkpoint, self.deployment, cfg.model)
        return await asyncio.to_thread(self._build, cfg, name)

    def _count_load(self, checkpoint: str) -> None:
        self.loads[checkpoint] += 1
        if self._metrics:
            self._metrics[0].inc(tags={"model": self.deployment, "checkpoint": checkpoint})

    def _evicted(self, checkpoint: str) -> None:
        self.evictions[checkpoint] += 1
        self.loaded.discard(checkpoint)
        log.info("evicted checkpoint %s of %s", checkpoint, self.deployment)
        if self._metrics:
            self._metrics[1].inc(tags={"model": self.deployment, "checkpoint": checkpoint})


def _make_metrics() -> tuple[Any, Any] | None:
    """Serve metrics (exported with the replica's other metrics); ``None`` outside a Ray cluster."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        from ray.serve.metrics import Counter as ServeCounter

        tags = ("model", "checkpoint")
        return (
            ServeCounter("infertide_checkpoint_loads_total",
                         description="Checkpoints loaded into a replica's multiplex slots.", tag_keys=tags),
            ServeCounter("infertide_checkpoint_evictions_total",
                         description="Checkpoints evicted (least recently used) from a replica's multiplex slots.",
                         tag_keys=tags),
        )
    except Exception:  # noqa: BLE001 - metrics are optional outside a cluster
        return None
