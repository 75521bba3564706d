"""Echo: a model-free task that answers at once, so benchmarks see the system's own overhead.

Text items (``str``) get ``{"label": "echo", "score": 1.0}``; image items (dicts)
get ``{"tags": [], "boxes": [], "image_size": [0, 0]}`` without decoding the image.
"""

from __future__ import annotations

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

    def decode(self, item: Any) -> Any:
        if not isinstance(item, (str, dict)):
            raise InputError(f"an echo item must be a str or an image dict, got {type(item).__name__}")
        return item

    def predict(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def encode(self, output: Any) -> dict[str, Any]:
        if isinstance(output, str):
            return {"label": "echo", "score": 1.0}
        return {"tags": [], "boxes": [], "image_size": [0, 0]}
