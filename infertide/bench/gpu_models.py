"""GPU benchmark of the model workers at real model sizes (random weights): bare model vs deployment class.

Self-contained for a GPU machine with this repo and its venv (no hub needed):
DistilBERT-base config (sentiment), YOLO11n yaml at imgsz 640 (detection), CLIP
ViT-B/32 config (tagging); ``half: true`` (fp16 on CUDA). For each model and
batch size it measures items/s of the bare model class (``run_batch``) and of the
deployment class (``workers.server.ModelServer.infer``: ``@serve.batch``, decode,
thread hop) with 4 concurrent callers, in-process. Finishes well under 8 minutes.

    python bench/gpu_workers.py [--seconds 3] [--json out.json]
    python bench/gpu_workers.py --quick        # CPU smoke run: 1 s cells, batches 1 and 8
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infertide.tiny_models import build_tiny_clip, build_tiny_sentiment, offline_env  # noqa: E402


def build_models(root: Path) -> dict[str, dict]:
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


def items(task: str, n: int) -> list:
    if task == "sentiment":
        return ["the film was surprisingly good and the acting was great " * 3] * n
    from PIL import Image
    import numpy as np

    arr = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=85)
    return [{"data": base64.b64encode(buf.getvalue()).decode(), "uri": None}] * n


def timed(fn, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        n += fn()
        if time.perf_counter() - t0 >= seconds:
            return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: 1 s cells, batches 1 and 8")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--models", nargs="*", help="subset: sentiment detection tagging")
    args = ap.parse_args()
    root = Path(os.environ.get("INFERTIDE_BENCH_DIR") or tempfile.mkdtemp(prefix="infertide-gpu-bench-"))
    os.environ.update(offline_env(root / "env"))
    seconds, batches = (1.0, (1, 8)) if args.quick else (args.seconds, (1, 8, 32))

    import torch
    from ray import serve

    from schemas.topology import ModelConfig
    from workers.registry import model_class
    from workers.server import ModelServer

    # ModelServer runs @serve.batch outside a replica; Ray 2.60 reads the replica context for a warning.
    ctx = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=10_000))
    serve.get_replica_context = lambda: ctx

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    rows = []
    t_start = time.time()
    loop = asyncio.new_event_loop()  # one loop: @serve.batch's queue is bound to the loop that made it
    for name, uc in build_models(root).items():
        if args.models and name not in args.models:
            continue
        cfg = ModelConfig.model_validate(uc)
        bare = model_class(cfg.task)(cfg)
        server = ModelServer(name, uc)
        for bs in batches:
            its = items(cfg.task, bs)
            bare_rate = timed(lambda: len(bare.run_batch(its)), seconds)

            async def served_loop() -> float:
                async def one() -> int:
                    return len(await server.infer(its))

                async def four() -> int:
                    return sum(await asyncio.gather(*(one() for _ in range(4))))

                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    n += await four()
                return n / (time.perf_counter() - t0)

            server.reset_stats()
            served_rate = loop.run_until_complete(served_loop())
            row = {"model": name, "batch": bs, "bare_items_s": round(bare_rate, 1),
                   "deployment_items_s": round(served_rate, 1), "ratio": round(served_rate / bare_rate, 3),
                   "mean_batch": round(server.stats()["mean"], 1), "half": bare.cfg.half}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del bare, server
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(f"\ndevice: {device}; total {time.time() - t_start:.0f} s")
    print(f"{'model':<10} {'batch':>5} {'bare/s':>10} {'deploy/s':>10} {'ratio':>6} {'mean batch':>10}")
    for r in rows:
        print(f"{r['model']:<10} {r['batch']:>5} {r['bare_items_s']:>10.1f} {r['deployment_items_s']:>10.1f} "
              f"{r['ratio']:>6.2f} {r['mean_batch']:>10.1f}")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
