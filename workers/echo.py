"""Echo: a model-free task that answers at once, so benchmarks see the system's own overhead.

Text items (``str``) get ``{"label": "echo", "score": 1.0}``; image items (dicts)
get ``{"tags": [], "boxes": [], "image_size": [0, 0]}`` without decoding the image.

Two options turn it into a fault drill (both off by default): ``delay_ms`` sleeps that long
per forward (a slow model), and ``fail_on`` makes a forward raise when any text in the batch
contains that string (a model that breaks on some inputs, batch and all).
"""

from __future__ import annotations

import time
from typing import Any

from schemas.topology import ModelConfig
from workers.base import BatchedModel, InputError, ModelIdentity

__all__ = ["EchoModel"]


class EchoModel(BatchedModel):
    """Trivial results, no weights; version ``0``."""

    task = "echo"

    def load(self, cfg: ModelConfig) -> None:
        self.identity = ModelIdentity(cfg.model or "echo", "0")
        self.cfg = cfg
        self.apply_options(cfg.options)

    def apply_options(self, options: dict[str, Any]) -> None:
        self.delay_s = float(options.get("delay_ms", 0)) / 1000
        self.fail_on = options.get("fail_on") or None

    def decode(self, item: Any) -> Any:
        if not isinstance(item, (str, dict)):
            raise InputError(f"an echo item must be a str or an image dict, got {type(item).__name__}")
        return item

    def predict(self, inputs: list[Any]) -> list[Any]:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on and any(isinstance(x, str) and self.fail_on in x for x in inputs):
            raise RuntimeError(f"echo: an input contains {self.fail_on!r} (options.fail_on)")
        return inputs

    def encode(self, output: Any) -> dict[str, Any]:
        if isinstance(output, str):
            return {"label": "echo", "score": 1.0}
        return {"tags": [], "boxes": [], "image_size": [0, 0]}
