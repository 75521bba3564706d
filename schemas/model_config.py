"""The ``models:`` entries of a topology: one Serve deployment per pretrained model (checkpoint,
device, batching, replicas, task options), optionally hosting many fine-tuned checkpoints of its
task (``multiplex:``, Serve model multiplexing)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from schemas.config_base import PositiveFloat, PositiveInt, Strict
from schemas.image_uris import parse_prefix
from schemas.tasks import TASKS

__all__ = [
    "CHECKPOINT_ID_PATTERN",
    "AutoscalingConfig",
    "BatchingConfig",
    "CheckpointSource",
    "Device",
    "ModelConfig",
    "ModelTask",
    "MultiplexConfig",
]

# Reads the registry (schemas/tasks.py): a new task is valid here once it is there.
ModelTask = Literal[tuple(TASKS)]  # type: ignore[valid-type]
Device = Literal["auto", "cpu", "cuda"]


class BatchingConfig(Strict):
    """Serve's ``@serve.batch`` settings. ``max_batch_size`` counts items, not calls."""

    max_batch_size: PositiveInt = 64
    batch_wait_timeout_s: Annotated[float, Field(ge=0)] = 0.01
    max_concurrent_batches: PositiveInt = 1


class AutoscalingConfig(Strict):
    """Serve autoscaling on ongoing requests per replica."""

    min_replicas: Annotated[int, Field(ge=0)] = 1
    max_replicas: PositiveInt = 1
    target_ongoing_requests: PositiveFloat = 4.0

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        return self


#: A checkpoint id travels as Serve's multiplexed model id (a request header over HTTP): plain characters only.
CHECKPOINT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class CheckpointSource(Strict):
    """One fine-tuned checkpoint a multiplexed deployment may load: a hub id or local path (as
    ``models.<name>.model``) and an optional hub revision. In YAML a bare string is the ``model``."""

    model: Annotated[str, Field(min_length=1)]
    revision: str | None = None


class MultiplexConfig(Strict):
    """Many checkpoints of one task in each replica (Serve ``@serve.multiplexed``): a call names one
    by id (``handle.options(multiplexed_model_id=id)``), a replica keeps at most
    ``max_models_per_replica`` loaded and evicts the least recently used."""

    max_models_per_replica: PositiveInt = 3
    checkpoints: dict[str, CheckpointSource] = Field(min_length=1)

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _ids_and_shorthand(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for cid, src in value.items():
            if not isinstance(cid, str) or not re.match(CHECKPOINT_ID_PATTERN, cid):
                raise ValueError(
                    f"checkpoint id {cid!r} is not usable as a Serve multiplexed model id; use 1-128 letters, "
                    "digits, '.', '_' or '-', starting with a letter or digit (e.g. `tenant-a: /models/tenant-a`)")
            out[cid] = {"model": src} if isinstance(src, str) else src
        return out


class ModelConfig(Strict):
    """One Serve deployment hosting one pretrained model.

    ``model`` is a Hugging Face hub id, an ultralytics weight name (``yolo11n.pt``,
    or ``yolo11n.yaml`` for random init), or a local directory/file: a fine-tuned
    checkpoint drops in by path.
    """

    task: ModelTask
    model: str = ""
    revision: str | None = None
    device: Device = "auto"
    half: bool = True
    warmup: bool = True
    batching: BatchingConfig = BatchingConfig()
    replicas: PositiveInt = 1
    autoscaling: AutoscalingConfig | None = None
    num_cpus: Annotated[float, Field(ge=0)] = 0.5
    num_gpus: Annotated[float, Field(ge=0)] = 0.0
    max_ongoing_requests: PositiveInt = 16
    max_queued_requests: int = -1
    # Task-specific knobs: detection {conf, iou, imgsz}, tagging {labels, top_k,
    # threshold}, sentiment {max_length}. Passed to the model class as is.
    options: dict[str, Any] = Field(default_factory=dict)
    # Fine-tuned checkpoints of this task the deployment may also answer with, chosen per call.
    multiplex: MultiplexConfig | None = None

    def checkpoint_config(self, checkpoint: str) -> ModelConfig:
        """This model's config answering with one of its ``multiplex.checkpoints`` (same task, device,
        batching and options; that checkpoint's weights).

        Raises:
            KeyError: ``checkpoint`` is not under ``multiplex.checkpoints`` (the message names the known ids).
        """
        known = self.multiplex.checkpoints if self.multiplex else {}
        if checkpoint not in known:
            raise KeyError(f"no checkpoint {checkpoint!r} under `multiplex.checkpoints` (known: {sorted(known)})")
        src = known[checkpoint]
        return self.model_copy(update={"model": src.model, "revision": src.revision, "multiplex": None})

    @model_validator(mode="after")
    def _model_named(self) -> ModelConfig:
        if TASKS[self.task].needs_model and not self.model:
            raise ValueError(
                f"task {self.task!r} needs `model:` (a hub id, weight name or local path)"
            )
        return self

    @field_validator("options")
    @classmethod
    def _legacy_uri_prefixes(cls, options: dict[str, Any]) -> dict[str, Any]:
        # A model may still narrow or widen http(s) for itself (the older per-model key).
        for prefix in options.get("allowed_uri_prefixes") or ():
            try:
                parse_prefix(str(prefix))
            except ValueError as err:
                raise ValueError(f"allowed_uri_prefixes: {err}") from None
        return options
