"""Real-size models with random weights (no hub needed), and their per-model bench: bare model vs deployment class.

:func:`build_models` saves DistilBERT-base (sentiment) and CLIP ViT-B/32
(tagging) configs with random weights like real checkpoints, and names YOLO11n
by its yaml (detection, imgsz 640); ``half: true`` (fp16 on CUDA).
:func:`measure_models` gives, per model and batch size, items/s of the bare
model class (``run_batch``) and of the deployment class
(``workers.server.ModelServer.infer``: ``@serve.batch``, decode, thread hop)
with 4 concurrent callers, in-process. :mod:`infertide.bench.gpu` runs both.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from infertide.demo.tiny_models import build_tiny_clip, build_tiny_sentiment

__all__ = ["build_models", "items", "measure_models"]


def build_models(root: Path) -> dict[str, dict[str, Any]]:
    """Real-size random-weight checkpoints saved like real ones; tokenizers borrowed from the tiny builds."""
    import torch
    from transformers import (AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor,
                              DistilBertConfig, DistilBertForSequenceClassification)

    torch.manual_seed(0)
    sent = root / "distilbert-random"
    if not (sent / "config.json").exists():
        tok = AutoTokenizer.from_pretrained(build_tiny_sentiment(root / "tiny-sentiment"))
        tok.model_max_length = 512
        DistilBertForSequenceClassification(DistilBertConfig(
            num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
        )).save_pretrained(sent)
        tok.save_pretrained(sent)
    clip = root / "clip-vit-b32-random"
    if not (clip / "config.json").exists():
        tiny = CLIPProcessor.from_pretrained(build_tiny_clip(root / "tiny-clip"))
        CLIPModel(CLIPConfig()).save_pretrained(clip)  # defaults are ViT-B/32 sizes
        CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tiny.tokenizer).save_pretrained(clip)
    common = {"device": "auto", "half": True, "batching": {"max_batch_size": 64, "batch_wait_timeout_s": 0.005}}
    return {
        "sentiment": {"task": "sentiment", "model": str(sent), "options": {"max_length": 64}, **common},
        "detection": {"task": "detection", "model": "yolo11n.yaml", "options": {"imgsz": 640, "conf": 0.25}, **common},
        "tagging": {"task": "tagging", "model": str(clip), "options": {"top_k": 3}, **common},
    }


def items(task: str, n: int) -> list[Any]:
    """``n`` model inputs at real sizes: a 3x longer review, or a 640x480 noise JPEG."""
    if task == "sentiment":
        return ["the film was surprisingly good and the acting was great " * 3] * n
    from PIL import Image
    import numpy as np

    arr = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=85)
    return [{"data": base64.b64encode(buf.getvalue()).decode(), "uri": None}] * n


def _timed(fn: Any, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        n += fn()
        if time.perf_counter() - t0 >= seconds:
            return n / (time.perf_counter() - t0)


def measure_models(models: dict[str, dict[str, Any]], seconds: float, batches: tuple[int, ...],
                   say: Any = print) -> list[dict[str, Any]]:
    """One row per (model, batch): bare ``run_batch`` items/s and deployment-class items/s (4 callers)."""
    import torch
    from ray import serve

    from schemas.topology import ModelConfig
    from workers.registry import model_class
    from workers.server import ModelServer

    # ModelServer runs @serve.batch outside a replica; Ray 2.60 reads the replica context for a warning.
    ctx = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=10_000))
    serve.get_replica_context = lambda: ctx
    rows = []
    loop = asyncio.new_event_loop()  # one loop: @serve.batch's queue is bound to the loop that made it
    try:
        for name, uc in models.items():
            cfg = ModelConfig.model_validate(uc)
            bare = model_class(cfg.task)(cfg)
            server = ModelServer(name, uc)
            for bs in batches:
                its = items(cfg.task, bs)
                bare_rate = _timed(lambda: len(bare.run_batch(its)), seconds)

                async def served_loop() -> float:
                    async def one() -> int:
                        return len(await server.infer(its))

                    n, t0 = 0, time.perf_counter()
                    while time.perf_counter() - t0 < seconds:
                        n += sum(await asyncio.gather(*(one() for _ in range(4))))
                    return n / (time.perf_counter() - t0)

                server.reset_stats()
                served_rate = loop.run_until_complete(served_loop())
                row = {"model": name, "batch": bs, "bare_items_s": round(bare_rate, 1),
                       "deployment_items_s": round(served_rate, 1), "ratio": round(served_rate / bare_rate, 3),
                       "mean_batch": round(server.stats()["mean"], 1), "half": bare.cfg.half}
                rows.append(row)
                say(row)
            del bare, server
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    finally:  # stop @serve.batch's queue tasks before the loop goes, or they complain at exit
        tasks = asyncio.all_tasks(loop)
        for t in tasks:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()
    return rows
