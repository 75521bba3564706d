"""Which model class serves which ``task``; imported lazily so echo needs no torch models."""

from __future__ import annotations

import importlib

from workers.base import BatchedModel

__all__ = ["TASKS", "model_class"]

TASKS: dict[str, str] = {
    "sentiment": "workers.sentiment:SentimentModel",
    "detection": "workers.detection:DetectionModel",
    "tagging": "workers.tagging:TaggingModel",
    "echo": "workers.echo:EchoModel",
}


def model_class(task: str) -> type[BatchedModel]:
    """The model class for a task name (see ``schemas.topology.ModelTask``)."""
    try:
        module, name = TASKS[task].split(":")
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}") from None
    return getattr(importlib.import_module(module), name)
