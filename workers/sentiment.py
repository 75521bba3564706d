"""Sentiment: any transformers sequence-classification checkpoint, by hub id or local directory.

Texts are tokenised as one batch, truncated at ``options.max_length`` or the
model's maximum length. Texts longer than ``options.max_text_chars`` (filled from
the topology's ``limits.max_text_chars``) are that item's error.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from schemas.topology import ModelConfig
from workers.base import BatchedModel, InputError, ModelIdentity
from workers.checkpoints import hf_version
from workers.device import resolve_device, use_half

__all__ = ["SentimentModel", "TextTooLong"]


class TextTooLong(InputError):
    """A text over ``max_text_chars``; send shorter texts or raise the limit."""


class SentimentModel(BatchedModel):
    """Label + score per text: ``{"label": "POSITIVE", "score": 0.98}``."""

    task = "sentiment"
    input_kind = "text"

    def load(self, cfg: ModelConfig) -> None:
        self.device = resolve_device(cfg)
        kw: dict[str, Any] = {"revision": cfg.revision} if cfg.revision else {}
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model, **kw)
        model = AutoModelForSequenceClassification.from_pretrained(cfg.model, **kw)
        model.eval().to(self.device)
        if use_half(cfg, self.device):
            model.half()
        self.model = model
        self.id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
        self.apply_options(cfg.options)
        self.identity = ModelIdentity(cfg.model, hf_version(model, cfg.model, cfg.revision))
        self.cfg = cfg

    def apply_options(self, options: dict[str, Any]) -> None:
        limits = [
            v for v in (
                options.get("max_length"),
                getattr(self.tokenizer, "model_max_length", None),
                getattr(self.model.config, "max_position_embeddings", None),
            ) if isinstance(v, int) and 0 < v < 1_000_000
        ]
        self.max_length = min(limits) if limits else 512
        self.max_text_chars = int(options.get("max_text_chars", 10_000))

    def decode(self, item: Any) -> str:
        if not isinstance(item, str):
            raise InputError(f"a sentiment item must be a str, got {type(item).__name__}")
        if len(item) > self.max_text_chars:
            raise TextTooLong(f"text is {len(item)} chars, over the limit of {self.max_text_chars}")
        return item

    @torch.inference_mode()
    def predict(self, inputs: list[str]) -> list[tuple[str, float]]:
        enc = self.tokenizer(
            inputs, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        logits = self.model(**enc).logits.float()
        probs = torch.softmax(logits, dim=-1)
        scores, idx = probs.max(dim=-1)
        return [
            (self.id2label.get(int(i), str(int(i))), float(s))
            for i, s in zip(idx.tolist(), scores.tolist())
        ]

    def encode(self, output: tuple[str, float]) -> dict[str, Any]:
        label, score = output
        return {"label": label, "score": min(1.0, max(0.0, score))}
