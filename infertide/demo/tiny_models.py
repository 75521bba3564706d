"""Tiny offline checkpoints (random weights, real file formats) for tests, the demo and benchmarks.

No model hub is reachable on build machines, so these build small models from
configs and ``save_pretrained`` them; the workers load them through the same
``from_pretrained(path)`` / ``YOLO(path)`` code a real checkpoint takes. Builds
are cached: a second call with the same directory returns at once.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from schemas.topology import Topology, parse_topology

__all__ = [
    "build_tiny_classifier",
    "build_tiny_clip",
    "build_tiny_sentiment",
    "build_tiny_sentiment_family",
    "build_tiny_shapes",
    "offline_env",
    "tiny_topology",
    "tiny_topology_dict",
    "with_tiny_models",
    "write_tiny_topology",
]

_CORPUS = [
    "i love this movie it was great and wonderful",
    "this is the worst film i have ever seen terrible",
    "what a fantastic day happy sunny bright",
    "the service was bad and the food awful",
    "excellent product fast delivery would buy again",
    "not good not bad just okay average",
    "a photo of a cat dog person car vehicle food building landscape text sports animal",
    "the quick brown fox jumps over the lazy dog",
]

_TAG_LABELS = ["person", "animal", "cat", "dog", "vehicle", "food", "building", "landscape"]
_CLASS_LABELS = ["tabby cat", "golden retriever", "sports car", "pizza", "lighthouse", "alp"]


def offline_env(root: str | Path) -> dict[str, str]:
    """Environment variables that keep HF, ultralytics, matplotlib and Ray offline and inside ``root``.

    Also puts ``Arial.ttf`` / ``Arial.Unicode.ttf`` (copies of matplotlib's DejaVuSans)
    where ultralytics looks for its font, and turns ultralytics settings sync off.

    Args:
        root: a folder we own (tests: a temp dir); created if missing.
    """
    root = Path(root)
    dirs = {k: root / k for k in ("hf", "yolo", "mpl", "ray")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    font_dir = dirs["yolo"] / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            if src.is_file() and not (font_dir / name).exists():
                shutil.copyfile(src, font_dir / name)
    except ImportError:  # ultralytics then only misses its plotting font
        pass
    token = dirs["ray"] / "auth_token"  # Ray 2.60 token auth fails on a missing token file
    if not token.exists():
        import secrets

        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
    settings = font_dir / "settings.json"
    if not settings.exists():
        settings.write_text('{"sync": false}')
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(dirs["hf"]),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "0",
        "YOLO_CONFIG_DIR": str(dirs["yolo"]),
        "MPLCONFIGDIR": str(dirs["mpl"]),
        "RAY_AUTH_TOKEN_PATH": str(dirs["ray"] / "auth_token"),
    }


def _cached(build: Callable[..., None]) -> Callable[..., Path]:
    """A builder that saves into ``directory`` once: a finished build there with the same options is
    reused as is (the options are written in the marker file; other options build again)."""

    @functools.wraps(build)
    def cached(directory: str | Path, **options: Any) -> Path:
        path = Path(directory)
        done = path / ".infertide-tiny-ok"
        stamp = f"ok {json.dumps(options, sort_keys=True)}\n" if options else "ok\n"
        if not done.exists() or done.read_text() != stamp:
            path.mkdir(parents=True, exist_ok=True)
            build(path, **options)
            done.write_text(stamp)
        return path

    return cached


@_cached
def build_tiny_sentiment(path: Path, *, seed: int = 0, init_range: float = 0.02) -> None:
    """A tiny BERT sequence classifier (NEGATIVE/POSITIVE) + WordPiece tokenizer, saved to ``directory``.

    Args:
        directory: where to save; reused if it already holds a finished build with the same options.
        seed: the weights' random seed; checkpoints of different seeds answer differently (a stand-in
            for fine-tuned checkpoints of one task).
        init_range: the weights' standard deviation (BERT's ``initializer_range``). At the default
            0.02 every text scores about 0.5; at 0.5 scores spread between 0.5 and 1 and labels
            depend on the text (measured: 0, 32 and 64 of 64 texts POSITIVE for seeds 1-3).
    """
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(_CORPUS * 4, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    # tokenizer_object=, not vocab_file= (ignored in transformers 5: every token becomes [UNK]).
    hf_tok = BertTokenizerFast(tokenizer_object=tok, model_max_length=128, unk_token="[UNK]",
                               pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=2, initializer_range=init_range,
        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    BertForSequenceClassification(cfg).save_pretrained(path)
    hf_tok.save_pretrained(path)


def build_tiny_sentiment_family(directory: str | Path, n: int, *, first_seed: int = 1,
                                init_range: float = 0.5) -> dict[str, Path]:
    """``n`` tiny sentiment checkpoints that answer differently: ``{"ft-0": path, ...}``, seeds
    ``first_seed .. first_seed + n - 1``, each in ``directory/ft-<i>`` (built once, then reused).

    A stand-in for a team's fine-tuned checkpoints of one task: same tokenizer and architecture,
    different weights, so a result can be matched to the checkpoint that produced it. Compare
    outputs within one build (one folder): the weights of a seed are the same in every build, but
    the WordPiece trainer's vocabulary order is not, so two builds of one seed may answer differently.
    """
    directory = Path(directory)
    return {f"ft-{i}": build_tiny_sentiment(directory / f"ft-{i}", seed=first_seed + i, init_range=init_range)
            for i in range(n)}


@_cached
def build_tiny_clip(path: Path) -> None:
    """A tiny CLIPModel (32x32 images) + CLIPProcessor with a small BPE tokenizer, saved to ``directory``.

    Args:
        directory: where to save; reused if it already holds a finished build.
    """
    import torch
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor,
                              CLIPTextConfig, CLIPTokenizer, CLIPVisionConfig)

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for t in letters + [c + "</w>" for c in letters]:
        vocab[t] = len(vocab)
    merges: list[tuple[str, str]] = []
    words = sorted({w for line in _CORPUS for w in line.split()} | set(_TAG_LABELS))
    for w in words:  # merge each word left to right into one token
        cur = w[0]
        for i, ch in enumerate(w[1:], start=1):
            nxt = ch + ("</w>" if i == len(w) - 1 else "")
            pair = (cur, nxt)
            if pair not in merges:
                merges.append(pair)
            cur = cur + nxt
            vocab.setdefault(cur, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                                   bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(path)
    processor.save_pretrained(path)


@_cached
def build_tiny_classifier(path: Path) -> None:
    """A tiny ViT image classifier (32x32 images, six classes) + its image processor, saved to ``directory``.

    Args:
        directory: where to save; reused if it already holds a finished build.
    """
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, id2label=dict(enumerate(_CLASS_LABELS)),
                    label2id={v: i for i, v in enumerate(_CLASS_LABELS)})
    ViTForImageClassification(cfg).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)


@_cached
def build_tiny_shapes(path: Path) -> None:
    """The synthetic shape detector (:func:`infertide.demo.shapes.build_shape_detector`) as
    ``<directory>/shapes.torchscript``, for video routes' tracking tests (docs/video.md)."""
    from infertide.demo.shapes import build_shape_detector

    build_shape_detector(path / "shapes.torchscript")


