"""The GPU run: the end-to-end bench and the per-model bench with real-size models (random weights), one command.

    python -m infertide.bench.gpu --out docs/gpu-bench.md      # make bench-gpu; minutes on one GPU
    python -m infertide.bench.gpu --quick --out /tmp/quick.md  # CPU smoke run: tiny models, few events

Real sizes (see :mod:`infertide.bench.gpu_models`): DistilBERT-base (text
route, batch 256), YOLO11n at imgsz 640 + CLIP ViT-B/32 (image route, batch
32), YOLO11n (video route, batch 32), fp16 on CUDA, 640x480 JPEGs. Each route
runs through the whole system (local Kafka, Ray Serve, one worker) against its
bare models, the naive loop and the passthrough, then each model alone (bare
model class vs deployment class). ``--quick`` swaps in the tiny models, 64x48
images and a few events so the same code path runs on a laptop CPU in a minute.
No hub or network is needed: weights are random, tokenizers are built locally.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

__all__ = ["main", "topology_data"]

_REAL = {"text": 256, "image": 32, "video": 32}
_QUICK = {"text": 64, "image": 16, "video": 16}


def topology_data(models: dict[str, dict[str, Any]], batches: dict[str, int], gpu: bool) -> dict[str, Any]:
    """Three routes over ``models`` (sentiment, detection, tagging), Serve batches sized to the routes' batches."""
    share = round(0.9 / len(models), 2)
    models = {n: {**m, "batching": {"max_batch_size": batches["text"] if m["task"] == "sentiment"
                                    else max(batches["image"], batches["video"]), "batch_wait_timeout_s": 0.005},
                  "num_cpus": 0.3, "num_gpus": share if gpu else 0, "max_ongoing_requests": 64}
              for n, m in models.items() if m["task"] in ("sentiment", "detection", "tagging")}
    route = {"batch_within_s": 0.05, "max_in_flight": 2}
    return {
        "name": "infertide-gpu-bench",
        "models": models,
        "routes": [
            {"name": "text", "input": "text", "kind": "text", "models": ["sentiment"],
             "batch_size": batches["text"], **route},
            {"name": "image", "input": "image", "kind": "image", "models": ["detection", "tagging"],
             "batch_size": batches["image"], **route},
            {"name": "video", "input": "video", "kind": "video", "models": ["detection"],
             "batch_size": batches["video"], **route},
        ],
        "analytics": {"enabled": False},
        "recommendations": {"enabled": False},
    }


def _device() -> tuple[str, bool]:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})", True
    return f"CPU only, {os.cpu_count()} cores (torch {torch.__version__})", False


def _models_md(rows: list[dict[str, Any]]) -> str:
    out = ["| model | batch | bare items/s | deployment class items/s | deployment / bare | mean Serve batch |",
           "| --- | --- | --- | --- | --- | --- |"]
    out += [f"| {r['model']} | {r['batch']} | {r['bare_items_s']:,.1f} | {r['deployment_items_s']:,.1f} "
            f"| {r['ratio']:.2f} | {r['mean_batch']:.1f} |" for r in rows]
    return "\n".join(out) + "\n"


