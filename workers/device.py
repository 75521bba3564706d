"""Device choice: ``device: auto`` means CUDA when present, else CPU; half precision only on GPU."""

from __future__ import annotations

import torch

from schemas.topology import ModelConfig

__all__ = ["resolve_device", "use_half"]


def resolve_device(cfg: ModelConfig) -> str:
    """``cuda`` or ``cpu`` for a model config.

    Args:
        cfg: the model config; ``device: cuda`` without a GPU fails with a clear message.
    """
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda but no CUDA GPU is visible; use `device: auto` or `device: cpu`")
    return cfg.device


def use_half(cfg: ModelConfig, device: str) -> bool:
    """Half precision when asked for and on a GPU (fp16 on CPU is slow or unsupported)."""
    return bool(cfg.half) and device.startswith("cuda")