def tiny_topology_dict(models_dir: str | Path, *, max_batch_size: int = 32,
                       batch_wait_timeout_s: float = 0.02, num_cpus: float = 0.1,
                       echo: bool = True, shapes: bool = False, finetuned: bool = False) -> dict[str, Any]:
    """Topology data whose models are the tiny checkpoints (built under ``models_dir`` if missing).

    Args:
        models_dir: cache folder for the tiny checkpoints.
        max_batch_size: per-deployment ``batching.max_batch_size`` (counts items).
        batch_wait_timeout_s: per-deployment ``batching.batch_wait_timeout_s``.
        num_cpus: per-replica CPUs; small so four deployments fit on 2 cores.
        echo: add an ``echo`` deployment.
        shapes: add a ``shapes`` deployment: the deterministic shape detector of the demo clip
            (``infertide.demo.shapes``), which video tracking tests run through (the e2e stack's app).
        finetuned: add ``sentiment_ft``, a sentiment deployment that also hosts two tiny fine-tuned
            checkpoints that answer differently (``ft-0``, ``ft-1``; Serve model multiplexing), for rollouts.
    """
    models_dir = Path(models_dir)
    sent = build_tiny_sentiment(models_dir / "tiny-sentiment")
    clip = build_tiny_clip(models_dir / "tiny-clip")
    vit = build_tiny_classifier(models_dir / "tiny-vit")
    batching = {"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s}
    common = {"device": "auto", "batching": batching, "num_cpus": num_cpus,
              "max_ongoing_requests": 64}
    models: dict[str, Any] = {
        "sentiment": {"task": "sentiment", "model": str(sent), "options": {"max_length": 64}, **common},
    }
    if shapes:  # before ``detection``: with_tiny_models takes the last model of each task
        models["shapes"] = {"task": "detection",
                            "model": str(build_tiny_shapes(models_dir / "tiny-shapes") / "shapes.torchscript"),
                            "options": {"imgsz": 320}, **common,
                            "batching": {"max_batch_size": 16, "batch_wait_timeout_s": batch_wait_timeout_s}}
    models |= {
        # A random-init YOLO scores every box near 1e-4 (its class bias prior), so a tiny
        # threshold and max_det keep a few boxes per image: downstream code sees real boxes.
        "detection": {"task": "detection", "model": "yolo11n.yaml",
                      "options": {"conf": 1e-5, "iou": 0.45, "imgsz": 128, "max_det": 3}, **common},
        "tagging": {"task": "tagging", "model": str(clip),
                    "options": {"labels": _TAG_LABELS, "top_k": 3, "threshold": 0.0}, **common},
        "classification": {"task": "classification", "model": str(vit), "options": {"top_k": 3}, **common},
    }
    if echo:
        models["echo"] = {"task": "echo", **common}
    if finetuned:
        family = build_tiny_sentiment_family(models_dir / "tiny-sentiment-ft", 2)
        models["sentiment_ft"] = {"task": "sentiment", "model": str(sent), "options": {"max_length": 64}, **common,
                                  "multiplex": {"max_models_per_replica": 2,
                                                "checkpoints": {k: str(p) for k, p in family.items()}}}
    return {
        "name": "infertide-tiny",
        "models": models,
        "routes": [
            {"name": "text", "input": "text", "kind": "text", "models": ["sentiment"], "batch_size": max_batch_size},
            {"name": "image", "input": "image", "kind": "image", "models": ["detection", "tagging", "classification"],
             "batch_size": min(16, max_batch_size)},
        ],
        "serve_app_name": "infertide",
    }


def tiny_topology(models_dir: str | Path, **kwargs: Any) -> Topology:
    """The validated tiny topology (see ``tiny_topology_dict`` for the arguments)."""
    return parse_topology(tiny_topology_dict(models_dir, **kwargs), "<tiny>")


def with_tiny_models(topology: Topology, models_dir: str | Path) -> Topology:
    """``topology`` with every model swapped for the tiny checkpoint of its task (topics and routes kept).

    What ``infertide up --tiny`` runs: the same pipeline, offline, with random-weight models. A model's
    ``multiplex.checkpoints`` become tiny ones too: for sentiment, checkpoints that answer differently
    (:func:`build_tiny_sentiment_family`, in the order listed), so variants stay distinguishable.
    """
    tiny = tiny_topology_dict(models_dir)["models"]
    by_task = {m["task"]: m for m in tiny.values()}
    data = topology.model_dump(mode="json")
    for cfg in data["models"].values():
        if cfg["task"] in by_task and cfg["task"] != "echo":
            cfg["model"], cfg["options"], cfg["revision"] = by_task[cfg["task"]]["model"], \
                by_task[cfg["task"]]["options"], None
            mux = cfg.get("multiplex")
            if mux:
                ids = list(mux["checkpoints"])
                family = (list(build_tiny_sentiment_family(Path(models_dir) / "family", len(ids)).values())
                          if cfg["task"] == "sentiment" else [cfg["model"]] * len(ids))
                mux["checkpoints"] = {cid: {"model": str(path)} for cid, path in zip(ids, family)}
    return parse_topology(data, "<topology --tiny>")


def write_tiny_topology(models_dir: str | Path, path: str | Path, **kwargs: Any) -> Path:
    """Write the tiny topology as YAML to ``path`` and return it."""
    path = Path(path)
    path.write_text(yaml.safe_dump(tiny_topology_dict(models_dir, **kwargs), sort_keys=False))
    return path


if __name__ == "__main__":  # python -m infertide.demo.tiny_models DIR
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "artifacts/tiny-models")
    os.environ.update(offline_env(target / "env"))  # a script's entry point: the model libraries read only os.environ
    print(build_tiny_sentiment(target / "tiny-sentiment"), build_tiny_clip(target / "tiny-clip"),
          build_tiny_classifier(target / "tiny-vit"))
