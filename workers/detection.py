"""Object detection: any ultralytics detector, by weight name (``yolo11n.pt``), path, or ``.yaml`` (random init).

Options: ``conf`` (0.25), ``iou`` (0.45), ``imgsz`` (640), ``max_det`` (300), plus
the image limits of ``workers.images.ImageLimits``. One batched ``predict`` per batch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from schemas.topology import ModelConfig
from workers.base import ModelIdentity
from workers.checkpoints import file_version
from workers.device import resolve_device, use_half
from workers.images import ImageLimits, ImageModel

__all__ = ["DetectionModel"]


class DetectionModel(ImageModel):
    """Boxes per image: ``{"boxes": [{"xyxy", "label", "class_id", "score"}], "image_size": [w, h]}``."""

    task = "detection"

    def load(self, cfg: ModelConfig) -> None:
        from ultralytics import YOLO  # imported here: it reads YOLO_* env vars at import

        self.device = resolve_device(cfg)
        if cfg.model.endswith((".yaml", ".yml")):
            torch.manual_seed(0)  # random init, reproducible across replicas
            self.model = YOLO(cfg.model, task="detect")
            digest = hashlib.sha256(cfg.model.encode()).hexdigest()[:8]
            version = f"random-init-seed0-{digest}"
        else:
            self.model = YOLO(cfg.model, task="detect")
            ckpt = getattr(self.model, "ckpt_path", None) or cfg.model
            version = cfg.revision or (file_version(ckpt) if Path(ckpt).is_file() else "unknown")
        self.half = use_half(cfg, self.device)
        self.identity = ModelIdentity(cfg.model, version)
        self.cfg = cfg
        self.apply_options(cfg.options)

    def apply_options(self, options: dict[str, Any]) -> None:
        self.conf = float(options.get("conf", 0.25))
        self.iou = float(options.get("iou", 0.45))
        self.imgsz = int(options.get("imgsz", 640))
        self.max_det = int(options.get("max_det", 300))
        self.limits = ImageLimits.from_options(options)

    def predict(self, inputs: list[Image.Image]) -> list[dict[str, Any]]:
        results = self.model.predict(
            inputs, conf=self.conf, iou=self.iou, imgsz=self.imgsz, max_det=self.max_det,
            device=self.device, verbose=False, batch=len(inputs),
            **({"half": True} if self.half else {}),  # passing half=False warns in 8.4
        )
        outs = []
        for img, r in zip(inputs, results):
            names = r.names
            b = r.boxes
            xyxy = b.xyxy.float().cpu().tolist()
            conf = b.conf.float().cpu().tolist()
            cls = [int(c) for c in b.cls.cpu().tolist()]
            outs.append({
                "boxes": [
                    {"xyxy": [round(v, 2) for v in box], "label": str(names.get(c, c)) if isinstance(names, dict) else str(c),
                     "class_id": c, "score": min(1.0, max(0.0, s))}
                    for box, s, c in zip(xyxy, conf, cls)
                ],
                "image_size": [img.width, img.height],
            })
        return outs
