"""The LitServe-style base every model family implements: load, decode, predict, encode.

A model class knows nothing about Ray. ``BatchedModel.run_batch(items)`` is the
one entry point both the Serve deployment and the in-process benchmark call: it
decodes each item on its own (a bad item becomes that item's error and the rest
of the batch still runs), predicts once on the decoded batch, and wraps each
output in the reply of the handle contract (``schemas.reply.Reply``)::

    {"ok": True, "result": {...}, "model": {"name": ..., "version": ...}, "inference_ms": 1.2}
    {"ok": False, "error_class": "ImageTooLarge", "error": "..."}
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from schemas.reply import ModelRef, Reply
from schemas.topology import ModelConfig
from workers.checkpoints import load_error

__all__ = [
    "BatchedModel",
    "InputError",
    "ModelIdentity",
    "error_envelope",
]


class InputError(ValueError):
    """One item cannot be used (bad bytes, too large, wrong type); only that item fails."""


@dataclass(frozen=True)
class ModelIdentity:
    """What every result names: the model (id or path) and its version (revision or hash)."""

    name: str
    version: str

    def as_dict(self) -> ModelRef:
        return {"name": self.name, "version": self.version}


def error_envelope(exc: BaseException) -> Reply:
    """The per-item failure shape of the handle contract."""
    return {"ok": False, "error_class": type(exc).__name__, "error": str(exc) or repr(exc)}


class BatchedModel:
    """Base class: subclasses set ``task`` and implement the hooks (``load`` and ``predict`` at least).

    Args:
        cfg: the model's entry from the topology (``options`` holds task knobs).
        load: call ``load(cfg)`` now (tests may construct first and load later).
        name: the model's key under ``models:``, named in a load error.

    Raises:
        CheckpointError: the weights did not load; one line with the model, source, why and the fix.
    """

    task: ClassVar[str] = ""
    #: what ``decode`` expects; the deployment checks nothing, this is documentation.
    input_kind: ClassVar[str] = "text"

    def __init__(self, cfg: ModelConfig, *, load: bool = True, name: str | None = None) -> None:
        self.cfg = cfg
        self.identity = ModelIdentity(cfg.model or self.task, "unloaded")
        if load:
            try:
                self.load(cfg)
            except Exception as err:
                raise load_error(cfg, err, name) from err
            if cfg.warmup:
                self.warmup()

    # -- hooks -------------------------------------------------------------------------
    def load(self, cfg: ModelConfig) -> None:
        """Load weights and set ``self.identity``. Called again on reload."""
        raise NotImplementedError

    def decode(self, item: Any) -> Any:
        """Turn one wire item into a model input, or raise (that item's error)."""
        return item

    def predict(self, inputs: list[Any]) -> list[Any]:
        """Run the model once on a batch of decoded inputs; one output per input."""
        raise NotImplementedError

    def encode(self, output: Any) -> dict[str, Any]:
        """Turn one model output into the result payload (plain JSON types)."""
        return output

    def warmup_items(self) -> list[Any]:
        """Wire items used to warm the model up at load."""
        return ["warm up"]

    def apply_options(self, options: dict[str, Any]) -> None:
        """Apply the task's ``options`` (thresholds, labels, limits) to the loaded weights; ``load`` calls it
        too. Default: nothing to apply."""

    def set_options(self, options: dict[str, Any]) -> None:
        """Apply changed ``options`` without reloading weights (``options_key`` says what needs a reload)."""
        self.cfg = self.cfg.model_copy(update={"options": dict(options)})
        self.apply_options(options)

    # -- driver ------------------------------------------------------------------------
    def warmup(self) -> None:
        """One tiny batch so the first real request does not pay for lazy init."""
        self.run_batch(self.warmup_items())

    def run_batch(self, items: list[Any]) -> list[Reply]:
        """Decode, predict and encode a batch; per-item errors stay per item, in order."""
        out: list[Reply | None] = [None] * len(items)
        good_idx: list[int] = []
        inputs: list[Any] = []
        for i, item in enumerate(items):
            try:
                inputs.append(self.decode(item))
                good_idx.append(i)
            except Exception as exc:  # noqa: BLE001 - any decode failure is that item's
                out[i] = error_envelope(exc)
        if inputs:
            model = self.identity.as_dict()
            for i, o, ms in self._predict_isolating(good_idx, inputs):
                if isinstance(o, BaseException):
                    out[i] = error_envelope(o)
                    continue
                try:
                    out[i] = {"ok": True, "result": self.encode(o), "model": model, "inference_ms": ms}
                except Exception as exc:  # noqa: BLE001
                    out[i] = error_envelope(exc)
        return out  # type: ignore[return-value]


    def _predict_isolating(self, idx: list[int], inputs: list[Any]) -> list[tuple[int, Any, float]]:
        """``(index, output or exception, ms per item)`` for each input: a failed forward is split in halves
        and each half run again, so an input that breaks the model fails alone and the rest get results.

        Costs nothing while forwards succeed; with k failing inputs in n, about ``2k log2(n)`` more forwards.
        """
        t0 = time.perf_counter()
        try:
            outputs = self.predict(inputs)
            if len(outputs) != len(inputs):
                raise RuntimeError(f"predict returned {len(outputs)} outputs for {len(inputs)} inputs")
        except Exception as exc:  # noqa: BLE001 - which input broke it is found below
            if len(inputs) == 1:
                return [(idx[0], exc, 0.0)]
            half = len(inputs) // 2
            return (self._predict_isolating(idx[:half], inputs[:half])
                    + self._predict_isolating(idx[half:], inputs[half:]))
        ms = round((time.perf_counter() - t0) * 1000.0 / len(inputs), 3)
        return [(i, o, ms) for i, o in zip(idx, outputs)]


def options_key(cfg: ModelConfig) -> str:
    """A stable key of what needs a weight reload when it changes."""
    return json.dumps([cfg.task, cfg.model, cfg.revision, cfg.device, cfg.half], sort_keys=True)
