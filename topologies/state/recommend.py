"""Recommendation scoring: per-user label affinity from engagements, cosine match against
the recent item pool, top-k with reasons. Pure functions; :mod:`topologies.state.recfold` holds the state."""

from __future__ import annotations

import math
from typing import Any

from schemas.tasks import TASKS

__all__ = ["engagement_weight", "item_labels", "rank_items", "update_affinity"]


def engagement_weight(task: str, result: dict[str, Any]) -> float:
    """How much one engagement moves a user towards an item's labels (the task's rule, see
    ``schemas.tasks``): a text counts by its sentiment (+score positive, -score negative),
    an image a user posted or viewed counts +1."""
    return TASKS[task].engagement_weight(result)


def item_labels(task: str, result: dict[str, Any]) -> dict[str, float]:
    """An item's label weights from one model's result (``tag:<label>``, ``class:<name>``; see ``schemas.tasks``)."""
    return TASKS[task].item_labels(result)


def update_affinity(affinity: dict[str, float], labels: dict[str, float], weight: float,
                    decay: float) -> dict[str, float]:
    """``decay * affinity + weight * labels``, dropping near-zero entries."""
    out = {k: v * decay for k, v in affinity.items()}
    for k, v in labels.items():
        out[k] = out.get(k, 0.0) + weight * v
    return {k: round(v, 6) for k, v in out.items() if abs(v) > 1e-6}


def _norm(v: dict[str, float]) -> float:
    return math.sqrt(sum(x * x for x in v.values()))


def rank_items(affinity: dict[str, float], items: dict[str, dict[str, float]], exclude: set[str],
               top_k: int) -> list[dict[str, Any]]:
    """Top-k items by cosine similarity of their labels with the affinity; only positive scores.

    Each entry: ``{"item_id", "score", "reasons"}``, reasons being the labels that
    contributed most (``"tag:dog +0.41"``).
    """
    na = _norm(affinity)
    if na == 0:
        return []
    ranked = []
    for item_id, labels in items.items():
        if item_id in exclude or not labels:
            continue
        ni = _norm(labels)
        contrib = {k: affinity.get(k, 0.0) * v for k, v in labels.items()}
        dot = sum(contrib.values())
        if ni == 0 or dot <= 0:
            continue
        top = sorted(contrib.items(), key=lambda kv: kv[1], reverse=True)[:3]
        reasons = [f"{k} {c / (na * ni):+.2f}" for k, c in top if c > 0]
        ranked.append({"item_id": item_id, "score": round(dot / (na * ni), 6), "reasons": reasons})
    ranked.sort(key=lambda r: (-r["score"], r["item_id"]))
    return ranked[:top_k]
