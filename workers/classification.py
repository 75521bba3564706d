"""Image classification: any Hugging Face image classifier (ViT, ResNet, ConvNeXt, ...) by hub id or path.

Loads with ``AutoImageProcessor`` + ``AutoModelForImageClassification``, so any
checkpoint with an image-classification head works, an ImageNet one or your own
fine-tune; class names come from the checkpoint's ``id2label``. Options:
``top_k`` (5), ``threshold`` (0.0), plus the image limits of ``ImageLimits``.
Scores are softmax probabilities over the classes. One forward pass per batch.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

from schemas.topology import ModelConfig
from workers.base import ModelIdentity
from workers.checkpoints import hf_version
from workers.device import resolve_device, use_half
from workers.images import ImageLimits, ImageModel

__all__ = ["ClassificationModel"]


class ClassificationModel(ImageModel):
    """``{"labels": [{"label": "tabby", "class_id": 281, "score": 0.83}, ...], "top_k": 5}``, best first."""

    task = "classification"

    def load(self, cfg: ModelConfig) -> None:
        self.device = resolve_device(cfg)
        kw: dict[str, Any] = {"revision": cfg.revision} if cfg.revision else {}
        self.processor = AutoImageProcessor.from_pretrained(cfg.model, **kw)
        model = AutoModelForImageClassification.from_pretrained(cfg.model, **kw).eval().to(self.device)
        self.dtype = torch.float16 if use_half(cfg, self.device) else torch.float32
        if self.dtype == torch.float16:
            model.half()
        self.model = model
        self.id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
        self.identity = ModelIdentity(cfg.model, hf_version(model, cfg.model, cfg.revision))
        self.cfg = cfg
        self.apply_options(cfg.options)

    def apply_options(self, options: dict[str, Any]) -> None:
        self.top_k = max(1, int(options.get("top_k", 5)))
        self.threshold = float(options.get("threshold", 0.0))
        self.limits = ImageLimits.from_options(options)

    @torch.inference_mode()
    def predict(self, inputs: list[Image.Image]) -> list[list[tuple[int, float]]]:
        px = self.processor(images=inputs, return_tensors="pt")["pixel_values"]
        logits = self.model(pixel_values=px.to(self.device, self.dtype)).logits.float()
        top = torch.softmax(logits, dim=-1).topk(min(self.top_k, logits.shape[-1]), dim=-1)
        return [
            [(j, s) for s, j in zip(srow.tolist(), jrow.tolist()) if s >= self.threshold]
            for srow, jrow in zip(top.values.cpu(), top.indices.cpu())
        ]

    def encode(self, output: list[tuple[int, float]]) -> dict[str, Any]:
        labels = [{"label": self.id2label.get(j, str(j)), "class_id": j, "score": min(1.0, max(0.0, s))}
                  for j, s in output]
        return {"labels": labels, "top_k": self.top_k}
