"""Multimodal tagging: zero-shot tags from any CLIP-family checkpoint against a label vocabulary.

Label text embeddings are computed once at load (and again only when ``labels``
change). Options: ``labels`` (list of str), ``top_k`` (5), ``threshold`` (0.0),
``prompt`` (``"a photo of {}"``), plus the image limits of ``ImageLimits``.
Scores are softmax probabilities over the labels, so they lie in [0, 1].
Text items (``str``) are tagged too, against the same labels (text-text similarity).
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from schemas.topology import ModelConfig
from workers.base import InputError, ModelIdentity
from workers.checkpoints import hf_version
from workers.device import resolve_device, use_half
from workers.images import ImageLimits, ImageModel

__all__ = ["TaggingModel", "DEFAULT_LABELS"]

DEFAULT_LABELS = ["person", "animal", "vehicle", "food", "building", "landscape", "text"]


def _features(out: Any) -> torch.Tensor:
    # transformers 5 returns a ModelOutput from get_*_features; 4.x a tensor.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class TaggingModel(ImageModel):
    """``{"tags": [{"label": "cat", "score": 0.81}, ...]}``, best first."""

    task = "tagging"

    def load(self, cfg: ModelConfig) -> None:
        self.device = resolve_device(cfg)
        kw: dict[str, Any] = {"revision": cfg.revision} if cfg.revision else {}
        self.processor = CLIPProcessor.from_pretrained(cfg.model, **kw)
        model = CLIPModel.from_pretrained(cfg.model, **kw).eval().to(self.device)
        self.dtype = torch.float16 if use_half(cfg, self.device) else torch.float32
        if self.dtype == torch.float16:
            model.half()
        self.model = model
        self.identity = ModelIdentity(cfg.model, hf_version(model, cfg.model, cfg.revision))
        self.cfg = cfg
        self._labels_key: tuple | None = None
        self.apply_options(cfg.options)

    @torch.inference_mode()
    def _embed_text(self, texts: list[str]) -> torch.Tensor:
        enc = self.processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        feats = _features(self.model.get_text_features(**enc)).float()
        return feats / feats.norm(dim=-1, keepdim=True)

    def apply_options(self, options: dict[str, Any]) -> None:
        labels = [str(x) for x in options.get("labels") or DEFAULT_LABELS]
        prompt = str(options.get("prompt", "a photo of {}"))
        self.top_k = max(1, int(options.get("top_k", 5)))
        self.threshold = float(options.get("threshold", 0.0))
        self.limits = ImageLimits.from_options(options)
        key = (tuple(labels), prompt)
        if key != self._labels_key:  # label embeddings: once per vocabulary
            self.labels = labels
            self.label_emb = self._embed_text([prompt.format(x) for x in labels])
            self._labels_key = key
        self.scale = float(self.model.logit_scale.exp().item())

    def decode(self, item: Any) -> Image.Image | str:
        if isinstance(item, str):
            if not item:
                raise InputError("empty text cannot be tagged")
            return item
        return super().decode(item)

    @torch.inference_mode()
    def predict(self, inputs: list[Image.Image | str]) -> list[list[tuple[str, float]]]:
        img_idx = [i for i, x in enumerate(inputs) if not isinstance(x, str)]
        txt_idx = [i for i, x in enumerate(inputs) if isinstance(x, str)]
        emb = torch.empty((len(inputs), self.label_emb.shape[1]), device=self.device)
        if img_idx:
            px = self.processor(images=[inputs[i] for i in img_idx], return_tensors="pt")["pixel_values"]
            feats = _features(self.model.get_image_features(pixel_values=px.to(self.device, self.dtype))).float()
            emb[img_idx] = feats / feats.norm(dim=-1, keepdim=True)
        if txt_idx:
            emb[txt_idx] = self._embed_text([inputs[i] for i in txt_idx])
        probs = torch.softmax(self.scale * emb @ self.label_emb.T, dim=-1).cpu()
        k = min(self.top_k, len(self.labels))
        top = probs.topk(k, dim=-1)
        return [
            [(self.labels[j], float(s)) for s, j in zip(srow.tolist(), jrow.tolist()) if s >= self.threshold]
            for srow, jrow in zip(top.values, top.indices)
        ]

    def encode(self, output: list[tuple[str, float]]) -> dict[str, Any]:
        return {"tags": [{"label": lab, "score": min(1.0, max(0.0, s))} for lab, s in output]}