def _report(args: argparse.Namespace, device: str, result: dict[str, Any], rows: list[dict[str, Any]],
            wall_s: float) -> str:
    from infertide.bench.report import markdown

    c = result["conditions"]
    size = "tiny random-weight models, 64x48 JPEGs (--quick)" if args.quick else (
        "real-size random-weight models (DistilBERT-base, YOLO11n imgsz 640, CLIP ViT-B/32), fp16 where CUDA, "
        "640x480 JPEGs")
    notes = "".join(f"- {n}\n" for n in c["notes"])
    if args.quick:
        notes += ("- This is the CPU smoke run (`--quick`): tiny models, not the GPU figures. On a GPU machine "
                  "`make bench-gpu` replaces this file with the real-size run.\n")
    return (f"# infertide GPU bench\n\nCommand: `python -m infertide.bench.gpu {' '.join(sys.argv[1:])}`  \n"
            f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; wall {wall_s:.0f} s  \n"
            f"Device: {device}; host {platform.machine()}, {os.cpu_count()} CPUs  \n"
            f"Models: {size}  \nBroker: {c['broker']}, {c['partitions']} partitions; {c['workers']} worker; "
            f"{c['events']} events per route, produced as fast as possible; naive loop {c['naive_events']} events "
            f"(or 30 s)\n\n{notes}\n## End to end, per route\n\nEvents/s from first produce to last result; "
            "bare models = the route's models in-process, one after another, at the route's batch; "
            "fill = mean batch / configured max (see docs/performance.md, Benchmark harness).\n\n"
            f"{markdown(result)}\n## Per model: bare model class vs deployment class (4 callers, in-process)\n\n"
            + (_models_md(rows) if rows else "(skipped)\n"))


def main(argv: list[str] | None = None) -> int:
    """Build the models, run both benches, print the tables, write the Markdown report."""
    from rich.console import Console

    from infertide.bench.core import run_bench
    from infertide.bench.gpu_models import build_models, measure_models
    from infertide.bench.options import BenchOptions
    from infertide.bench.report import render_tables
    from infertide.demo.tiny_models import offline_env, tiny_topology_dict

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: tiny models, few events, short cells")
    ap.add_argument("--events", type=int, help="events per route (default 5000; --quick 100)")
    ap.add_argument("--naive-events", type=int, help="naive loop events (default 1000; --quick 30)")
    ap.add_argument("--seconds", type=float, help="per-model cell length (default 3; --quick 0.5)")
    ap.add_argument("--skip-models", action="store_true", help="only the end-to-end bench")
    ap.add_argument("--out", type=Path, help="write the Markdown report here (e.g. docs/gpu-bench.md)")
    ap.add_argument("--json", type=Path, help="write everything as JSON here")
    ap.add_argument("--workdir", type=Path, help="models, logs, configs (default: a temp folder)")
    ap.add_argument("--bootstrap", help="an existing Kafka (default: start a local one)")
    args = ap.parse_args(argv)
    started = time.time()
    root = Path(args.workdir or os.environ.get("INFERTIDE_BENCH_DIR") or tempfile.mkdtemp(prefix="infertide-gpu-"))
    root.mkdir(parents=True, exist_ok=True)
    # This is the process's entry point, and the model libraries read their offline switches and caches
    # only from os.environ (the bench's LocalStack passes the same env on to Ray's replicas).
    os.environ.update(offline_env(root / "env"))
    device, gpu = _device()
    console = Console()
    console.print(f"device: {device}")
    if args.quick:
        models = tiny_topology_dict(root / "models", echo=False)["models"]
        batches, image_size, cell, per_model_batches = _QUICK, (64, 48), args.seconds or 0.5, (1, 8)
    else:
        models = build_models(root / "models")
        batches, image_size, cell, per_model_batches = _REAL, (640, 480), args.seconds or 3.0, (1, 8, 32)
    data = topology_data(models, batches, gpu)
    config = root / "gpu-bench-topology.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    opts = BenchOptions(events=args.events or (100 if args.quick else 5000), config=config,
                        naive_events=args.naive_events or (30 if args.quick else 1000), image_size=image_size,
                        workdir=root / "run", bootstrap=args.bootstrap, timeout_s=120 if args.quick else 600,
                        warmup_events=16 if args.quick else 64)
    result = run_bench(opts)
    for table in render_tables(result):
        console.print(table)
    rows = [] if args.skip_models else measure_models(data["models"], cell, per_model_batches,
                                                      say=lambda row: console.print(row))
    report = _report(args, device, result, rows, time.time() - started)
    console.print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    if args.json:
        args.json.write_bytes(orjson.dumps({"device": device, "bench": result, "models": rows},
                                           option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
